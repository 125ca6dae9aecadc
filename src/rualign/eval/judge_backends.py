"""Judge backends: one `complete(messages, kind)` call returning a JudgeReply (eval/judge_reply.py), the
record the judge cache stores, so judge.py never cares whether the verdict came from an HTTP server or an
in-process model.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter, defaultdict
from pathlib import Path
from typing import Iterator

from rualign.eval.endpoint import OpenAIBackend
from rualign.eval.judge_reply import JudgeReply, ReplyUsage, TopLogprob, checked_value  # noqa: F401 (re-export)
from rualign.eval.pointwise import DIGITS, SCORE_GRAMMAR
from rualign.eval.schema import JUDGE_BACKENDS, JudgeConfig


# One Latin verdict letter, nothing else (GBNF, as llama.cpp's server takes it).
VERDICT_GRAMMAR = 'root ::= [ABC]'
VERDICT_LETTERS = ["A", "B", "C"]
# logit_bias is clipped to [-100, 100] by OpenAI; +100 on the three letters leaves every other token no chance.
LETTER_BIAS = 100


def constraint_params(cfg: JudgeConfig, choices: str) -> dict:
    """The request fields that restrict the first token to one of `choices` (the verdict letters "ABC", or the
    pointwise digits), per JudgeConfig.constraint()."""
    method = cfg.constraint()
    if method == "guided_choice":  # vLLM's OpenAI server before 0.12 (removed there)
        return {"guided_choice": list(choices)}
    if method == "structured_outputs":  # vLLM's OpenAI server from 0.10 (StructuredOutputsParams(choice=...))
        return {"structured_outputs": {"choice": list(choices)}}
    if method == "regex":  # SGLang's OpenAI server
        return {"regex": f"[{choices}]"}
    if method == "logit_bias":  # letters only: the schema refuses logit_bias in pointwise mode
        return {"logit_bias": {str(cfg.verdict_token_ids[c]): LETTER_BIAS for c in VERDICT_LETTERS}}
    # llama.cpp (the local backend ignores the fields and masks its logits)
    return {"grammar": VERDICT_GRAMMAR if choices == "ABC" else SCORE_GRAMMAR}


# Call kinds whose first-token top logprobs are read ("score": pointwise mode's digit, eval/pointwise.py).
LOGPROB_KINDS = ("logprob", "score")


def request_params(cfg: JudgeConfig, kind: str) -> dict:
    """Sampling parameters of one call kind ("logprob", "constrained", "verdict"; pointwise: "score",
    "score_constrained", "score_text"); part of the cache key."""
    if kind in LOGPROB_KINDS:
        return {"temperature": cfg.temperature, "max_tokens": 1, "logprobs": True,
                "top_logprobs": cfg.top_logprobs}
    if kind == "constrained":
        return {"temperature": 0.0, "max_tokens": 1, **constraint_params(cfg, "ABC")}
    if kind == "score_constrained":
        return {"temperature": 0.0, "max_tokens": 1, **constraint_params(cfg, DIGITS)}
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

    def _logprob(self, messages: list[dict]) -> JudgeReply:
        import torch

        input_ids = self._encode(messages)
        with torch.no_grad():
            logits = self.model(input_ids=input_ids).logits[0, -1].float()
        logprobs = torch.log_softmax(logits, dim=-1)
        values, indices = torch.topk(logprobs, k=self.cfg.top_logprobs)
        top = [TopLogprob(token=self.tokenizer.decode([int(i)]), logprob=float(v)) for v, i in zip(values, indices)]
        return JudgeReply(text=top[0].token, top_logprobs=top, finish_reason="length",
                          usage=ReplyUsage(prompt_tokens=int(input_ids.shape[1]), completion_tokens=1))

    def _generate(self, messages: list[dict]) -> JudgeReply:
        import torch

        input_ids = self._encode(messages)
        with torch.no_grad():
            out = self.model.generate(input_ids=input_ids, attention_mask=torch.ones_like(input_ids),
                                      max_new_tokens=self.cfg.max_tokens, do_sample=False,
                                      pad_token_id=self.tokenizer.pad_token_id or self.tokenizer.eos_token_id)
        new = out[0, input_ids.shape[1]:]
        finish = "length" if new.shape[0] >= self.cfg.max_tokens else "stop"
        return JudgeReply(text=self.tokenizer.decode(new, skip_special_tokens=True), finish_reason=finish,
                          usage=ReplyUsage(prompt_tokens=int(input_ids.shape[1]), completion_tokens=int(new.shape[0])))

    def _constrained(self, messages: list[dict], choices: str = "ABC") -> JudgeReply:
        """The first token restricted to `choices` (letters A / B / C, or pointwise digits): the most likely."""
        import torch

        input_ids = self._encode(messages)
        with torch.no_grad():
            logits = self.model(input_ids=input_ids).logits[0, -1].float()
        letters = {c: self.tokenizer.encode(c, add_special_tokens=False) for c in choices}
        scores = {c: float(logits[ids[0]]) for c, ids in letters.items() if len(ids) == 1}
        return JudgeReply(text=max(scores, key=scores.get), finish_reason="length",
                          usage=ReplyUsage(prompt_tokens=int(input_ids.shape[1]), completion_tokens=1))

    async def complete(self, messages: list[dict], kind: str) -> JudgeReply:
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

    async def complete(self, messages: list[dict], kind: str) -> JudgeReply:
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
        """The slots' counters summed (nested counters, like errors by kind, summed per key)."""
        counts: Counter[str] = Counter()
        nested: dict[str, Counter[str]] = defaultdict(Counter)
        for slot in self.slots:
            for key, value in slot.stats().items():
                if isinstance(value, dict):
                    nested[key].update(value)
                else:
                    counts[key] += value
        return {"slots": len(self.slots), **counts, **{key: dict(value) for key, value in nested.items()}}

    async def aclose(self) -> None:
        for slot in self.slots:
            await slot.aclose()


@contextlib.contextmanager
def openai_backend(cfg: JudgeConfig) -> Iterator:
    yield lambda: OpenAIBackend(cfg.model, base_url=cfg.base_url, **_openai_args(cfg))


@contextlib.contextmanager
def local_backend(cfg: JudgeConfig) -> Iterator:
    yield lambda: LocalBackend(cfg)


def llamacpp_judge(model: str) -> tuple[Path, str, dict]:
    """A llamacpp judge model's GGUF, its identity (what its cached calls are keyed by) and the chat template
    rualign supplies for it, if any (an embedded model whose GGUF has none)."""
    from rualign.eval.server import resolve_gguf
    from rualign.models import EMBEDDED
    from rualign.runs import stable_hash

    gguf = resolve_gguf(model)
    # Keyed by the weights: the same GGUF gives the same verdicts whichever process serves it ...
    identity = f"llamacpp:{Path(gguf).name}:{Path(gguf).stat().st_size}"
    entry = EMBEDDED.get(model.strip().lower())
    if entry is None or entry.chat_template is None:
        return gguf, identity, {}
    # ... and by the template where rualign supplies it.
    return (gguf, f"{identity}:template-{stable_hash(entry.chat_template, 8)}",
            {"chat_template": entry.chat_template, "stop_token": entry.stop_token})


@contextlib.contextmanager
def llamacpp_backend(cfg: JudgeConfig) -> Iterator:
    """The GGUF loaded in process, cfg.slots times with cores/slots threads each, calls to an idle slot
    (eval/llamacpp_local.py says why not a server); the models are freed on the way out."""
    import os

    from rualign.errors import require
    from rualign.eval.llamacpp_local import LlamaSlot, LlamaSlotBackend

    require("llama_cpp", "demo", "The llamacpp judge")
    gguf, identity, chat = llamacpp_judge(cfg.model)
    threads = max(1, (os.cpu_count() or 1) // cfg.slots)
    slots: list[LlamaSlot] = []
    try:
        for _ in range(cfg.slots):
            slots.append(LlamaSlot(gguf, n_ctx=cfg.n_ctx, threads=threads, identity=identity, **chat))
        params = lambda kind: request_params(cfg, kind)  # noqa: E731
        yield lambda: SlotPool([LlamaSlotBackend(slot, params) for slot in slots], identity)
    finally:
        for slot in slots:
            slot.close()


def backend_factory(cfg: JudgeConfig):
    """A context manager yielding a zero-argument factory that builds the backend inside the event loop; which
    one is JUDGE_BACKENDS' row for cfg.backend."""
    from rualign.config import resolve

    return resolve(JUDGE_BACKENDS[cfg.backend].factory)(cfg)
