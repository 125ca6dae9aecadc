"""Reading user text files the same way everywhere: UTF-8 (a BOM tolerated), JSONL split on "\\n" only,
and errors that name the file and the line."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, Iterator

from rualign.errors import DataError

REENCODE_HINT = "UTF-8 text (re-encode, e.g. iconv -f cp1251 -t utf-8)"
# Magic bytes of files that are not UTF-8 text but are often handed over as if they were.
_MAGIC = [(b"\x1f\x8b", "a gzip archive", "gunzip it first (gzip -d FILE)"),
          (b"PK\x03\x04", "a zip archive", "unzip it first"),
          (b"\xff\xfe", "UTF-16 (little-endian BOM)", "re-encode it: iconv -f utf-16 -t utf-8"),
          (b"\xfe\xff", "UTF-16 (big-endian BOM)", "re-encode it: iconv -f utf-16 -t utf-8"),
          (b"PAR1", "a parquet file", "name it *.parquet so it is read as parquet")]


def _no_constant(name: str):
    raise ValueError(f"{name} is not a number JSON allows")


def _finite_float(text: str) -> float:
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise ValueError(f"{text} overflows to infinity")
    return value


def loads(text: str):
    """json.loads that refuses NaN, Infinity and numbers that overflow to infinity (Python's json accepts
    them; they would pass every `<`/`>` check and be written back as invalid JSON)."""
    return json.loads(text, parse_constant=_no_constant, parse_float=_finite_float)


def parse_json(text: str, path: str | Path, *, expected: str | None = None) -> Any:
    """A whole-file JSON document, strict like `loads`; every problem is a DataError naming the file."""
    try:
        return loads(text)
    except json.JSONDecodeError as exc:
        raise DataError(f"malformed JSON: {exc.msg}", path=path, line=exc.lineno, expected=expected) from exc
    except (ValueError, RecursionError) as exc:
        raise DataError(f"malformed JSON: {exc or 'nested too deeply'}", path=path, expected=expected) from exc


def read_json(path: str | Path, *, expected: str | None = None) -> Any:
    return parse_json(read_utf8(path), path, expected=expected)


def not_text_reason(raw: bytes) -> tuple[str, str] | None:
    """(what the bytes are, what to do) when they start like a known binary or UTF-16 file."""
    if raw[:4] in (b"\xff\xfe\x00\x00", b"\x00\x00\xfe\xff"):
        return "UTF-32", "re-encode it: iconv -f utf-32 -t utf-8"
    for magic, what, hint in _MAGIC:
        if raw.startswith(magic):
            return what, hint
    return None


def read_utf8(path: str | Path) -> str:
    """The file's text; invalid UTF-8 is an error naming the line of the first bad byte."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except IsADirectoryError as exc:
        raise DataError("is a folder, not a file", path=path) from exc
    except OSError as exc:
        raise DataError(f"cannot read: {exc.strerror}", path=path) from exc
    found = not_text_reason(raw)
    if found:
        raise DataError(f"this is {found[0]}, not UTF-8 text", path=path, hint=found[1])
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
            value = loads(line)
        except json.JSONDecodeError as exc:
            if on_malformed is None:
                raise DataError(f"malformed JSON: {exc.msg} at column {exc.colno}", path=path, line=number,
                                expected=expected, hint=hint) from exc
            on_malformed(number, line, exc)
            continue
        except (ValueError, RecursionError) as exc:  # NaN/Infinity, or nesting deeper than Python's stack
            error = json.JSONDecodeError(str(exc) or "nested too deeply", line, 0)
            if on_malformed is None:
                raise DataError(f"malformed JSON: {error.msg}", path=path, line=number, expected=expected,
                                hint=hint) from exc
            on_malformed(number, line, error)
            continue
        yield number, value
