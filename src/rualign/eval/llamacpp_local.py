"""The embedded llama.cpp judge in process: llama-cpp-python's `Llama`, one instance per slot, no server.

Why not llama-cpp-python's OpenAI server (what this replaced): a judge call is one verdict token after ~1000
prompt tokens, and to return that token's top logprobs the server must run with `logits_all`, which computes
and copies the full-vocabulary logits of every prompt token (~15% of prompt evaluation for the 135M judge),
then log-softmaxes all of them and sorts the whole vocabulary in Python (~1 s a call). Here only the last
token's logits are computed and read. Everything else is the server's own code path: the prompt is the chat
handler's (the same tokens the server evaluates), and calls that generate text or constrain the first token
go through `Llama.create_chat_completion` with the server's request defaults. So replies match the server's
(tests/test_llamacpp_local.py) and the judge's identity, which names the weights, is unchanged.
"""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import numpy as np

from rualign.eval.judge_backends import LOGPROB_KINDS  # answered from the last prompt token's logits
from rualign.eval.judge_reply import JudgeReply, ReplyUsage, TopLogprob

# Request fields llama-cpp-python's server drops before calling create_chat_completion (server/app.py).
_SERVER_DROPS = {"n", "logit_bias_type", "user", "min_tokens"}


class _PromptCaptured(Exception):
    def __init__(self, prompt: list[int]):
        super().__init__("prompt captured")
        self.prompt = prompt


class _PromptOnly:
    """Stands in for the Llama a chat handler calls: tokenising goes to the real model, and the completion call
    the handler ends with raises with its prompt tokens instead of running."""

    def __init__(self, llm):
        self._llm = llm

    def __getattr__(self, name: str):
        return getattr(self._llm, name)

    def create_completion(self, prompt, **kwargs):
        raise _PromptCaptured(list(prompt))


def _template_handler(llm, template: str, stop_token: str | None):
    """A chat handler from a Jinja chat template (models.py's, without the `{% generation %}` markers that only
    transformers knows), stopping at the end of the model's turn as well as at EOS. Without one, llama.cpp
    falls back to Llama 2's [INST] format for a GGUF that has no template."""
    from llama_cpp import llama_chat_format

    def piece(token_id: int) -> str:
        return llm.detokenize([token_id], special=True).decode("utf-8") if token_id != -1 else ""

    plain = template.replace("{% generation %}", "").replace("{% endgeneration %}", "")
    stops = [llm.token_eos()]
    if stop_token is not None:
        stops += llm.tokenize(stop_token.encode(), add_bos=False, special=True)
    return llama_chat_format.Jinja2ChatFormatter(template=plain, eos_token=piece(llm.token_eos()),
                                                 bos_token=piece(llm.token_bos()),
                                                 stop_token_ids=stops).to_chat_handler()


class LlamaSlot:
    """One llama.cpp model instance answering one call at a time (a lock: the work runs in a thread, and a
    cancelled call's thread may still be evaluating). llama.cpp releases the GIL while it evaluates, so slots
    run in parallel on separate cores."""

    def __init__(self, gguf: str | Path, *, n_ctx: int, threads: int, identity: str,
                 chat_template: str | None = None, stop_token: str | None = None):
        import llama_cpp

        self.identity = identity
        self.llm = llama_cpp.Llama(str(gguf), n_ctx=n_ctx, n_threads=threads, n_threads_batch=threads,
                                   logits_all=False, verbose=False)
        if chat_template is not None:  # a GGUF without its own template (Gemma 3 270M base)
            self.llm.chat_handler = _template_handler(self.llm, chat_template, stop_token)
        self._lock = threading.Lock()
        self.requests = self.prompt_tokens_total = self.completion_tokens_total = 0

    # ------------------------------------------------------------------ prompt

    def _handler(self):
        # Llama.create_chat_completion's own choice of chat handler (the GGUF's template, or a named format).
        from llama_cpp import llama_chat_format

        llm = self.llm
        return (llm.chat_handler or llm._chat_handlers.get(llm.chat_format)
                or llama_chat_format.get_chat_completion_handler(llm.chat_format))

    def prompt_tokens(self, messages: list[dict]) -> list[int]:
        """The tokens the server would evaluate for these messages."""
        try:
            self._handler()(llama=_PromptOnly(self.llm), messages=messages, max_tokens=1)
        except _PromptCaptured as captured:
            return captured.prompt
        raise RuntimeError("the chat handler did not ask for a completion")

    def _evaluate(self, tokens: list[int]) -> np.ndarray:
        """Evaluate `tokens`, reusing the longest prefix already in the KV cache (the judge template's long
        instruction part, or the whole prompt when a call is asked again), and return the last token's logits."""
        from llama_cpp import Llama

        llm = self.llm
        keep = Llama.longest_token_prefix(llm.input_ids[: llm.n_tokens].tolist(), tokens)
        llm.n_tokens = min(keep, len(tokens) - 1)  # at least one token evaluated: its logits are the answer
        llm.eval(tokens[llm.n_tokens:])
        return np.ctypeslib.as_array(llm._ctx.get_logits_ith(-1), shape=(llm.n_vocab(),)).copy()

    # ------------------------------------------------------------------ calls

    def _top_logprobs(self, messages: list[dict], top: int) -> JudgeReply:
        """The first token's `top` most likely alternatives, as the server lists them: log-softmax in float32,
        ordered by logprob then by token id (both descending), one entry per distinct token text (several byte
        tokens of a split UTF-8 character all read as "")."""
        from llama_cpp import Llama

        tokens = self.prompt_tokens(messages)
        logprobs = Llama.logits_to_logprobs(self._evaluate(tokens))
        order = np.lexsort((np.arange(len(logprobs)), logprobs))[::-1][:top]
        listed: dict[str, float] = {}
        for token_id in order:  # a later token with the same text overwrites an earlier one's value ...
            listed[self._text(int(token_id))] = float(logprobs[token_id])
        best = int(order[0])  # the greedy choice, the reply's token
        listed[self._text(best)] = float(logprobs[best])  # ... except the reply token's own, set last
        return JudgeReply(text=self._text(best), top_logprobs=[TopLogprob(token=t, logprob=lp) for t, lp in listed.items()],
                          finish_reason="stop" if best == self.llm.token_eos() else "length",
                          usage=ReplyUsage(prompt_tokens=len(tokens), completion_tokens=1))

    def _text(self, token_id: int) -> str:
        return self.llm.detokenize([token_id], prev_tokens=[]).decode("utf-8", errors="ignore")

    def _chat(self, messages: list[dict], params: dict) -> JudgeReply:
        """A call through create_chat_completion with the server's request defaults (text, or a grammar-
        constrained first token; the prompt's prefix kept from the last call is reused there too)."""
        import llama_cpp
        from llama_cpp.server.types import CreateChatCompletionRequest

        body = CreateChatCompletionRequest(messages=messages, **params)
        kwargs = body.model_dump(exclude=_SERVER_DROPS)
        if body.grammar is not None:
            kwargs["grammar"] = llama_cpp.LlamaGrammar.from_string(body.grammar, verbose=False)
        reply = self.llm.create_chat_completion(**kwargs)
        choice, usage = reply["choices"][0], reply["usage"]
        return JudgeReply(text=choice["message"]["content"] or "", finish_reason=choice.get("finish_reason"),
                          usage=ReplyUsage(prompt_tokens=usage["prompt_tokens"],
                                           completion_tokens=usage["completion_tokens"]))

    def _complete(self, messages: list[dict], kind: str, params: dict) -> JudgeReply:
        with self._lock:
            self.requests += 1
            if kind in LOGPROB_KINDS:
                reply = self._top_logprobs(messages, int(params["top_logprobs"]))
            else:
                reply = self._chat(messages, params)
        self.prompt_tokens_total += reply.usage.prompt_tokens
        self.completion_tokens_total += reply.usage.completion_tokens
        return reply

    async def complete(self, messages: list[dict], kind: str, params: dict) -> JudgeReply:
        return await asyncio.to_thread(self._complete, messages, kind, params)

    def stats(self) -> dict:
        """The counters OpenAIBackend reports, so manifests read the same whichever engine judged."""
        return {"requests": self.requests, "retries": 0, "prompt_tokens": self.prompt_tokens_total,
                "completion_tokens": self.completion_tokens_total, "errors": {}}

    def close(self) -> None:
        self.llm.close()


class LlamaSlotBackend:
    """A LlamaSlot as a judge backend: `complete(messages, kind)` with the request parameters of that kind."""

    def __init__(self, slot: LlamaSlot, request_params):
        self.slot, self.identity, self._params = slot, slot.identity, request_params

    async def complete(self, messages: list[dict], kind: str) -> JudgeReply:
        return await self.slot.complete(messages, kind, self._params(kind))

    def stats(self) -> dict:
        return self.slot.stats()

    async def aclose(self) -> None:
        return None
