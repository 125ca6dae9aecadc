"""Parallel judge slots: calls spread over idle slots (never two at once on one slot), stats add up; the
llama.cpp slot servers split the cores between them."""

from __future__ import annotations

import asyncio

import pytest

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


def test_llamacpp_slots_split_the_cores_and_are_closed(monkeypatch, tmp_path):
    """cfg.slots in-process llama.cpp instances with cores/slots threads each, all freed on the way out, also
    when the judging fails."""
    from rualign.eval import judge_backends, llamacpp_local, server
    from rualign.eval.schema import parse_judge_spec

    made, closed = [], []

    class Fake:
        def __init__(self, gguf, *, n_ctx, threads, identity):
            made.append((n_ctx, threads))
            self.identity = identity

        def close(self):
            closed.append(self)

    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF")
    monkeypatch.setattr(llamacpp_local, "LlamaSlot", Fake)
    monkeypatch.setattr(server, "resolve_gguf", lambda model: gguf)
    monkeypatch.setattr("os.cpu_count", lambda: 4)
    cfg = parse_judge_spec(f"llamacpp:{gguf}").model_copy(update={"slots": 2, "n_ctx": 2048})
    with pytest.raises(RuntimeError, match="boom"):
        with judge_backends.llamacpp_backend(cfg) as make:
            pool = make()
            assert len(pool.slots) == 2 and pool.identity == "llamacpp:m.gguf:4"
            raise RuntimeError("boom")
    assert made == [(2048, 2), (2048, 2)] and len(closed) == 2


class LowMassSlot(FakeSlot):
    """Puts almost nothing on the verdict letters, so every job makes a logprob call and then a constrained
    call with the same prompt; records which prompts it was asked."""

    def __init__(self, name: str):
        super().__init__(name)
        self.asked: list[tuple[str, str]] = []

    async def complete(self, messages, kind):
        self.asked.append((messages[-1]["content"], kind))
        await asyncio.sleep(0.01)
        usage = {"prompt_tokens": 10, "completion_tokens": 1}
        if kind == "constrained":
            return {"text": "A", "top_logprobs": None, "usage": usage, "finish_reason": "length"}
        top = [{"token": "В", "logprob": -0.01}, {"token": "A", "logprob": -6.0}]
        return {"text": "В", "top_logprobs": top, "usage": usage, "finish_reason": "length"}


def test_a_jobs_constrained_call_goes_to_the_slot_that_evaluated_its_prompt(monkeypatch, tmp_path, write_jsonl):
    """The retry of a low-mass call asks the same prompt again: on the same slot it costs one token (the slot
    keeps the evaluated prefix), on another the whole prompt. Every job's two calls land on one slot."""
    import contextlib

    from rualign.eval import judge as judge_mod
    from rualign.eval.judge import run_judge
    from rualign.eval.schema import JudgeConfig

    monkeypatch.setenv("RUALIGN_HOME", str(tmp_path / "home"))
    slots = [LowMassSlot("a"), LowMassSlot("b")]

    @contextlib.contextmanager
    def factory(config):
        yield lambda: SlotPool(slots, "fake")
    monkeypatch.setattr(judge_mod, "backend_factory", factory)
    rows = lambda who: [{"id": f"p{i}", "prompt": f"Вопрос {i}", "answer": f"{who} {i}", "answer_tokens": 2}
                        for i in range(6)]
    config = JudgeConfig(backend="openai", base_url="http://127.0.0.1:9/v1", model="m",
                         cache=str(tmp_path / "c.sqlite"), constrain="grammar")
    run_judge(write_jsonl("a.jsonl", rows("мой")), write_jsonl("r.jsonl", rows("эталон")), config, tmp_path / "o")
    for slot in slots:
        assert slot.max_busy <= 1
        free = [prompt for prompt, kind in slot.asked if kind == "logprob"]
        forced = [prompt for prompt, kind in slot.asked if kind == "constrained"]
        assert sorted(free) == sorted(forced)  # each constrained call on the slot of its logprob call
        # ... right after it: nothing else evaluated on the slot in between
        assert all(slot.asked[i + 1] == (p, "constrained") for i, (p, k) in enumerate(slot.asked) if k == "logprob")
    assert sum(len(slot.asked) for slot in slots) == 24 and all(slot.asked for slot in slots)


class OneAtATime(LowMassSlot):
    """An OpenAI-style backend over a server that runs one request at a time (a semaphore of 1)."""

    def __init__(self, name: str):
        super().__init__(name)
        self._one = asyncio.Semaphore(1)
        self.identity = "one-at-a-time"

    async def complete(self, messages, kind):
        async with self._one:
            return await super().complete(messages, kind)


def test_a_jobs_retry_is_not_queued_behind_every_other_jobs_first_call(monkeypatch, tmp_path, write_jsonl):
    """With every job started at once, a job's constrained retry queued behind all other jobs' first calls and
    found the server holding another prompt (measured: 146 s instead of 91 s for 8 calls on llama.cpp's
    server). At most `concurrency` jobs run: with 1, each retry directly follows its own first call."""
    import contextlib

    from rualign.eval import judge as judge_mod
    from rualign.eval.judge import run_judge
    from rualign.eval.schema import JudgeConfig

    monkeypatch.setenv("RUALIGN_HOME", str(tmp_path / "home"))
    backend = OneAtATime("server")

    @contextlib.contextmanager
    def factory(config):
        yield lambda: backend
    monkeypatch.setattr(judge_mod, "backend_factory", factory)
    rows = lambda who: [{"id": f"p{i}", "prompt": f"Вопрос {i}", "answer": f"{who} {i}", "answer_tokens": 2}
                        for i in range(5)]
    config = JudgeConfig(backend="openai", base_url="http://127.0.0.1:9/v1", model="m", concurrency=1,
                         cache=str(tmp_path / "c.sqlite"), constrain="grammar")
    run_judge(write_jsonl("a.jsonl", rows("мой")), write_jsonl("r.jsonl", rows("эталон")), config, tmp_path / "o")
    asked = backend.asked
    assert len(asked) == 20
    assert all(asked[i + 1] == (prompt, "constrained") for i, (prompt, kind) in enumerate(asked) if kind == "logprob")
