"""One OpenAI-compatible endpoint: its URL (normalised; public = without credentials), its API key (from the
environment only) and `OpenAIBackend`, the one class that talks to it for both generation and judging.

Kept free of heavy imports (httpx is imported with the client), so schemas and plans can key on URLs cheaply.
"""

from __future__ import annotations

import asyncio
import os
import re
from typing import Any, Callable
from urllib.parse import urlsplit, urlunsplit

from rualign.errors import RualignError


def normalize_base_url(url: str) -> str:
    """http://host:port, http://host:port/, http://host:port/v1/ and .../v1/chat/completions → http://host:port/v1."""
    url = url.strip()
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise RualignError(f"not an http(s) URL: '{url}'", path="base_url",
                           expected="e.g. http://127.0.0.1:8000/v1")
    path = re.sub(r"/+", "/", parts.path).rstrip("/")
    for suffix in ("/chat/completions", "/completions", "/models"):
        if path.endswith(suffix):
            path = path[: -len(suffix)]
    if not path:
        path = "/v1"
    return urlunsplit((parts.scheme, parts.netloc, path, "", ""))


def endpoint_key(url: str) -> str:
    """The endpoint's identity in cache keys: normalised (no query) and without user:password@. Two servers
    differ by scheme, host, port or path, so all of those stay; a rotated password is the same server.
    (What is shown or written is rualign.redact's business: credentials masked, not keyed.)"""
    parts = urlsplit(normalize_base_url(url))
    return urlunsplit((parts.scheme, parts.netloc.rpartition("@")[2], parts.path, "", ""))


def api_key(env_name: str | None, where: str) -> str | None:
    """The key from the environment variable NAMED in the config; the key itself is never stored or logged."""
    if not env_name:
        return None
    key = os.environ.get(env_name)
    if not key:
        raise RualignError(f"the environment variable {env_name} is not set (or empty)", path=where,
                           hint=f"export {env_name}=... before running (the key is never logged)")
    return key


class OpenAIBackend:
    """Any OpenAI-compatible /chat/completions endpoint, through the shared retrying async client.

    Generation (`generate`: a batch of conversations → Completions, `batch_size` requests in flight) and judging
    (`complete`: one call inside the judge's event loop, parameters from `judge_params(kind)`) share the URL,
    key and client settings. `identity` names the endpoint in judge cache keys: model AND public URL, so two
    servers serving the same model name never share cached verdicts.
    """

    name = "openai"

    def __init__(self, model: str, *, base_url: str, api_key_env: str | None = None, batch_size: int = 8,
                 timeout_s: float = 300.0, max_retries: int = 6, requests_per_minute: float | None = None,
                 backoff_base_s: float = 1.0, backoff_max_s: float = 60.0, served_model: str | None = None,
                 identity: str | None = None, judge_params: Callable[[str], dict] | None = None,
                 key_path: str = "api_key_env"):
        self.model, self.adapter, self.batch_size = model, None, max(1, batch_size)
        self.base_url = normalize_base_url(base_url)
        self.identity = identity or f"openai:{model}@{endpoint_key(base_url)}"
        self._client_args = dict(base_url=self.base_url, model=served_model or model,
                                 api_key=api_key(api_key_env, key_path), concurrency=self.batch_size,
                                 requests_per_minute=requests_per_minute, timeout_s=timeout_s,
                                 max_retries=max_retries, backoff_base_s=backoff_base_s, backoff_max_s=backoff_max_s)
        self._judge_params = judge_params
        # Judging: one client for the whole run, made here because the judge builds backends inside its loop.
        self._client: Any = self._new_client() if judge_params is not None else None
        self.failures: list[str] = []

    def _new_client(self) -> Any:
        from rualign.eval.client import ChatClient

        return ChatClient(**self._client_args)

    # ---- generation

    def settings(self) -> dict[str, Any]:
        return {"base_url": endpoint_key(self.base_url)}  # never the key, nor credentials in the URL

    def prompt_length(self, messages: list[dict]) -> int:
        return sum(len(m["content"]) for m in messages)  # characters: only used to order batches

    def generate(self, batch: list[list[dict]], params: Any) -> list[Any]:
        return asyncio.run(self._generate(batch, params))

    async def _generate(self, batch: list[list[dict]], params: Any) -> list[Any]:
        from rualign.eval.backends import Completion
        from rualign.eval.client import CallFailed

        body = {"max_tokens": params.max_new_tokens, "temperature": params.temperature, "seed": params.seed}
        if params.top_p < 1:
            body["top_p"] = params.top_p
        async with self._new_client() as client:
            results = await asyncio.gather(*(client.chat(m, **body) for m in batch), return_exceptions=True)
        completions: list[Completion | None] = []
        for result in results:
            if isinstance(result, CallFailed):  # counted and retried on the next run; the others are kept
                self.failures.append(str(result))
                completions.append(None)
            elif isinstance(result, BaseException):
                raise result
            else:
                completions.append(Completion(
                    text=result.text.strip(), finish_reason=str(result.finish_reason or "stop"),
                    completion_tokens=result.usage.completion_tokens or None))
        return completions

    # ---- judging

    async def complete(self, messages: list[dict], kind: str) -> Any:
        """A JudgeReply; a reply the server got wrong (a positive logprob, a non-text finish_reason) is a
        CallFailed, never cached."""
        from rualign.eval.judge_backends import LOGPROB_KINDS
        from rualign.eval.judge_reply import checked_value
        from rualign.eval.parse import first_position_top_logprobs

        result = await self._client.chat(messages, **self._judge_params(kind))
        top = first_position_top_logprobs(result.choice) if kind in LOGPROB_KINDS else None
        return checked_value({"text": result.text, "top_logprobs": top, "usage": result.usage,
                              "finish_reason": result.finish_reason})

    def stats(self) -> dict:
        s = self._client.stats
        return {"requests": s.requests, "retries": s.retries, "prompt_tokens": s.prompt_tokens,
                "completion_tokens": s.completion_tokens, "errors": dict(s.errors)}

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
