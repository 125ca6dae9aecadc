"""Load evaluation prompt files into `{"id", "messages", "category"}` (docs/formats.md, "Prompts").

Accepted, per record (a file may be a JSON list or JSONL; the style is detected per record):
- alpaca_eval style: `instruction`, optional `input` (appended after a blank line), `category`,
  `id` or `question_id`;
- Vikhr ru-arena / MT-bench style: `question_id`, `turns: [{"content": str} | str, ...]`, `category`;
- `{id, prompt}` where prompt is a string or a message list (`{"role", "content"}`), or `{id, messages}`.

Multi-turn choice: a `turns` list without answers carries only user turns, and later turns make sense only
after the model's own answer to the earlier ones; we generate for the FIRST turn and record the number of
dropped turns in `meta.dropped_turns`. A message list that carries assistant answers is kept whole (it
must end with a user turn) so the model answers the last turn in context.

A prompt without an id gets a content id (hash of its messages), so two files with the same prompts in a
different order still pair up by id.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import ValidationError

from rualign.errors import DataError
from rualign.records import Message
from rualign.runs import stable_hash
from rualign.textio import iter_jsonl, parse_json, read_utf8

BUNDLED_PREFIX = "bundled:"
_BUNDLED_DIRS = ("data/samples", "eval/prompts")
_ROLES = {"system", "user", "assistant"}
_EXPECTED = ("an object with 'instruction' (alpaca_eval), 'turns' (ru-arena), 'prompt' or 'messages', "
             "optionally 'id'/'question_id' and 'category'")


def resolve_prompts_path(spec: str | Path) -> Path:
    """A file path, or `bundled:NAME` for a prompt set shipped inside the package."""
    spec = str(spec)
    if spec.startswith(BUNDLED_PREFIX):
        name = spec[len(BUNDLED_PREFIX):]
        root = Path(__file__).resolve().parent.parent
        for folder in _BUNDLED_DIRS:
            for suffix in (".json", ".jsonl"):
                candidate = root / folder / f"{name}{suffix}"
                if candidate.exists():
                    return candidate
        raise DataError(f"no bundled prompt set named '{name}'", path=spec,
                        expected="e.g. bundled:eval_prompts")
    path = Path(spec).expanduser()
    if not path.exists():
        raise DataError("prompts file does not exist", path=path)
    return path


def load_prompts(spec: str | Path) -> list[dict[str, Any]]:
    """Read and normalise a prompts file; every problem names the file and the line (JSONL) or row (JSON)."""
    path = resolve_prompts_path(spec)
    raw = _read_records(path)
    prompts: list[dict[str, Any]] = []
    seen: dict[str, int] = {}
    for where, record in raw:
        prompt = normalise_record(record, path=path, where=where)
        if prompt["id"] in seen:
            raise _error(f"duplicate prompt id '{prompt['id']}' (first seen at {_label(seen[prompt['id']])})",
                         path, where, "unique ids")
        seen[prompt["id"]] = where
        prompts.append(prompt)
    if not prompts:
        raise DataError("the prompts file holds no prompts", path=path, expected="at least one prompt")
    return prompts


def _label(where: int | str) -> str:
    return where if isinstance(where, str) else f"line {where}"


def _error(message: str, path: Path | str, where: int | str | None, expected: str) -> DataError:
    """JSONL problems carry a line number (file:LINE:); a JSON list's carry its 1-based row in the text."""
    if isinstance(where, str):
        return DataError(f"{where}: {message}", path=path, expected=expected)
    return DataError(message, path=path, line=where, expected=expected)


def _read_records(path: Path) -> list[tuple[int | str, Any]]:
    """(line number, record) pairs from JSONL, or ("row N", record) pairs from a JSON list."""
    text = read_utf8(path)
    stripped = text.lstrip()
    if stripped.startswith("["):
        data = parse_json(text, path, expected="a JSON list of prompt objects")
        if not isinstance(data, list):
            raise DataError("a JSON prompts file must hold a list", path=path, expected="[{...}, ...]")
        return [(f"row {row}", record) for row, record in enumerate(data, start=1)]
    return list(iter_jsonl(path, text, expected="one JSON object per line (JSONL) or a JSON list"))


def normalise_record(record: Any, *, path: Path | str = "<prompts>", where: int | str | None = None
                     ) -> dict[str, Any]:
    def fail(message: str, expected: str = _EXPECTED) -> DataError:
        return _error(message, path, where, expected)

    if not isinstance(record, dict):
        raise fail(f"a prompt must be a JSON object, got {type(record).__name__}")
    meta: dict[str, Any] = {}
    if "instruction" in record:
        messages = [{"role": "user", "content": _alpaca_text(record, fail)}]
    elif "turns" in record:
        messages, dropped = _arena_messages(record["turns"], fail)
        if dropped:
            meta["dropped_turns"] = dropped
    elif "prompt" in record or "messages" in record:
        value = record["prompt"] if "prompt" in record else record["messages"]
        messages = _message_list(value, fail)
    else:
        raise fail(f"no prompt field among keys {sorted(record)}")
    category = record.get("category")
    if category is not None and not isinstance(category, str):
        raise fail(f"category must be a string, got {type(category).__name__}", "a string or null")
    pid = record.get("id", record.get("question_id"))
    if pid is None:
        pid = stable_hash(messages, 12)
    elif not isinstance(pid, (str, int)) or isinstance(pid, bool) or str(pid).strip() == "":
        raise fail(f"invalid id {pid!r}", "a non-empty string or integer id")
    prompt = {"id": str(pid), "messages": messages, "category": category}
    if meta:
        prompt["meta"] = meta
    return prompt


def _alpaca_text(record: dict, fail) -> str:
    instruction, extra = record["instruction"], record.get("input")
    if not isinstance(instruction, str) or not instruction.strip():
        raise fail("empty or non-string 'instruction'", "a non-empty instruction string")
    if extra is not None and not isinstance(extra, str):
        raise fail("'input' must be a string", "a string input")
    return instruction + ("\n\n" + extra if extra and extra.strip() else "")


def _arena_messages(turns: Any, fail) -> tuple[list[dict], int]:
    if not isinstance(turns, list) or not turns:
        raise fail("'turns' must be a non-empty list", "turns: [{\"content\": str}, ...]")
    first = turns[0]
    content = first.get("content") if isinstance(first, dict) else first
    if not isinstance(content, str) or not content.strip():
        raise fail("the first turn has no text", "turns: [{\"content\": str}, ...]")
    return [{"role": "user", "content": content}], len(turns) - 1


def _message_list(value: Any, fail) -> list[dict]:
    if isinstance(value, str):
        if not value.strip():
            raise fail("empty prompt", "a non-empty prompt string")
        return [{"role": "user", "content": value}]
    if not isinstance(value, list) or not value:
        raise fail("prompt must be a string or a non-empty message list", "a string or [{role, content}, ...]")
    messages = []
    for i, message in enumerate(value):
        try:
            turn = Message.model_validate(message)
        except ValidationError:
            turn = None
        if turn is None or turn.role not in _ROLES:
            raise fail(f"message {i} is not {{role: system|user|assistant, content: str}}",
                       "messages with role and string content")
        messages.append({"role": turn.role, "content": turn.content})  # other keys of a turn are not kept
    if messages[-1]["role"] != "user" or not messages[-1]["content"].strip():
        raise fail("the conversation must end with a non-empty user turn", "a final user message to answer")
    return messages
