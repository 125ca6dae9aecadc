"""Dataset adapters: read a source (file, folder, hub id, bundled sample) as `RawRow(index, line, data)`.

Each row is then normalised by its format's row in data/formats.py (a canonical record, or `RowError` with a
reason, which the recipe turns into an error naming file and line, or a quarantined row, as it chooses).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from rualign.errors import DataError
from rualign.textio import iter_jsonl, parse_json, read_utf8

SAMPLES_DIR = Path(__file__).parent / "samples"
BUNDLED = {
    "grandmaster": "grandmaster.{split}.jsonl",
    "saiga_scored": "saiga_scored.jsonl",
    "saiga_preferences": "saiga_preferences.jsonl",
    "eval_prompts": "eval_prompts.json",
}
@dataclass(frozen=True)
class RawRow:
    index: int          # 0-based row number in the source
    line: int | None    # 1-based line in a text file, when there is one
    data: Any


def bundled_path(name: str, split: str = "train") -> Path:
    if name not in BUNDLED:
        raise DataError(f"unknown bundled sample '{name}'", expected=f"one of {sorted(BUNDLED)}")
    path = SAMPLES_DIR / BUNDLED[name].format(split=split)
    if not path.exists():
        raise DataError(f"bundled sample '{name}' has no split '{split}'", path=path)
    return path


def read_rows(path: str, split: str, on_error: str, errors: list[tuple[RawRow, str]]) -> Iterator[RawRow]:
    """Yield raw rows from any supported location. Unparseable lines go to `errors` (quarantine) or raise."""
    if path.startswith("bundled:"):
        yield from read_rows(str(bundled_path(path.split(":", 1)[1], split)), split, on_error, errors)
        return
    if path.startswith("hf:"):
        yield from _read_hub(path[3:], split)
        return
    file = Path(path).expanduser()
    if not file.exists():
        raise DataError("data path does not exist", path=file,
                        expected="a .jsonl/.json/.parquet file, a save_to_disk folder, hf:<id> or bundled:<name>")
    if file.is_dir():
        yield from _read_disk(file, split)
    elif file.suffix == ".parquet":
        yield from _read_parquet(file)
    elif file.suffix == ".json":
        yield from _read_json(file)
    else:
        yield from _read_jsonl(file, on_error, errors)


def _read_jsonl(file: Path, on_error: str, errors: list[tuple[RawRow, str]]) -> Iterator[RawRow]:
    text = read_utf8(file)
    if not text.strip():
        raise DataError("file is empty", path=file, expected="one JSON object per line")
    index = 0

    def quarantine(number: int, line: str, exc: json.JSONDecodeError) -> None:
        nonlocal index
        errors.append((RawRow(index, number, line[:200]), f"malformed JSON: {exc.msg}"))
        index += 1

    for number, data in iter_jsonl(file, text, hint="set on_error: quarantine to set such rows aside",
                                   on_malformed=None if on_error == "fail" else quarantine):
        yield RawRow(index, number, data)
        index += 1


def _read_json(file: Path) -> Iterator[RawRow]:
    text = read_utf8(file)
    if not text.strip():
        raise DataError("file is empty", path=file, expected="a JSON list of objects")
    data = parse_json(text, file, expected="a JSON list of objects")
    if isinstance(data, dict) and len(data) == 1 and isinstance(next(iter(data.values())), list):
        data = next(iter(data.values()))  # {"train": [...]}-style wrappers
    if not isinstance(data, list):
        raise DataError(f"top level is a {type(data).__name__}", path=file, expected="a JSON list of objects")
    for index, item in enumerate(data):
        yield RawRow(index, None, item)


def _read_parquet(file: Path) -> Iterator[RawRow]:
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(file)
    except Exception as exc:  # pyarrow raises several types for a broken file
        raise DataError(f"cannot read parquet: {exc}", path=file) from exc
    for index, item in enumerate(table.to_pylist()):
        yield RawRow(index, None, item)


def _read_disk(folder: Path, split: str) -> Iterator[RawRow]:
    from datasets import DatasetDict, load_from_disk

    try:
        dataset = load_from_disk(str(folder))
    except (FileNotFoundError, ValueError) as exc:
        raise DataError(f"not a datasets save_to_disk folder: {exc}", path=folder) from exc
    if isinstance(dataset, DatasetDict):
        if split not in dataset:
            raise DataError(f"no split '{split}'", path=folder, expected=f"one of {list(dataset)}")
        dataset = dataset[split]
    for index, item in enumerate(dataset):
        yield RawRow(index, None, item)


def _read_hub(dataset_id: str, split: str) -> Iterator[RawRow]:
    from datasets import load_dataset

    try:
        dataset = load_dataset(dataset_id, split=split)
    except Exception as exc:  # offline, unknown id, gated...: all user-facing
        raise DataError(f"cannot load hf:{dataset_id} split '{split}': {str(exc).splitlines()[0]}",
                        hint="download it where a hub is reachable (datasets save_to_disk or parquet) "
                             "and point `path` at the local copy") from exc
    for index, item in enumerate(dataset):
        yield RawRow(index, None, item)


def answers_of(record: dict) -> list[str]:
    """The assistant texts a filter looks at (chosen answer for preference pairs)."""
    kind = record["kind"]
    if kind == "chat":
        return [m["content"] for m in record["messages"] if m["role"] == "assistant"]
    if kind == "preference":
        return [record["chosen"][0]["content"]]
    return [m["content"] for m in record["completion"]]


def prompt_of(record: dict) -> list[dict]:
    if record["kind"] == "chat":
        messages = record["messages"]
        last_user = max(i for i, m in enumerate(messages) if m["role"] == "user")
        return messages[: last_user + 1]
    return record["prompt"]


def all_texts(record: dict) -> list[str]:
    if record["kind"] == "chat":
        return [m["content"] for m in record["messages"]]
    texts = [m["content"] for m in record["prompt"]]
    for key in ("chosen", "rejected", "completion"):
        texts += [m["content"] for m in record.get(key, [])]
    return texts
