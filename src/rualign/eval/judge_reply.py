"""One judge call's reply: what every judge backend's `complete(messages, kind)` returns and the judge cache stores.

Its JSON is the cache value ({"text", "top_logprobs": [{"token", "logprob"}, ...] | null, "usage":
{"prompt_tokens", "completion_tokens"}, "finish_reason"}), so entries cached before the record existed load
as they are. Every field is checked on the way in: a bad reply cached would make every rerun fail the same
way, even offline (judge_backends.checked_value turns a ValidationError into a counted CallFailed).
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, ValidationError

# A log-probability: a number <= 0 (NaN and positive values are none; a tiny positive rounding error is allowed).
LogProb = Annotated[float, Field(strict=True, le=1e-6)]
Tokens = Annotated[int, Field(strict=True, ge=0)]


class _Part(BaseModel):
    model_config = ConfigDict(extra="allow")  # keys a server adds (e.g. "bytes") survive a cache round trip


class TopLogprob(_Part):
    token: Annotated[str, Field(strict=True)]
    logprob: LogProb


class ReplyUsage(_Part):
    prompt_tokens: Tokens
    completion_tokens: Tokens


class JudgeReply(_Part):
    text: Annotated[str, Field(strict=True)]
    top_logprobs: list[TopLogprob] | None = Field(None, description="first generated token's alternatives "
                                                                    "(logprob calls)")
    usage: ReplyUsage
    finish_reason: Annotated[str, Field(strict=True)] | None = None

    def dump(self) -> dict:
        # Python mode: a logprob of -inf stays -inf (JSON mode would turn it into null).
        return self.model_dump()

    def top_json(self) -> list[dict] | None:
        return None if self.top_logprobs is None else [t.model_dump() for t in self.top_logprobs]


def checked_value(value: object) -> JudgeReply:
    """A backend's reply or a cache entry as a JudgeReply, validated before it is parsed or cached. Raises
    CallFailed naming what is wrong (a counted failure of this call, retried on the next run)."""
    from rualign.eval.client import CallFailed

    try:
        return JudgeReply.model_validate(value)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(map(str, first["loc"])) or "reply"
        raise CallFailed(f"malformed judge response: {where}: {first['msg']} (got {str(first['input'])[:80]})"
                         ) from None
