"""The async OpenAI-compatible client against a real fault-injecting HTTP server on loopback."""

from __future__ import annotations

import asyncio
import time

import pytest
from fault_server import FaultServer, request_key

from rualign.errors import RualignError
from rualign.eval.client import CallFailed, ChatClient, normalize_base_url, parse_retry_after

FAST = {"backoff_base_s": 0.01, "backoff_max_s": 0.05, "timeout_s": 3.0}  # generous: the machine is shared


def run(coro):
    return asyncio.run(coro)


async def _chat_many(client: ChatClient, bodies: list[list[dict]], **params):
    try:
        return await asyncio.gather(*(client.chat(m, **params) for m in bodies), return_exceptions=True)
    finally:
        await client.aclose()


def _messages(i: int) -> list[dict]:
    return [{"role": "user", "content": f"вопрос {i}\n\n[Ответ A]\n{'x' * (i % 3)}\n\n[Конец ответа A]\n\n"
                                        f"[Ответ B]\nx\n\n[Конец ответа B]"}]


@pytest.mark.parametrize("given", ["http://h:1", "http://h:1/", "http://h:1/v1", "http://h:1/v1/",
                                   "http://h:1/v1/chat/completions", " http://h:1//v1// "])
def test_base_url_normalised(given):
    assert normalize_base_url(given) == "http://h:1/v1"


def test_base_url_keeps_custom_prefix_and_rejects_non_http():
    assert normalize_base_url("https://api.example.com/openai/v1/") == "https://api.example.com/openai/v1"
    with pytest.raises(RualignError, match="not an http"):
        normalize_base_url("127.0.0.1:8000")


def test_retry_after_parsing():
    assert parse_retry_after("2") == 2.0
    assert parse_retry_after("0.5") == 0.5
    assert parse_retry_after(None) is None and parse_retry_after("soon") is None
    assert parse_retry_after("100000") == 300.0  # capped


def test_faulty_server_every_call_succeeds_once(tmp_path):
    """~30% faults of every kind; each call ends with exactly one successful response, counted tokens."""
    with FaultServer(fault_rate=0.3, seed=1) as server:
        client = ChatClient(server.base_url, "fault", concurrency=8, max_retries=6, seed=0, **FAST)
        bodies = [_messages(i) for i in range(40)]
        results = run(_chat_many(client, bodies, max_tokens=1, logprobs=True, top_logprobs=20))
        assert all(not isinstance(r, Exception) for r in results), [r for r in results if isinstance(r, Exception)]
        ok = server.ok_counts()
        for body in bodies:
            outcomes = server.outcomes(request_key(body))
            assert ok[request_key(body)] == 1 and outcomes[-1] == "ok", outcomes
        kinds = {o for _, o in server.log}
        assert {"429", "500", "garbage", "truncated", "empty"} <= kinds  # the faults really happened
        assert client.stats.retries == client.stats.requests - len(bodies) > 0
        assert client.stats.completion_tokens == len(bodies)
        assert client.stats.prompt_tokens == sum(len(b[0]["content"]) // 4 for b in bodies)


def test_timeout_is_retried(tmp_path):
    with FaultServer(fault_rate=1.0, faults=("slow",), max_faults_per_key=1, slow_s=2.0) as server:
        client = ChatClient(server.base_url, "fault", max_retries=3, backoff_base_s=0.01, timeout_s=1.0)
        [result] = run(_chat_many(client, [_messages(2)], max_tokens=1))
        assert result.text == "A" and result.attempts >= 2
        assert client.stats.errors["timeout"] == result.attempts - 1


def test_retry_after_is_honoured():
    with FaultServer(fault_rate=1.0, faults=("429",), max_faults_per_key=1, retry_after="1") as server:
        client = ChatClient(server.base_url, "fault", max_retries=2, backoff_base_s=0.0, timeout_s=5)
        start = time.monotonic()
        [result] = run(_chat_many(client, [_messages(2)], max_tokens=1))
        elapsed = time.monotonic() - start
        assert result.attempts == 2 and elapsed >= 1.0, elapsed


def test_gives_up_after_max_retries():
    with FaultServer(fault_rate=1.0, faults=("500",), max_faults_per_key=100) as server:
        client = ChatClient(server.base_url, "fault", max_retries=3, **FAST)
        [result] = run(_chat_many(client, [_messages(3)], max_tokens=1))
        assert isinstance(result, CallFailed) and "4 attempts" in str(result) and "http 500" in str(result)
        assert server.requests() == 4


def test_auth_refusal_is_a_user_error_and_key_only_in_header():
    with FaultServer(status_override=401) as server:
        client = ChatClient(server.base_url, "fault", api_key="sk-secret-123", max_retries=3, **FAST)
        [result] = run(_chat_many(client, [_messages(4)], max_tokens=1))
        assert isinstance(result, RualignError) and "sk-secret-123" not in str(result)
        assert server.requests() == 1  # no retries on a refused key
        assert server.headers[0]["Authorization"] == "Bearer sk-secret-123"


def test_connection_refused_is_a_counted_failure():
    with FaultServer() as server:
        url = server.base_url
    client = ChatClient(url, "fault", max_retries=1, **FAST)
    [result] = run(_chat_many(client, [_messages(5)], max_tokens=1))
    assert isinstance(result, CallFailed) and "connection" in str(result)


def test_rate_limit_spaces_requests():
    with FaultServer(fault_rate=0.0) as server:
        client = ChatClient(server.base_url, "fault", concurrency=1, requests_per_minute=600, **FAST)
        start = time.monotonic()
        results = run(_chat_many(client, [_messages(i) for i in range(4)], max_tokens=1))
        elapsed = time.monotonic() - start
        assert all(r.text for r in results)
        assert elapsed >= 0.29, elapsed  # 600/min = one per 0.1 s after the first
