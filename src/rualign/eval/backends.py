"""Generation backends: transformers in-process (hf), any OpenAI-compatible endpoint (openai), vLLM (vllm).

The openai backend (eval/endpoint.py) is shared with the judge. Each backend turns a batch of conversations into `Completion`s in the same order. The orchestration
(resume, records, ordering, progress) lives in `generate.py` and is shared by all three.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Protocol

from rualign.errors import RualignError, require
from rualign.eval.gen_config import Generation
from rualign.runs import stable_hash

log = logging.getLogger(__name__)


_DEFAULTS = Generation.model_fields  # the one source of generation defaults


@dataclass(frozen=True)
class GenParams:
    """The sampling part of gen_config.Generation, what a backend's generate() takes (same defaults)."""

    max_new_tokens: int = _DEFAULTS["max_new_tokens"].default
    temperature: float = _DEFAULTS["temperature"].default  # 0 = greedy
    top_p: float = _DEFAULTS["top_p"].default
    seed: int = _DEFAULTS["seed"].default

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1:
            raise RualignError("max_new_tokens must be at least 1", path="--max-new-tokens")
        if self.temperature < 0:
            raise RualignError("temperature must be >= 0", path="--temperature")
        if not 0 < self.top_p <= 1:
            raise RualignError("top_p must be in (0, 1]", path="--top-p")


@dataclass
class Completion:
    text: str
    finish_reason: str  # "stop" | "length" | whatever a server reports
    completion_tokens: int | None  # in the generating model's tokenizer, when known


class Backend(Protocol):
    name: str
    model: str
    adapter: str | None
    batch_size: int

    def prompt_length(self, messages: list[dict]) -> int: ...

    def generate(self, batch: list[list[dict]], params: GenParams) -> list[Completion | None]:
        """One completion per conversation, in order; None for a request that failed after retries."""

    def settings(self) -> dict[str, Any]: ...


def bf16_autocast_ok() -> bool:
    """True when this CPU has native bf16 (avx512_bf16 / amx) and a bf16 matmul agrees with fp32."""
    import torch

    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            flags = handle.read()
    except OSError:
        return False
    if "avx512_bf16" not in flags and "amx_bf16" not in flags:
        return False
    a, b = torch.randn(64, 64), torch.randn(64, 64)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = (a @ b).float()
    return bool(torch.allclose(low, a @ b, rtol=0.05, atol=0.5))


class HFBackend:
    """In-process transformers model with continuous batching (decode.py); batching never changes greedy output."""

    name = "hf"

    def __init__(self, model: str, *, adapter: str | None = None, chat_template: str = "model",
                 batch_size: int = 8, bf16: str = "off", threads: int | None = None, trust_remote_code: bool = False):
        import torch

        if threads:  # on a shared CPU, fewer OpenMP threads than cores avoids spin-wait collapse (measured 30x)
            torch.set_num_threads(threads)

        from rualign.models import load_model, load_tokenizer

        self.model, self.adapter, self.batch_size = model, adapter, max(1, batch_size)
        self.chat_template = chat_template
        if bf16 not in ("auto", "on", "off"):
            raise RualignError(f"unknown bf16 setting '{bf16}'", path="--bf16", expected="auto, on or off")
        # A visible GPU is used with bf16 weights (the usual inference setup); on CPU weights stay fp32 and
        # bf16 is at most an autocast, off by default (see gen_config.Generation.bf16 for why).
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        cuda_bf16 = self.device == "cuda" and torch.cuda.is_bf16_supported()
        self.tokenizer = load_tokenizer(model, chat_template=chat_template, trust_remote_code=trust_remote_code)
        self.lm = load_model(model, adapter=adapter, dtype=torch.bfloat16 if cuda_bf16 else None,
                             trust_remote_code=trust_remote_code)
        if adapter:  # merged once for inference: no per-token LoRA matmuls (merged == base+adapter, tested)
            self.lm = self.lm.merge_and_unload()
        self.lm = self.lm.to(self.device).eval()
        self.dtype = str(next(self.lm.parameters()).dtype).replace("torch.", "")
        self.stop_ids = self._stop_ids()
        self.pad_id = self._pad_id()
        self.autocast = self.device == "cpu" and (bf16 == "on" or (bf16 == "auto" and bf16_autocast_ok()))
        self._torch = torch
        from rualign.eval import decode  # imports transformers: only when an hf backend is made

        self._decode = decode
        self.continuous = decode.supported(self.lm)  # else transformers.generate, one fixed batch at a time

    def _stop_ids(self) -> set[int]:
        ids = {self.tokenizer.eos_token_id}
        configured = getattr(getattr(self.lm, "generation_config", None), "eos_token_id", None)
        ids.update(configured if isinstance(configured, (list, tuple)) else [configured])
        im_end = self.tokenizer.convert_tokens_to_ids("<|im_end|>")  # the ChatML turn end, if in the vocab
        if isinstance(im_end, int) and im_end != self.tokenizer.unk_token_id:
            ids.add(im_end)
        ids.discard(None)
        if not ids:
            raise RualignError(f"model '{self.model}' defines no end-of-sequence token")
        return ids

    def _pad_id(self) -> int:
        # Prefer a pad distinct from every stop token, so padding after a finished row can never be read
        # as (or hide) an end of answer; inputs are masked anyway, outputs are cut at the first stop token.
        pad = self.tokenizer.pad_token_id
        if pad is not None and pad not in self.stop_ids:
            return pad
        for candidate in self.tokenizer.all_special_ids:
            if candidate not in self.stop_ids:
                return candidate
        return min(self.stop_ids)

    def settings(self) -> dict[str, Any]:
        """What can change an answer besides GenParams (the answers cache key). Batched decoding in bf16
        (autocast or bf16 weights) changes greedy output with the batch, so batch_size counts then; in
        fp32 it does not (tested) and is left out."""
        settings = {"chat_template": self.chat_template, "device": self.device, "dtype": self.dtype,
                    "autocast": "bf16" if self.autocast else None}
        if self.autocast or self.dtype != "float32":
            settings["batch_size"] = self.batch_size
        return settings

    def encode(self, messages: list[dict]) -> list[int]:
        text = self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def prompt_length(self, messages: list[dict]) -> int:
        return len(self.encode(messages))

    def stream(self, conversations: list[list[dict]], params: GenParams) -> Iterator[tuple[int, Completion]]:
        """(index, completion) for every conversation, in the order answers finish (continuous batching;
        only when `self.continuous`: other models go through `generate`, one fixed batch at a time)."""
        decoder = self._decode.ContinuousDecoder(self.lm, stop_ids=self.stop_ids, pad_id=self.pad_id,
                                                 slots=self.batch_size, choose=self._chooser(params))
        with self._autocast():
            for index, tokens, finish in decoder.run([self.encode(m) for m in conversations],
                                                     params.max_new_tokens, self._row_maker(params)):
                text = self.tokenizer.decode(tokens, skip_special_tokens=True)
                yield index, Completion(text=text.strip(), finish_reason=finish, completion_tokens=len(tokens))

    def generate(self, batch: list[list[dict]], params: GenParams) -> list[Completion]:
        if not self.continuous:
            return self._generate_fixed(batch, params)
        completions: list[Completion | None] = [None] * len(batch)
        for index, completion in self.stream(batch, params):
            completions[index] = completion
        return completions  # type: ignore[return-value]

    def _autocast(self) -> Any:
        if self.autocast:
            return self._torch.autocast("cpu", dtype=self._torch.bfloat16)
        return contextlib.nullcontext()

    def _row_maker(self, params: GenParams) -> Callable[[int, list[int]], Any]:
        torch = self._torch

        def make_row(index: int, prompt: list[int]) -> Any:
            generator = None
            if params.temperature > 0:
                # Seeded by the prompt itself: the same prompt samples the same answer in any batch.
                generator = torch.Generator(device=self.device)
                generator.manual_seed(params.seed + int(stable_hash(prompt, 8), 16) % (2 ** 31))
            return self._decode._Row(index=index, generator=generator)

        return make_row

    def _chooser(self, params: GenParams) -> Callable[[Any, list], Any]:
        torch = self._torch
        if params.temperature <= 0:
            return lambda logits, rows: logits.argmax(dim=-1)
        from transformers.generation.logits_process import TemperatureLogitsWarper, TopPLogitsWarper

        warpers = [TemperatureLogitsWarper(params.temperature)]
        if params.top_p < 1:
            warpers.append(TopPLogitsWarper(params.top_p))

        def sample(logits: Any, rows: list) -> Any:
            for warper in warpers:
                logits = warper(None, logits)
            probs = torch.softmax(logits, dim=-1)
            return torch.cat([torch.multinomial(probs[r], 1, generator=row.generator)
                              for r, row in enumerate(rows)])

        return sample

    def _generate_fixed(self, batch: list[list[dict]], params: GenParams) -> list[Completion]:
        """transformers.generate over one left-padded batch (models whose cache decode.py does not handle)."""
        torch = self._torch
        encoded = [self.encode(m) for m in batch]
        width = max(len(ids) for ids in encoded)
        input_ids = torch.full((len(batch), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for row, ids in enumerate(encoded):  # LEFT padding: every row's last prompt token is aligned
            input_ids[row, width - len(ids):] = torch.tensor(ids)
            mask[row, width - len(ids):] = 1
        kwargs: dict[str, Any] = {"max_new_tokens": params.max_new_tokens, "pad_token_id": self.pad_id,
                                  "eos_token_id": sorted(self.stop_ids)}
        if params.temperature > 0:
            kwargs.update(do_sample=True, temperature=params.temperature, top_p=params.top_p)
            # Seeded per batch content, so a rerun of the same batch samples the same tokens.
            torch.manual_seed(params.seed + int(stable_hash([m for m in batch], 8), 16) % (2 ** 31))
        else:
            kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        with torch.inference_mode(), self._autocast():
            output = self.lm.generate(input_ids=input_ids.to(self.device), attention_mask=mask.to(self.device),
                                      **kwargs)
        return [self._completion(row.tolist()) for row in output[:, width:].cpu()]

    def _completion(self, tokens: list[int]) -> Completion:
        for index, token in enumerate(tokens):
            if token in self.stop_ids:
                tokens, finish = tokens[:index], "stop"
                break
        else:
            finish = "length"
        text = self.tokenizer.decode(tokens, skip_special_tokens=True)
        return Completion(text=text.strip(), finish_reason=finish, completion_tokens=len(tokens))


class VLLMBackend:
    """vLLM in-process (GPU only); imported lazily so CPU installs never need it."""

    name = "vllm"

    def __init__(self, model: str, *, adapter: str | None = None, chat_template: str = "model",
                 batch_size: int = 256, seed: int = 0, trust_remote_code: bool = False):
        vllm = require("vllm", "gpu", "The vllm generation backend")
        import torch

        if not torch.cuda.is_available():
            raise RualignError("the vllm backend needs a CUDA GPU and none is visible",
                               hint="use --backend hf on CPU, or --backend openai with a running server")
        from rualign.models import load_tokenizer, resolve_model

        self.model, self.adapter, self.batch_size = model, adapter, max(1, batch_size)
        self.chat_template = chat_template
        self.tokenizer = load_tokenizer(model, chat_template=chat_template, trust_remote_code=trust_remote_code)
        self._vllm = vllm
        self.llm = vllm.LLM(model=resolve_model(model), seed=seed, enable_lora=bool(adapter),
                            trust_remote_code=trust_remote_code)

    def settings(self) -> dict[str, Any]:
        return {"chat_template": self.chat_template, "batch_size": self.batch_size}  # bf16 batches: see HFBackend

    def _render(self, messages: list[dict]) -> str:
        return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)

    def prompt_length(self, messages: list[dict]) -> int:
        return len(self._render(messages))

    def generate(self, batch: list[list[dict]], params: GenParams) -> list[Completion]:
        sampling = self._vllm.SamplingParams(max_tokens=params.max_new_tokens, temperature=params.temperature,
                                             top_p=params.top_p, seed=params.seed)
        lora = None
        if self.adapter:
            from vllm.lora.request import LoRARequest

            lora = LoRARequest("adapter", 1, self.adapter)
        outputs = self.llm.generate([self._render(m) for m in batch], sampling, lora_request=lora, use_tqdm=False)
        return [Completion(text=o.outputs[0].text.strip(), finish_reason=o.outputs[0].finish_reason or "stop",
                           completion_tokens=len(o.outputs[0].token_ids)) for o in outputs]
