"""Generation settings: the one source of every generation default, the backend table, and the one function
that builds a generation backend.

`Generation` is `eval.generation` in an experiment file, and `rualign generate`'s flags are derived from its
fields (commands/generate.py, checked by a test), so the two cannot drift. `GENERATION_BACKENDS` is read by the schema
(backend names, required keys), the plan and the answers cache (`output_key`: which settings can change an
answer) and `make_generation_backend` (how to build one).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from rualign.config import Seed, Strict, env_var_name, missing_needs, resolve, table_key
from rualign.errors import RualignError

VLLM_MIN_BATCH = 64  # vLLM schedules its own batches; fewer sequences in flight only waste the GPU


@dataclass(frozen=True)
class GenerationBackend:
    """One row of GENERATION_BACKENDS."""

    make: str                       # "module:function" (gen, model, adapter, chat_template, trust_remote_code)
    batch_invariant: bool           # True: batch_size never changes an answer, so it is not part of the key
    needs: tuple[str, ...] = ()     # keys this backend requires
    adapter: bool = True            # can apply a LoRA adapter itself
    description: str = ""


_M = "rualign.eval.gen_config"
GENERATION_BACKENDS: dict[str, GenerationBackend] = {
    # hf: batched decoding in bf16 (CPU autocast or GPU bf16 weights) changes greedy output with the batch size.
    "hf": GenerationBackend(f"{_M}:_hf", batch_invariant=False, description="transformers in-process"),
    "openai": GenerationBackend(f"{_M}:_openai", batch_invariant=True, needs=("base_url",), adapter=False,
                                description="any OpenAI-compatible endpoint (batch_size = requests in flight)"),
    "vllm": GenerationBackend(f"{_M}:_vllm", batch_invariant=False, description="vLLM in-process (GPU)"),
}


class Generation(Strict):
    """How answers are generated (the defaults of `rualign generate` and of `eval.generation`)."""

    backend: str = Field("hf", description=f"one of {', '.join(GENERATION_BACKENDS)}")
    max_new_tokens: int = Field(1024, ge=1, description="longest answer, in the model's tokens")
    temperature: float = Field(0.0, ge=0, allow_inf_nan=False, description="0 = greedy")
    top_p: float = Field(1.0, gt=0, le=1, allow_inf_nan=False, description="nucleus sampling (temperature > 0)")
    seed: Seed = Field(0, description="sampling seed")
    batch_size: int = Field(16, ge=1, description="hf: rows decoded together (continuous batching); openai: "
                                                  f"requests in flight; vllm: at least {VLLM_MIN_BATCH}")
    # Off by default, in `rualign run` and `rualign generate` alike: on a 2-core avx512_bf16 CPU it gave no
    # speed-up for a 135M model and made batched greedy output differ from one-at-a-time output (fp32 keeps
    # them identical). A GPU always generates with bf16 weights; this switch is about CPU autocast only.
    bf16: Literal["auto", "on", "off"] = Field("off", description="hf on CPU: bf16 autocast (auto = only when "
                                                                  "the CPU has native bf16)")
    threads: int | None = Field(None, ge=1, description="hf on CPU: torch threads (1 is much faster when "
                                                        "other jobs share the cores)")
    base_url: str | None = Field(None, description="openai: the endpoint, e.g. http://127.0.0.1:8080/v1")
    api_key_env: str | None = Field(None, description="openai: NAME of the env var holding the API key")

    _env_name = field_validator("api_key_env")(env_var_name)
    _known_backend = field_validator("backend")(table_key(GENERATION_BACKENDS, "generation backend"))

    @model_validator(mode="after")
    def _needs(self) -> "Generation":
        missing = missing_needs(self, GENERATION_BACKENDS[self.backend].needs)
        if missing:
            raise ValueError(f"the {self.backend} generation backend needs {', '.join(repr(k) for k in missing)}")
        return self

    def params(self) -> Any:
        from rualign.eval.backends import GenParams

        return GenParams(max_new_tokens=self.max_new_tokens, temperature=self.temperature, top_p=self.top_p,
                         seed=self.seed)

    def output_key(self) -> dict[str, Any]:
        """Every setting that can change an answer: the plan's answers key. Not the key's env name, not
        threads; batch_size only where the backend's row says it can change answers; the URL without
        credentials."""
        from rualign.eval.endpoint import endpoint_key

        exclude = {"api_key_env", "threads"} | ({"batch_size"} if GENERATION_BACKENDS[self.backend].batch_invariant
                                                 else set())
        data = self.model_dump(mode="json", exclude=exclude)
        data["base_url"] = endpoint_key(self.base_url) if self.base_url else None
        return data


def make_generation_backend(gen: Generation, model: str, *, adapter: str | None = None,
                            chat_template: str = "model", trust_remote_code: bool = False) -> Any:
    """The backend for `gen`, built the same way by `rualign generate` and `rualign run`."""
    row = GENERATION_BACKENDS[gen.backend]
    if adapter and not row.adapter:
        raise RualignError(f"--adapter is not supported by the {gen.backend} backend; serve the adapted model "
                           "instead", path="--adapter")
    return resolve(row.make)(gen, model, adapter=adapter, chat_template=chat_template,
                             trust_remote_code=trust_remote_code)


def _hf(gen: Generation, model: str, **kwargs: Any) -> Any:
    from rualign.eval.backends import HFBackend

    return HFBackend(model, batch_size=gen.batch_size, bf16=gen.bf16, threads=gen.threads, **kwargs)


def _vllm(gen: Generation, model: str, **kwargs: Any) -> Any:
    from rualign.eval.backends import VLLMBackend

    return VLLMBackend(model, batch_size=max(gen.batch_size, VLLM_MIN_BATCH), seed=gen.seed, **kwargs)


def _openai(gen: Generation, model: str, *, adapter: str | None = None, chat_template: str = "model",
            trust_remote_code: bool = False) -> Any:
    from rualign.eval.endpoint import OpenAIBackend

    # chat_template and trust_remote_code belong to the server that serves the model.
    return OpenAIBackend(model, base_url=gen.base_url, api_key_env=gen.api_key_env, batch_size=gen.batch_size,
                         key_path="--api-key-env")
