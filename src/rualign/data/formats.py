"""Source formats: THE one table mapping a recipe's `format:` to the canonical record kind it produces, the
columns it cannot do without, and the function that normalises one row (docs/formats.md).

Adding a format = one `FormatSpec` row here (and its normaliser, if no existing one fits) + a test. The recipe
schema reads the names and kinds from this table, the recipe reads columns and normalisers.
A normaliser turns one raw row into a canonical record (without id/source/answer_tokens, which the recipe
adds) or raises `RowError` with the reason recorded for that row.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from rualign.errors import DataError

ROLE_ALIASES = {"bot": "assistant", "gpt": "assistant", "model": "assistant", "human": "user",
                "assistant": "assistant", "user": "user", "system": "system"}


class RowError(Exception):
    """One row cannot be used; the message is the reason recorded for it."""


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


def _require(data: dict, columns: tuple[str, ...]) -> None:
    for column in columns:
        if column not in data:
            raise RowError(f"missing column '{column}'")


def _chat(column: str) -> Callable[[dict], dict]:
    def normalise_chat(data: dict) -> dict:
        _require(data, (column,))
        messages = _conversation(_messages(data[column], column))
        return {"kind": "chat", "messages": messages, "meta": {k: v for k, v in data.items() if k != column}}

    return normalise_chat


def _saiga_scored(data: dict) -> dict:
    record = _chat("messages")(data)
    score = data.get("opus_score")
    if not isinstance(score, (int, float)) or isinstance(score, bool):
        raise RowError(f"opus_score is {score!r}, not a number")
    if not 1 <= score <= 10:  # NaN fails this too: it would pass every min_score check
        raise RowError(f"opus_score is {score!r}, outside 1-10")
    return record


def _preference(data: dict) -> dict:
    _require(data, ("prompt", "chosen", "rejected"))
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


def _kto(data: dict) -> dict:
    _require(data, ("prompt", "completion", "label"))
    if not isinstance(data["label"], bool):
        raise RowError(f"label is {data['label']!r}, expected true or false")
    prompt = _messages(data["prompt"], "prompt")
    completion = _messages(data["completion"], "completion")
    meta = {k: v for k, v in data.items() if k not in ("prompt", "completion", "label")}
    return {"kind": "kto", "prompt": prompt, "completion": completion, "label": data["label"], "meta": meta}


@dataclass(frozen=True)
class FormatSpec:
    kind: str                              # canonical record kind: chat | preference | kto
    columns: tuple[str, ...]               # a first row lacking one is a file-level error naming it
    normalise: Callable[[dict], dict]      # one raw row -> canonical record, or RowError
    description: str = ""


FORMATS: dict[str, FormatSpec] = {
    "grandmaster": FormatSpec("chat", ("conversation",), _chat("conversation"), "GrandMaster-PRO-MAX"),
    "saiga_scored": FormatSpec("chat", ("messages", "opus_score"), _saiga_scored, "saiga_scored (opus_score)"),
    "saiga_preferences": FormatSpec("preference", ("prompt", "chosen", "rejected"), _preference,
                                    "saiga_preferences"),
    "chat": FormatSpec("chat", ("messages",), _chat("messages"), "any {messages: [...]} dataset"),
    "preference": FormatSpec("preference", ("prompt", "chosen", "rejected"), _preference, "prompt/chosen/rejected"),
    "kto": FormatSpec("kto", ("prompt", "completion", "label"), _kto, "labelled completions"),
}


def check_columns(fmt: str, row: Any, path: str, line: int | None) -> None:
    """The first row must carry the columns its format needs: a misnamed column is a file-level error."""
    if not isinstance(row, dict):
        raise DataError(f"row is a {type(row).__name__}", path=path, line=line, expected="a JSON object")
    missing = [c for c in FORMATS[fmt].columns if c not in row]
    if missing:
        raise DataError(f"missing column(s) {missing} needed by format '{fmt}' (row has {sorted(row)[:12]})",
                        path=path, line=line)


def normalise(fmt: str, data: dict) -> dict:
    """One raw row → a canonical record (without id/source/answer_tokens, which the recipe adds)."""
    if fmt not in FORMATS:
        raise RowError(f"unknown format '{fmt}'")
    return FORMATS[fmt].normalise(data)
