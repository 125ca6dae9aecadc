"""Async OpenAI-compatible chat client with our own retry policy.

Why not the openai SDK's retries: we must honour Retry-After, retry on bodies that parse badly or carry no
choices (the SDK treats a 200 as success), and count every attempt. So: httpx, a semaphore for bounded
concurrency, a token bucket for requests per minute, exponential backoff with full jitter.
The API key travels only in the Authorization header; it is never logged or returned.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import logging
import random
import re
import time
from collections import Counter
from urllib.parse import urlsplit
from dataclasses import dataclass, field

import httpx

from rualign.errors import RualignError
from rualign.eval.endpoint import normalize_base_url
from rualign.eval.judge_reply import ReplyUsage
from rualign.redact import redact_url

log = logging.getLogger(__name__)
RETRY_AFTER_MAX_S = 300.0


class CallFailed(Exception):
    """A call that did not succeed after all retries (or hit a non-retryable status); becomes a counted failure."""


class RetryableError(Exception):
    def __init__(self, message: str, retry_after: float | None = None):
        super().__init__(message)
        self.retry_after = retry_after


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or an HTTP date), capped; None if absent or unreadable."""
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        seconds = when.timestamp() - time.time()
    return min(max(seconds, 0.0), RETRY_AFTER_MAX_S)


class TokenBucket:
    """Requests-per-minute limiter: refills continuously, bursts at most `capacity` requests."""

    def __init__(self, per_minute: float, capacity: float | None = None):
        self.rate = per_minute / 60.0
        self.capacity = max(1.0, capacity if capacity is not None else 1.0)
        self.tokens = self.capacity
        self.updated = time.monotonic()
        self._lock = asyncio.Lock()

    async def acquire(self) -> None:
        async with self._lock:  # one waiter at a time keeps the order fair and the math simple
            while True:
                now = time.monotonic()
                self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.rate)
                self.updated = now
                if self.tokens >= 1.0:
                    self.tokens -= 1.0
                    return
                await asyncio.sleep((1.0 - self.tokens) / self.rate)


@dataclass
class ChatResult:
    text: str
    choice: dict  # the raw first choice (message + logprobs + finish_reason)
    usage: ReplyUsage
    finish_reason: object  # as the server sent it (judge replies refuse anything but text or null)
    attempts: int


@dataclass
class ClientStats:
    requests: int = 0
    retries: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    errors: Counter[str] = field(default_factory=Counter)  # by kind: "timeout", "http 503", ...


def _token_count(usage: object, key: str) -> int:
    """A usage count as the server reports it; anything but a non-negative whole number (`"usage": "lots"`,
    NaN, -5) is counted as 0: token accounting is informational, never worth failing a verdict for."""
    value = usage.get(key) if isinstance(usage, dict) else None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 2**53:
        return 0
    return int(value)


_LOOPBACK = re.compile(r"^(localhost|127(\.\d+){3}|\[?::1\]?|0\.0\.0\.0)$", re.IGNORECASE)


def _causes(exc: BaseException) -> list[BaseException]:
    chain, seen = [], set()
    while exc is not None and id(exc) not in seen and len(chain) < 16:
        seen.add(id(exc))
        chain.append(exc)
        exc = exc.__cause__ or exc.__context__
    return chain


def _unreachable(url: str, exc: httpx.TransportError) -> str | None:
    """Why a connection error cannot succeed on a retry, or None when it might (a reset, a busy remote, a
    DNS server that is temporarily down). Refused on loopback means nothing listens on this machine; a
    name the resolver says does not exist will not exist on the next attempt either."""
    import socket

    if not isinstance(exc, httpx.ConnectError):
        return None
    causes = _causes(exc)
    permanent_dns = {getattr(socket, n) for n in ("EAI_NONAME", "EAI_NODATA") if hasattr(socket, n)}
    if any(isinstance(c, socket.gaierror) and c.errno in permanent_dns for c in causes):
        return "its host name does not resolve"
    host = urlsplit(url).hostname or ""
    if _LOOPBACK.match(host) and any(isinstance(c, ConnectionRefusedError) for c in causes):
        return "the connection was refused: nothing listens on that port of this machine"
    return None


class ChatClient:
    def __init__(self, base_url: str, model: str, *, api_key: str | None = None, concurrency: int = 4,
                 requests_per_minute: float | None = None, timeout_s: float = 120.0, max_retries: int = 6,
                 backoff_base_s: float = 1.0, backoff_max_s: float = 60.0, seed: int | None = None):
        self.base_url = normalize_base_url(base_url)
        self.model = model
        self.max_retries = max_retries
        self.backoff_base_s = backoff_base_s
        self.backoff_max_s = backoff_max_s
        self.stats = ClientStats()
        self._semaphore = asyncio.Semaphore(concurrency)
        self._bucket = TokenBucket(requests_per_minute, capacity=concurrency) if requests_per_minute else None
        self._rng = random.Random(seed)
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._http = httpx.AsyncClient(timeout=httpx.Timeout(timeout_s), headers=headers,
                                       limits=httpx.Limits(max_connections=concurrency + 2))

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> "ChatClient":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def backoff(self, attempt: int) -> float:
        """Full jitter: uniform in [0, min(max, base * 2**attempt)]."""
        return self._rng.uniform(0.0, min(self.backoff_max_s, self.backoff_base_s * (2 ** attempt)))

    async def chat(self, messages: list[dict], **params) -> ChatResult:
        body = {"model": self.model, "messages": messages, **params}
        last = "no attempt made"
        for attempt in range(self.max_retries + 1):
            try:
                async with self._semaphore:
                    if self._bucket is not None:
                        await self._bucket.acquire()
                    result = await self._attempt(body)
                result.attempts = attempt + 1
                return result
            except RetryableError as exc:
                last = str(exc)
                self._count(last.split(":")[0])
                if attempt == self.max_retries:
                    break
                self.stats.retries += 1
                delay = exc.retry_after if exc.retry_after is not None else self.backoff(attempt)
                log.debug("retrying after %.2fs (attempt %d): %s", delay, attempt + 1, last)
                await asyncio.sleep(delay)
        raise CallFailed(f"gave up after {self.max_retries + 1} attempts; last error: {last}")

    def _count(self, kind: str) -> None:
        self.stats.errors[kind] += 1

    async def _attempt(self, body: dict) -> ChatResult:
        self.stats.requests += 1
        try:
            response = await self._http.post(f"{self.base_url}/chat/completions", json=body)
        except httpx.TimeoutException as exc:
            raise RetryableError(f"timeout: {type(exc).__name__}") from exc
        except httpx.TransportError as exc:  # connection refused/reset, protocol errors, truncated bodies
            why = _unreachable(self.base_url, exc)
            if why:  # fail fast: seven retries over 45 s cannot make a closed port open
                raise CallFailed(f"connection: {type(exc).__name__}: cannot reach {redact_url(self.base_url)}: {why} "
                                 "(not retried)") from exc
            raise RetryableError(f"connection: {type(exc).__name__}: {exc}") from exc
        status = response.status_code
        if status == 429 or status >= 500:
            raise RetryableError(f"http {status}: {response.text[:200]}",
                                 parse_retry_after(response.headers.get("retry-after")))
        if status in (401, 403):
            raise RualignError(f"the judge endpoint refused the credentials (HTTP {status})",
                               path=redact_url(self.base_url), hint="check the env var named by api_key_env")
        if status >= 400:
            raise CallFailed(f"http {status}: {response.text[:300]}")
        return self._decode(response)

    def _decode(self, response: httpx.Response) -> ChatResult:
        try:
            payload = response.json()
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise RetryableError(f"garbage body: {response.text[:120]!r}") from exc
        choices = payload.get("choices") if isinstance(payload, dict) else None
        if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
            raise RetryableError(f"empty choices: {json.dumps(payload, ensure_ascii=False)[:120]}")
        choice = choices[0]
        message = choice.get("message") or {}
        text = message.get("content") if isinstance(message, dict) else None
        if not isinstance(text, str):
            raise RetryableError("no message content in the first choice")
        usage = ReplyUsage(**{k: _token_count(payload.get("usage"), k) for k in ("prompt_tokens", "completion_tokens")})
        self.stats.prompt_tokens += usage.prompt_tokens
        self.stats.completion_tokens += usage.completion_tokens
        return ChatResult(text=text, choice=choice, usage=usage, finish_reason=choice.get("finish_reason"), attempts=1)

    async def list_models(self) -> list[str]:
        response = await self._http.get(f"{self.base_url}/models")
        response.raise_for_status()
        return [m.get("id") for m in response.json().get("data", []) if isinstance(m, dict)]
