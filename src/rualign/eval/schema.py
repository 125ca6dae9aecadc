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
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from rualign.config import Strict, load_yaml, validate
from rualign.errors import ConfigError
from rualign.redact import redact, redact_text


class JudgeConfig(Strict):
    name: str | None = None  # shown in score.json; defaults to the spec
    backend: Literal["openai", "llamacpp", "local"] = "openai"
    base_url: str | None = None  # openai backend only
    model: str = "default"
    api_key_env: str | None = None  # NAME of the env var holding the key; the key itself is never stored
    mode: Literal["logprob", "verdict"] = "logprob"
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
    n_ctx: int = Field(4096, ge=512)  # llamacpp backend: context of the started server
    server_start_timeout_s: float = Field(120.0, gt=0)
    cache: str | None = None  # SQLite path; default $RUALIGN_HOME/judge_cache.sqlite

    @field_validator("api_key_env")
    @classmethod
    def _env_name(cls, value: str | None) -> str | None:
        # A pasted key in place of the variable name would end up in manifests; refuse it early.
        if value is not None and (not value.replace("_", "").isalnum() or value.startswith(("sk-", "Bearer"))):
            raise ValueError("must be the NAME of an environment variable (e.g. OPENAI_API_KEY), not a key")
        return value

    @model_validator(mode="after")
    def _needs_url(self) -> "JudgeConfig":
        if self.backend == "openai" and not self.base_url:
            raise ValueError("the openai backend needs base_url (e.g. http://127.0.0.1:8000/v1)")
        return self

    def display_name(self) -> str:
        if self.name:
            return redact_text(self.name)
        if self.backend == "openai":
            return redact_text(f"openai:{self.model}@{self.base_url}")
        return f"{self.backend}:{self.model}"

    def public(self) -> dict:
        """The config as recorded in manifests: no secrets (only the env var's name; URL userinfo redacted)."""
        return redact(self.model_dump(mode="json"))


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


_KINDS = ("llamacpp", "local", "openai")


def _spec_fields(spec: str) -> dict:
    kind, sep, rest = spec.partition(":")
    if kind not in _KINDS and Path(spec).suffix in (".yaml", ".yml"):
        return load_yaml(spec, JudgeConfig).model_dump(exclude_unset=True)
    if not sep or not rest or kind not in _KINDS:
        raise ConfigError(f"cannot read judge spec '{spec}'", path="--judge",
                          expected="llamacpp:default, local:<model>, openai:<model>@<base_url> or a YAML file")
    if kind in ("llamacpp", "local"):
        return {"backend": kind, "model": rest}
    match = re.fullmatch(r"(.+?)@(https?://.+)", rest)
    if not match:
        raise ConfigError(f"cannot read judge spec '{spec}'", path="--judge",
                          expected="openai:<model>@<base_url>, e.g. openai:gpt-4o@https://api.openai.com/v1")
    return {"backend": "openai", "model": match.group(1), "base_url": match.group(2)}
