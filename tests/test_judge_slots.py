"""Parallel judge slots: calls spread over idle slots (never two at once on one slot), stats add up; the
llama.cpp slot servers split the cores between them."""

from __future__ import annotations

import asyncio

from rualign.eval.judge_backends import SlotPool


class FakeSlot:
    def __init__(self, name: str):
        self.name, self.busy, self.calls, self.max_busy = name, 0, 0, 0

    async def complete(self, messages, kind):
        self.busy += 1
        self.max_busy = max(self.max_busy, self.busy)
        await asyncio.sleep(0.02)
        self.busy -= 1
        self.calls += 1
        return {"text": self.name, "top_logprobs": None, "usage": {}, "finish_reason": "stop"}

    def stats(self):
        return {"requests": self.calls, "retries": 0, "errors": {"timeout": 1}}

    async def aclose(self):
        self.closed = True


def test_slot_pool_uses_every_slot_one_call_at_a_time():
    slots = [FakeSlot("a"), FakeSlot("b"), FakeSlot("c")]
    pool = SlotPool(slots, "fake")

    async def go():
        results = await asyncio.gather(*(pool.complete([], "logprob") for _ in range(12)))
        await pool.aclose()
        return results

    results = asyncio.run(go())
    assert len(results) == 12 and {r["text"] for r in results} == {"a", "b", "c"}
    assert all(s.max_busy == 1 for s in slots) and all(s.closed for s in slots)
    assert sum(s.calls for s in slots) == 12
    assert pool.stats() == {"slots": 3, "requests": 12, "retries": 0, "errors": {"timeout": 3}}


def test_slot_servers_split_the_cores(monkeypatch):
    from rualign.eval import server

    monkeypatch.setattr(server.os, "cpu_count", lambda: 4)
    made = []

    class Fake(server.LlamaServer):
        def launch(self):
            made.append(self.extra_args)

        def _wait_ready(self):
            pass

        def stop(self):
            pass

    monkeypatch.setattr(server, "LlamaServer", Fake)
    monkeypatch.setattr(server.importlib.util, "find_spec", lambda name: object())
    with server.llama_servers("/x.gguf", 2) as servers:
        assert len(servers) == 2
    assert made == [["--n_threads", "2", "--n_threads_batch", "2"]] * 2
