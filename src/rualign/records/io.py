"""The one reader and the one writer of each hand-off file (see rualign.records)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable

from pydantic import ValidationError

from rualign.errors import DataError, RualignError
from rualign.records.models import (AnswerRecord, JudgeCard, Judgment, KnowledgeResult, Record, RefLoss, RunInfo,
                                    Score)
from rualign.textio import iter_jsonl, read_utf8


def _problem(exc: ValidationError, what: str) -> str:
    missing = [".".join(map(str, e["loc"])) for e in exc.errors() if e["type"] == "missing"]
    if missing:
        return f"{what} lacks {', '.join(missing)}"
    first = exc.errors()[0]
    message = first["msg"].removeprefix("Value error, ")
    return f"{what}: '{'.'.join(map(str, first['loc']))}': {message}" if first["loc"] else f"{what}: {message}"


def validated(model: type[Record], data: Any, *, path: str | Path, line: int | None = None, what: str,
              expected: str) -> Any:
    """`model` from parsed JSON, or a DataError naming the file, the line and the field."""
    if not isinstance(data, dict):
        raise DataError(f"{what} is not a JSON object", path=path, line=line, expected=expected)
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise DataError(_problem(exc, what), path=path, line=line, expected=expected) from None


def _read_json(path: Path, expected: str) -> Any:
    from rualign.textio import read_json

    return read_json(path, expected=expected)  # NaN/Infinity and non-UTF-8 are DataErrors naming the file


def _read_record(model: type[Record], path: str | Path, name: str, expected: str) -> Any:
    """One JSON hand-off file as its record, or a DataError naming the file and the field."""
    path = Path(path)
    return validated(model, _read_json(path, f"{name} of docs/formats.md"), path=path, what=name, expected=expected)


def _write_record(path: str | Path, record: Record) -> None:
    from rualign.runs import write_json

    write_json(path, record.dump())


def _check_answer_row(path: Path, number: int, row: Any, require_prompt: bool) -> None:
    if not isinstance(row, dict) or "id" not in row or not isinstance(row.get("answer"), str):
        raise DataError("answer record lacks 'id' or a string 'answer'", path=path, line=number,
                        expected='{"id": str, "prompt": [messages], "answer": str, ...}')
    prompt = row.get("prompt")
    if prompt is None and not require_prompt:
        return
    if not (isinstance(prompt, str) or (isinstance(prompt, list) and prompt and all(isinstance(m, dict)
                                                                                  for m in prompt))):
        raise DataError(f"record '{row['id']}' has no prompt messages", path=path, line=number,
                        expected="'prompt': [{'role': 'user', 'content': ...}]")


def read_answers(path: str | Path, *, strict: bool = True, require_prompt: bool = True) -> list[AnswerRecord]:
    """answers.jsonl in file order (a UTF-8 BOM tolerated). strict: a bad row, a duplicate id or an empty file is
    a DataError naming file and line; not strict (resuming a work file): bad rows are skipped, later lines win.
    The judge needs every prompt; the report can show answers without one (require_prompt=False)."""
    path = Path(path)
    if not path.is_file():
        raise DataError("answers file not found", path=path)
    expected = "one answer record per line (docs/formats.md)"
    records: dict[str, AnswerRecord] = {}
    lines: dict[str, int] = {}
    for number, row in iter_jsonl(path, read_utf8(path), expected=expected):
        try:
            _check_answer_row(path, number, row, require_prompt)
            record = validated(AnswerRecord, row, path=path, line=number, what="answer record", expected=expected)
        except DataError:
            if strict:
                raise
            continue
        if strict and record.id in records:
            raise DataError(f"duplicate id '{record.id}' (first on line {lines[record.id]})", path=path,
                            line=number, expected="each id once")
        records.pop(record.id, None)  # not strict: the later line wins, in its own place
        records[record.id], lines[record.id] = record, number
    if strict and not records:
        raise DataError("no answer records", path=path, expected="at least one line")
    return list(records.values())


def write_answers(path: str | Path, records: Iterable[AnswerRecord]) -> int:
    from rualign.runs import write_jsonl

    return write_jsonl(path, (r.dump() for r in records))


def read_judgments(path: str | Path) -> list[Judgment]:
    path = Path(path)
    expected = "judgments.jsonl of docs/formats.md"
    return [validated(Judgment, row, path=path, line=number, what="judgment", expected=expected)
            for number, row in iter_jsonl(path, read_utf8(path), expected=expected)]


def write_judgments(path: str | Path, rows: Iterable[Judgment]) -> int:
    from rualign.runs import write_jsonl

    return write_jsonl(path, (r.dump() for r in rows))


def _check_per_prompt(path: Path, data: dict) -> None:
    # Checked before validation so the message names the entry a person would look for.
    entries = data.get("per_prompt")
    if not isinstance(entries, list):
        return
    for row, entry in enumerate(entries, start=1):
        if not isinstance(entry, dict) or "id" not in entry:
            raise DataError(f"per_prompt entry {row} has no id", path=path)
        value = entry.get("value")
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))
                                  or not 0.0 <= value <= 1.0):
            raise DataError(f"per_prompt entry {row} ('{entry['id']}') has value {value!r}", path=path,
                            expected="a number in [0, 1] or null")


def read_score(path: str | Path) -> Score:
    """score.json, given the file or the folder holding it."""
    path = Path(path)
    if path.is_dir():
        path = path / "score.json"
    if not path.is_file():
        raise RualignError("no score.json here", path=path, hint="point at a `rualign judge --out` folder")
    expected = "score.json of docs/formats.md"
    data = _read_json(path, expected)
    if isinstance(data, dict):
        _check_per_prompt(path, data)
    return validated(Score, data, path=path, what="score.json", expected=expected)


def write_score(path: str | Path, score: Score) -> None:
    _write_record(path, score)


def read_ref_loss(path: str | Path) -> RefLoss:
    return _read_record(RefLoss, path, "ref_loss.json", '{"ref_loss": float, "tokens": int, ...}')


def write_ref_loss(path: str | Path, record: RefLoss) -> None:
    _write_record(path, record)


def read_knowledge(path: str | Path) -> KnowledgeResult:
    return _read_record(KnowledgeResult, path, "knowledge.json",
                        '{"accuracy", "accuracy_norm", "n", "per_category", ...}')


def write_knowledge(path: str | Path, record: KnowledgeResult) -> None:
    _write_record(path, record)


def read_judge_card(path: str | Path) -> JudgeCard:
    return _read_record(JudgeCard, path, "judge_card.json",
                        '{"accuracy", "validated", "reasons", "judge", "gold", ...}')


def write_judge_card(path: str | Path, card: JudgeCard) -> None:
    _write_record(path, card)


def read_run_info(path: str | Path) -> RunInfo:
    return _read_record(RunInfo, path, "run.json",
                        '{"name", "description", "stages": [{"name", "method", "data"}], ...}')


def write_run_info(path: str | Path, info: RunInfo) -> None:
    _write_record(path, info)
