"""Dataset adapters: read a source (file, folder, hub id, bundled sample) and normalise its rows.

Reading yields `RawRow(index, line, data)`; `normalise(format, data)` turns one row into a canonical record
or raises `RowError` with a reason, which the recipe turns into an error naming file and line, or a
quarantined row, as the recipe chooses.
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
ROLE_ALIASES = {"bot": "assistant", "gpt": "assistant", "model": "assistant", "human": "user",
                "assistant": "assistant", "user": "user", "system": "system"}
# Columns each format cannot do without; a file lacking one fails up front, naming it and the format.
REQUIRED_COLUMNS = {
    "grandmaster": ("conversation",),
    "saiga_scored": ("messages", "opus_score"),
    "saiga_preferences": ("prompt", "chosen", "rejected"),
    "chat": ("messages",),
    "preference": ("prompt", "chosen", "rejected"),
    "kto": ("prompt", "completion", "label"),
}


class RowError(Exception):
    """One row cannot be used; the message is the reason recorded for it."""


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


def check_columns(fmt: str, row: Any, path: str, line: int | None) -> None:
    """The first row must carry the columns its format needs: a misnamed column is a file-level error."""
    if not isinstance(row, dict):
        raise DataError(f"row is a {type(row).__name__}", path=path, line=line, expected="a JSON object")
    missing = [c for c in REQUIRED_COLUMNS[fmt] if c not in row]
    if missing:
        raise DataError(f"missing column(s) {missing} needed by format '{fmt}' (row has {sorted(row)[:12]})",
                        path=path, line=line)


def _messages(value: Any, field: str) -> list[dict]:
    if isinstance(value, str):
        value = [{"role": "user", "content": value}] if field == "prompt" else [
            {"role": "assistant", "content": value}]
    if not isinstance(value, list) or not value:
        raise RowError(f"'{field}' is not a non-empty list of messages")
    out = []
    for turn, message in enumerate(value):
        if not isinstance(message, dict) or "content" not in message or "role" not in message:
            found = (f"has keys {sorted(message)[:8]}" if isinstance(message, dict)
                     else f"is a {type(message).__name__}")
            hint = ("; ShareGPT-style from/value: rename from -> role, value -> content"
                    if isinstance(message, dict) and {"from", "value"} <= set(message) else "")
            raise RowError(f"'{field}'[{turn}] {found}, not a {{role, content}} message{hint}")
        role = ROLE_ALIASES.get(str(message["role"]).lower())
        if role is None:
            raise RowError(f"'{field}'[{turn}] has unknown role '{message['role']}'")
        content = message["content"]
        if not isinstance(content, str):
            raise RowError(f"'{field}'[{turn}] content is a {type(content).__name__}, not text")
        if not content.strip():
            raise RowError(f"'{field}'[{turn}] ({role}) is empty or whitespace")
        out.append({"role": role, "content": content})
    return out


def _conversation(messages: list[dict]) -> list[dict]:
    roles = [m["role"] for m in messages]
    first = next((r for r in roles if r != "system"), None)
    if first == "assistant":
        raise RowError("conversation starts with an assistant turn (the first turn after any system message "
                       "must be the user's)")
    if "assistant" not in roles:
        raise RowError("conversation has no assistant turn")
    if roles[-1] != "assistant":
        raise RowError("conversation ends on a user turn (nothing to learn from its last message)")
    if "user" not in roles:
        raise RowError("conversation has no user turn")
    return messages


def normalise(fmt: str, data: dict) -> dict:
    """One raw row → a canonical record (without id/source/answer_tokens, which the recipe adds)."""
    if fmt in ("grandmaster", "saiga_scored", "chat"):
        column = "conversation" if fmt == "grandmaster" else "messages"
        if column not in data:
            raise RowError(f"missing column '{column}'")
        messages = _conversation(_messages(data[column], column))
        meta = {k: v for k, v in data.items() if k != column}
        if fmt == "saiga_scored":
            score = data.get("opus_score")
            if not isinstance(score, (int, float)) or isinstance(score, bool):
                raise RowError(f"opus_score is {score!r}, not a number")
            if not 1 <= score <= 10:  # NaN fails this too: it would pass every min_score check
                raise RowError(f"opus_score is {score!r}, outside 1-10")
        return {"kind": "chat", "messages": messages, "meta": meta}
    if fmt in ("saiga_preferences", "preference"):
        for column in ("prompt", "chosen", "rejected"):
            if column not in data:
                raise RowError(f"missing column '{column}'")
        prompt = _messages(data["prompt"], "prompt")
        if prompt[-1]["role"] != "user":
            raise RowError("prompt does not end with a user turn")
        chosen, rejected = _messages(data["chosen"], "chosen"), _messages(data["rejected"], "rejected")
        for name, answer in (("chosen", chosen), ("rejected", rejected)):
            if len(answer) != 1 or answer[0]["role"] != "assistant":
                raise RowError(f"'{name}' must be exactly one assistant message")
        if chosen[0]["content"].strip() == rejected[0]["content"].strip():
            raise RowError("chosen and rejected are identical")
        meta = {k: v for k, v in data.items() if k not in ("prompt", "chosen", "rejected")}
        return {"kind": "preference", "prompt": prompt, "chosen": chosen, "rejected": rejected, "meta": meta}
    if fmt == "kto":
        for column in ("prompt", "completion", "label"):
            if column not in data:
                raise RowError(f"missing column '{column}'")
        if not isinstance(data["label"], bool):
            raise RowError(f"label is {data['label']!r}, expected true or false")
        prompt = _messages(data["prompt"], "prompt")
        completion = _messages(data["completion"], "completion")
        meta = {k: v for k, v in data.items() if k not in ("prompt", "completion", "label")}
        return {"kind": "kto", "prompt": prompt, "completion": completion, "label": data["label"], "meta": meta}
    raise RowError(f"unknown format '{fmt}'")


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
