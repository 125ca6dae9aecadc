"""Judge backends: one `complete(messages, kind)` call returning a cacheable dict.

The value every backend returns (and the cache stores) is
  {"text": str, "top_logprobs": [{"token", "logprob"}, ...] | None, "usage": {...}, "finish_reason": str|None}
so judge.py never cares whether the verdict came from an HTTP server or an in-process model.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from pathlib import Path
from typing import Iterator

from rualign.eval.client import CallFailed
from rualign.eval.endpoint import OpenAIBackend
from rualign.eval.pointwise import DIGITS, SCORE_GRAMMAR
from rualign.eval.schema import JUDGE_BACKENDS, JudgeConfig


def checked_value(value: object) -> dict:
    """The backend value, validated before it is parsed or cached (a bad response cached would make every
    rerun fail the same way, even offline). Raises CallFailed naming what is wrong."""
    if not isinstance(value, dict) or not isinstance(value.get("text"), str):
        raise CallFailed("malformed judge response: no text")
    top = value.get("top_logprobs")
    if top is not None:
        if not isinstance(top, list):
            raise CallFailed(f"malformed judge response: top_logprobs is a {type(top).__name__}")
        for entry in top:
            logprob = entry.get("logprob") if isinstance(entry, dict) else None
            if (not isinstance(entry, dict) or not isinstance(entry.get("token"), str)
                    or isinstance(logprob, bool) or not isinstance(logprob, (int, float))
                    or not -math.inf <= logprob <= 1e-6):  # NaN and positive values are no log-probability
                raise CallFailed(f"malformed judge response: top_logprobs entry {str(entry)[:80]} is not "
                                 "{token: text, logprob: a number <= 0}")
    usage = value.get("usage")
    if not isinstance(usage, dict) or not all(
            isinstance(usage.get(k), int) and not isinstance(usage.get(k), bool) and usage[k] >= 0
            for k in ("prompt_tokens", "completion_tokens")):
        raise CallFailed(f"malformed judge response: usage {str(usage)[:80]}")
    if value.get("finish_reason") is not None and not isinstance(value["finish_reason"], str):
        raise CallFailed("malformed judge response: finish_reason is not text")
    return value


# One Latin verdict letter, nothing else (GBNF, as llama.cpp's server takes it).
VERDICT_GRAMMAR = 'root ::= [ABC]'


# Call kinds whose first-token top logprobs are read ("score": pointwise mode's digit, eval/pointwise.py).
LOGPROB_KINDS = ("logprob", "score")


def request_params(cfg: JudgeConfig, kind: str) -> dict:
    """Sampling parameters of one call kind ("logprob", "constrained", "verdict"; pointwise: "score",
    "score_constrained", "score_text"); part of the cache key."""
    if kind in LOGPROB_KINDS:
        return {"temperature": cfg.temperature, "max_tokens": 1, "logprobs": True,
                "top_logprobs": cfg.top_logprobs}
    if kind in ("constrained", "score_constrained"):
        return {"temperature": 0.0, "max_tokens": 1,
                "grammar": VERDICT_GRAMMAR if kind == "constrained" else SCORE_GRAMMAR}
    return {"temperature": cfg.temperature, "max_tokens": cfg.max_tokens}


class LocalBackend:
    """transformers in-process. Logprob mode reads the next-token distribution directly (one forward pass)."""

    def __init__(self, cfg: JudgeConfig):
        from rualign.models import load_model, load_tokenizer

        self.cfg = cfg
        self.identity = f"local:{cfg.model}"
        self.tokenizer = load_tokenizer(cfg.model)
        self.model = load_model(cfg.model)
        self.model.eval()
        self._lock = asyncio.Lock()  # one forward pass at a time: the model is not re-entrant
        self.requests = 0

    def _encode(self, messages: list[dict]):
        ids = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt",
                                                 return_dict=True)
        return ids["input_ids"]

    def _logprob(self, messages: list[dict]) -> dict:
        import torch

        input_ids = self._encode(messages)
        with torch.no_grad():
            logits = self.model(input_ids=input_ids).logits[0, -1].float()
        logprobs = torch.log_softmax(logits, dim=-1)
        values, indices = torch.topk(logprobs, k=self.cfg.top_logprobs)
        top = [{"token": self.tokenizer.decode([int(i)]), "logprob": float(v)} for v, i in zip(values, indices)]
        return {"text": top[0]["token"], "top_logprobs": top, "finish_reason": "length",
                "usage": {"prompt_tokens": int(input_ids.shape[1]), "completion_tokens": 1}}

    def _generate(self, messages: list[dict]) -> dict:
        import torch

        input_ids = self._encode(messages)
        with torch.no_grad():
            out = self.model.generate(input_ids=input_ids, attention_mask=torch.ones_like(input_ids),
                                      max_new_tokens=self.cfg.max_tokens, do_sample=False,
                                      pad_token_id=self.tokenizer.pad_token_id or self.tokenizer.eos_token_id)
        new = out[0, input_ids.shape[1]:]
        finish = "length" if new.shape[0] >= self.cfg.max_tokens else "stop"
        return {"text": self.tokenizer.decode(new, skip_special_tokens=True), "top_logprobs": None,
                "finish_reason": finish,
                "usage": {"prompt_tokens": int(input_ids.shape[1]), "completion_tokens": int(new.shape[0])}}

    def _constrained(self, messages: list[dict], choices: str = "ABC") -> dict:
        """The first token restricted to `choices` (letters A / B / C, or pointwise digits): the most likely."""
        import torch

        input_ids = self._encode(messages)
        with torch.no_grad():
            logits = self.model(input_ids=input_ids).logits[0, -1].float()
        letters = {c: self.tokenizer.encode(c, add_special_tokens=False) for c in choices}
        scores = {c: float(logits[ids[0]]) for c, ids in letters.items() if len(ids) == 1}
        return {"text": max(scores, key=scores.get), "top_logprobs": None, "finish_reason": "length",
                "usage": {"prompt_tokens": int(input_ids.shape[1]), "completion_tokens": 1}}

    async def complete(self, messages: list[dict], kind: str) -> dict:
        async with self._lock:
            self.requests += 1
            if kind == "score_constrained":
                return await asyncio.to_thread(self._constrained, messages, DIGITS)
            work = {"logprob": self._logprob, "score": self._logprob,
                    "constrained": self._constrained}.get(kind, self._generate)
            return await asyncio.to_thread(work, messages)

    def stats(self) -> dict:
        return {"requests": self.requests, "retries": 0}

    async def aclose(self) -> None:
        return None


def _openai_args(cfg: JudgeConfig) -> dict:
    return dict(api_key_env=cfg.api_key_env, batch_size=cfg.concurrency, timeout_s=cfg.timeout_s,
                max_retries=cfg.max_retries, requests_per_minute=cfg.requests_per_minute,
                backoff_base_s=cfg.backoff_base_s, backoff_max_s=cfg.backoff_max_s,
                judge_params=lambda kind: request_params(cfg, kind))


class SlotPool:
    """Several single-request backends (llama.cpp server processes) behind one `complete`: each call takes an
    idle slot. Every slot keeps the longest prefix of its previous prompt evaluated (llama-cpp-python reuses
    it), and all judge prompts of one template share a long instruction prefix, so any idle slot will do."""

    def __init__(self, slots: list, identity: str):
        self.slots, self.identity = slots, identity
        self._idle: asyncio.Queue | None = None

    async def complete(self, messages: list[dict], kind: str) -> dict:
        if self._idle is None:  # created inside the running event loop
            self._idle = asyncio.Queue()
            for slot in self.slots:
                self._idle.put_nowait(slot)
        slot = await self._idle.get()
        try:
            return await slot.complete(messages, kind)
        finally:
            self._idle.put_nowait(slot)

    def stats(self) -> dict:
        total: dict = {"slots": len(self.slots)}
        for slot in self.slots:
            for key, value in slot.stats().items():
                if isinstance(value, dict):
                    merged = total.setdefault(key, {})
                    for k, v in value.items():
                        merged[k] = merged.get(k, 0) + v
                else:
                    total[key] = total.get(key, 0) + value
        total["slots"] = len(self.slots)
        return total

    async def aclose(self) -> None:
        for slot in self.slots:
            await slot.aclose()


@contextlib.contextmanager
def openai_backend(cfg: JudgeConfig) -> Iterator:
    yield lambda: OpenAIBackend(cfg.model, base_url=cfg.base_url, **_openai_args(cfg))


@contextlib.contextmanager
def local_backend(cfg: JudgeConfig) -> Iterator:
    yield lambda: LocalBackend(cfg)


@contextlib.contextmanager
def llamacpp_backend(cfg: JudgeConfig) -> Iterator:
    """The server is started first and always stopped on the way out (normal exit, exception or Ctrl-C)."""
    from rualign.eval.server import llama_servers, resolve_gguf

    gguf = resolve_gguf(cfg.model)
    # Keyed by the file, not the server's random local port: a restarted server gives the same verdicts.
    identity = f"llamacpp:{Path(gguf).name}:{Path(gguf).stat().st_size}"
    # Each llama-cpp-python server runs one request at a time (more in flight only queue up into timeouts):
    # cfg.slots servers, cores/slots threads each, calls to an idle one.
    args = {**_openai_args(cfg), "batch_size": 1}
    with llama_servers(gguf, cfg.slots, n_ctx=cfg.n_ctx, start_timeout_s=cfg.server_start_timeout_s) as servers:
        yield lambda: SlotPool([OpenAIBackend(cfg.model, base_url=s.base_url, served_model=s.model_id,
                                              identity=identity, **args) for s in servers], identity)


def backend_factory(cfg: JudgeConfig):
    """A context manager yielding a zero-argument factory that builds the backend inside the event loop; which
    one is JUDGE_BACKENDS' row for cfg.backend."""
    from rualign.config import resolve

    return resolve(JUDGE_BACKENDS[cfg.backend].factory)(cfg)
