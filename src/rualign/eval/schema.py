"""Judge configuration: one strict schema for every backend, and the `--judge SPEC` shorthand forms.

SPEC forms:
  llamacpp:default            the embedded GGUF under llama.cpp's OpenAI-compatible server (started here)
  llamacpp:/path/model.gguf   any GGUF under the same server
  local:<model>               transformers in-process ('default', a folder or an HF id)
  openai:<model>@<base_url>   any OpenAI-compatible endpoint
  path/to/judge.yaml          a YAML file with the JudgeConfig keys below
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from rualign.config import Strict, env_var_name, load_yaml, missing_needs, table_key, validate
from rualign.errors import ConfigError
from rualign.redact import redact, redact_text


@dataclass(frozen=True)
class JudgeBackend:
    """One row of JUDGE_BACKENDS, the table read by the schema (names, required keys, SPEC forms), the plan
    (through JudgeConfig.judge_key) and the factory (judge_backends.backend_factory)."""

    factory: str                     # "module:function" (cfg) -> context manager yielding a zero-arg backend maker
    spec_form: str                   # the `--judge SPEC` form, for help and errors
    needs: tuple[str, ...] = ()      # keys this backend requires (openai: base_url, read from the SPEC's @url)


_B = "rualign.eval.judge_backends"
JUDGE_BACKENDS: dict[str, JudgeBackend] = {
    "llamacpp": JudgeBackend(f"{_B}:llamacpp_backend", "llamacpp:default or llamacpp:/path/model.gguf"),
    "local": JudgeBackend(f"{_B}:local_backend", "local:<model>"),
    "openai": JudgeBackend(f"{_B}:openai_backend", "openai:<model>@<base_url>", needs=("base_url",)),
}
# Every setting that changes a verdict: the judge key (plan node and judge manifest hash) is made of these.
# Not concurrency, rate limits, timeouts or the cache location.
# Judge modes: pairwise from verdict-letter logprobs, pairwise from a written verdict, or each answer scored
# alone (eval/pointwise.py). A mode's default template is used when `template` is not set.
MODES = ("logprob", "verdict", "pointwise")
DEFAULT_TEMPLATES = {"logprob": "judge_pairwise_v1", "verdict": "judge_pairwise_v1", "pointwise": "judge_pointwise_v1"}
VERDICT_KEYS = ("backend", "base_url", "model", "mode", "template", "temperature", "max_tokens", "top_logprobs",
                "n_ctx", "min_verdict_mass", "constrain")
# Verdict keys added later: keyed only when set, so configs without them keep their judge hashes and cache.
OPTIONAL_VERDICT_KEYS = ("verdict_token_ids",)


class JudgeConfig(Strict):
    name: str | None = None  # shown in score.json; defaults to the spec
    backend: str = Field("openai", description=f"one of {', '.join(JUDGE_BACKENDS)}")
    base_url: str | None = None  # openai backend only
    model: str = "default"
    api_key_env: str | None = None  # NAME of the env var holding the key; the key itself is never stored
    mode: Literal[MODES] = "logprob"
    template: str = "judge_pairwise_v1"
    concurrency: int = Field(4, ge=1, le=256)
    requests_per_minute: float | None = Field(None, gt=0)
    timeout_s: float = Field(120.0, gt=0)
    max_retries: int = Field(6, ge=0, le=50)
    backoff_base_s: float = Field(1.0, ge=0)  # tests use ~0.01 so fault runs stay fast
    backoff_max_s: float = Field(60.0, ge=0)
    temperature: float = Field(0.0, ge=0)
    max_tokens: int = Field(400, ge=1)  # verdict mode; logprob mode always asks for one token
    top_logprobs: int = Field(20, ge=1, le=20)
    # Logprob mode: a call whose verdict letters A/B/C carry less probability than this is not renormalised
    # into a verdict (the letters are noise next to what the judge meant to write).
    min_verdict_mass: float = Field(0.5, ge=0, le=1)
    # ... such a call is then asked again with its first token constrained to A/B/C and scored by that letter.
    # How (CONSTRAINTS): "grammar" (llama.cpp), "guided_choice" (vLLM < 0.12), "structured_outputs"
    # (vLLM >= 0.10), "regex" (SGLang), "logit_bias" (OpenAI and servers that honour it; needs verdict_token_ids).
    # "auto": grammar for llamacpp, the logits themselves for local, logit_bias for openai when
    # verdict_token_ids is given; "off" leaves the call unparsed.
    constrain: Literal["auto", "grammar", "guided_choice", "structured_outputs", "regex", "logit_bias", "off"] = "auto"
    # Token ids of the verdict letters in the judge's tokenizer ({A: id, B: id, C: id}), for logit_bias.
    verdict_token_ids: dict[Literal["A", "B", "C"], int] | None = None
    n_ctx: int = Field(4096, ge=512)  # llamacpp backend: context of each loaded instance
    # llamacpp backend: parallel slots = model instances in this process (eval/llamacpp_local.py), each with
    # cores/slots threads, one call at a time; calls go to an idle one.
    slots: int = Field(2, ge=1, le=16)
    cache: str | None = None  # SQLite path; default $RUALIGN_HOME/judge_cache.sqlite

    @model_validator(mode="after")
    def _mode_template(self) -> "JudgeConfig":
        # The template follows the mode unless set: `mode: pointwise` alone gets the pointwise template. Written
        # past validate_assignment (no re-validation loop) and left out of model_fields_set, so a YAML dumped
        # with exclude_unset and given another --mode still gets that mode's template.
        if "template" not in self.model_fields_set:
            self.__dict__["template"] = DEFAULT_TEMPLATES[self.mode]
        return self

    _env_name = field_validator("api_key_env")(env_var_name)
    _known_backend = field_validator("backend")(table_key(JUDGE_BACKENDS, "judge backend"))

    @model_validator(mode="after")
    def _needs(self) -> "JudgeConfig":
        missing = missing_needs(self, JUDGE_BACKENDS[self.backend].needs)
        if missing == ["base_url"]:
            raise ValueError(f"the {self.backend} backend needs base_url (e.g. http://127.0.0.1:8000/v1)")
        if missing:
            raise ValueError(f"the {self.backend} backend needs {', '.join(missing)}")
        return self

    @model_validator(mode="after")
    def _logit_bias_ids(self) -> "JudgeConfig":
        ids = self.verdict_token_ids
        if self.constrain == "logit_bias" and self.mode == "pointwise":
            raise ValueError("constrain: logit_bias biases the verdict letters A/B/C; pointwise mode scores digits: "
                             "use grammar, guided_choice, structured_outputs, regex or off")
        if self.constrain == "logit_bias" and ids is None:
            raise ValueError("constrain: logit_bias needs verdict_token_ids, the token ids of the letters in the "
                             "judge's tokenizer, e.g. {A: 32, B: 33, C: 34}")
        if ids is not None and (sorted(ids) != ["A", "B", "C"] or len(set(ids.values())) != 3
                                or min(ids.values()) < 0):
            raise ValueError(f"verdict_token_ids {ids} must give three different non-negative token ids, "
                             "one for each of A, B and C")
        return self

    def constraint(self) -> str | None:
        """How a low-mass logprob call is asked again with its first token constrained (None: it is not)."""
        if self.constrain != "auto":
            return None if self.constrain == "off" else self.constrain
        if self.backend == "llamacpp":
            return "grammar"
        if self.backend == "local":
            return "logits"  # the in-process model restricts its own next-token logits
        return "logit_bias" if self.verdict_token_ids is not None and self.mode != "pointwise" else None

    def display_name(self) -> str:
        if self.name:
            return redact_text(self.name)
        if self.base_url and "base_url" in JUDGE_BACKENDS[self.backend].needs:
            return redact_text(f"{self.backend}:{self.model}@{self.base_url}")
        return f"{self.backend}:{self.model}"

    def public(self) -> dict:
        """The config as recorded in manifests: no secrets (only the env var's name; URL userinfo redacted)."""
        return redact(self.model_dump(mode="json"))

    def judge_key(self) -> dict:
        """What decides the verdicts (VERDICT_KEYS), the one key the plan and the judge stage both hash. The
        endpoint is keyed without credentials: a rotated password is the same server."""
        from rualign.eval.endpoint import endpoint_key
        from rualign.models import JUDGE_WEIGHTS, is_default

        data = self.model_dump(mode="json", include=set(VERDICT_KEYS))
        data.update({k: v for k, v in self.model_dump(mode="json", include=set(OPTIONAL_VERDICT_KEYS)).items()
                     if v is not None})
        data["base_url"] = endpoint_key(self.base_url) if self.base_url else None
        if self.backend == "llamacpp" and is_default(self.model):
            data["weights"] = JUDGE_WEIGHTS  # the served file changed from Q4_1 to F16: other verdicts
        return data


def parse_judge_spec(spec: str | None, config_path: str | Path | None = None,
                     mode: str | None = None) -> JudgeConfig:
    """Build a JudgeConfig from `--judge SPEC` and/or `--judge-config FILE`; `--mode` wins over both.

    With both, the YAML supplies settings (concurrency, timeouts, ...) and the SPEC names the judge.
    """
    data: dict = {}
    if config_path is not None:
        data = load_yaml(config_path, JudgeConfig).model_dump(exclude_unset=True)
    if spec:
        data.update(_spec_fields(spec))
    if not data:
        raise ConfigError("no judge given", expected="--judge SPEC or --judge-config FILE",
                          hint="try --judge llamacpp:default")
    if mode is not None:
        data["mode"] = mode
    return validate(JudgeConfig, data, config_path or spec or "--judge")


def is_judge_spec(spec: str) -> bool:
    """`--judge SPEC` names a backend (as opposed to a YAML file path)."""
    return spec.partition(":")[0] in JUDGE_BACKENDS


def _spec_fields(spec: str) -> dict:
    kind, sep, rest = spec.partition(":")
    if kind not in JUDGE_BACKENDS and Path(spec).suffix in (".yaml", ".yml"):
        return load_yaml(spec, JudgeConfig).model_dump(exclude_unset=True)
    if not sep or not rest or kind not in JUDGE_BACKENDS:
        forms = ", ".join(row.spec_form for row in JUDGE_BACKENDS.values())
        raise ConfigError(f"cannot read judge spec '{spec}'", path="--judge", expected=f"{forms} or a YAML file")
    if "base_url" not in JUDGE_BACKENDS[kind].needs:
        return {"backend": kind, "model": rest}
    match = re.fullmatch(r"(.+?)@(https?://.+)", rest)
    if not match:
        raise ConfigError(f"cannot read judge spec '{spec}'", path="--judge",
                          expected=f"{JUDGE_BACKENDS[kind].spec_form}, e.g. openai:gpt-4o@https://api.openai.com/v1")
    return {"backend": kind, "model": match.group(1), "base_url": match.group(2)}
