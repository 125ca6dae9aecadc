"""Reading user text files the same way everywhere: UTF-8 (a BOM tolerated), JSONL split on "\\n" only,
and errors that name the file and the line."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, Iterator

from rualign.errors import DataError

REENCODE_HINT = "UTF-8 text (re-encode, e.g. iconv -f cp1251 -t utf-8)"


def read_utf8(path: str | Path) -> str:
    """The file's text; invalid UTF-8 is an error naming the line of the first bad byte."""
    path = Path(path)
    raw = path.read_bytes()
    try:
        return raw.decode("utf-8-sig")  # a BOM is tolerated
    except UnicodeDecodeError as exc:
        raise DataError(f"not valid UTF-8 (byte {exc.start})", path=path, line=raw[: exc.start].count(b"\n") + 1,
                        expected=REENCODE_HINT) from exc


def iter_jsonl(path: str | Path, text: str, *, expected: str = "one JSON object per line",
               hint: str | None = None, on_malformed: Callable[[int, str, json.JSONDecodeError], None] | None = None
               ) -> Iterator[tuple[int, Any]]:
    """(1-based line number, parsed value) for every non-blank line of `text`.

    Splits on "\\n" only, not str.splitlines(): JSON leaves U+2028, U+2029 and NEL unescaped inside strings.
    A malformed line raises a DataError naming file and line, unless `on_malformed` takes it (quarantine).
    """
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as exc:
            if on_malformed is None:
                raise DataError(f"malformed JSON: {exc.msg} at column {exc.colno}", path=path, line=number,
                                expected=expected, hint=hint) from exc
            on_malformed(number, line, exc)
            continue
        yield number, value
