"""The in-process llama.cpp judge (eval/llamacpp_local.py) replies as llama-cpp-python's server does for the same
calls: same prompt tokens, same top logprobs, same constrained letter, same generated verdict text. That is
what lets the judge keep its identity (the weights) across the change: cached server replies stay valid.
Evaluating after a shared prefix gives what a fresh evaluation gives."""

from __future__ import annotations

import asyncio
import importlib.util

import pytest

from rualign.eval.judge import load_template, render
from rualign.eval.judge_backends import _openai_args, request_params
from rualign.eval.schema import parse_judge_spec
from rualign.records import Message

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(importlib.util.find_spec("llama_cpp") is None or importlib.util.find_spec("uvicorn") is None,
                       reason="needs llama-cpp-python[server] (the demo extra)"),
]

PAIRS = [
    ("Как называется столица России?", "Столица России — Москва.", "Не знаю, может быть, Санкт-Петербург."),
    ("Сколько будет 2 + 2?", "Пять.", "2 + 2 = 4, потому что два и два — четыре."),
]


def _calls(cfg):
    template = load_template(cfg.template)
    calls = []
    for question, a, b in PAIRS:
        prompt = [Message(role="user", content=question)]
        calls += [(render(template, prompt, a, b, "logprob"), "logprob"),
                  (render(template, prompt, a, b, "logprob"), "constrained"),
                  (render(template, prompt, a, b, "verdict"), "verdict")]
    return calls


def _replies(backend, calls):
    async def go():
        return [await backend.complete(messages, kind) for messages, kind in calls]
    return asyncio.run(go())


def test_in_process_replies_match_the_servers(tmp_path):
    from rualign.eval.endpoint import OpenAIBackend
    from rualign.eval.llamacpp_local import LlamaSlot, LlamaSlotBackend
    from rualign.eval.server import LlamaServer, resolve_gguf

    cfg = parse_judge_spec("llamacpp:default").model_copy(update={"max_tokens": 12})
    gguf, calls = resolve_gguf("default"), _calls(cfg)
    params = lambda kind: request_params(cfg, kind)  # noqa: E731
    slot = LlamaSlot(gguf, n_ctx=2048, threads=1, identity="x")
    try:
        mine = _replies(LlamaSlotBackend(slot, params), calls)
        fresh = LlamaSlot(gguf, n_ctx=2048, threads=1, identity="x")  # no prefix kept from earlier calls
        try:
            alone = _replies(LlamaSlotBackend(fresh, params), calls[-3:-2])[0]
        finally:
            fresh.close()
    finally:
        slot.close()
    with LlamaServer(gguf, n_ctx=2048, threads=1) as server:
        theirs = _replies(OpenAIBackend(cfg.model, base_url=server.base_url, served_model=server.model_id,
                                        identity="x", **{**_openai_args(cfg), "batch_size": 1}), calls)

    for (messages, kind), a, b in zip(calls, mine, theirs):
        assert a.usage.prompt_tokens == b.usage.prompt_tokens > 100, kind
        assert a.text == b.text, kind
        if kind == "logprob":
            assert [t.token for t in a.top_logprobs] == [t.token for t in b.top_logprobs]
            assert [t.logprob for t in a.top_logprobs] == pytest.approx([t.logprob for t in b.top_logprobs],
                                                                          abs=1e-3)
        else:
            assert a.top_logprobs is None
    assert all(reply.text in ("A", "B", "C") for (_, kind), reply in zip(calls, mine) if kind == "constrained")
    # The second pair's logprob call reused the first pair's evaluated prefix: the same as evaluated alone.
    assert [t.token for t in alone.top_logprobs] == [t.token for t in mine[-3].top_logprobs]
    assert [t.logprob for t in alone.top_logprobs] == pytest.approx([t.logprob for t in mine[-3].top_logprobs],
                                                                      abs=1e-3)
