"""The `rualign train` config: a base model and a list of stages (sft, dpo, simpo, kto, orpo, rm, rlhf).

Common stage keys are fields here; method-specific keys (beta, gamma, ...) are written at the stage's top
level in YAML and validated against the method's own schema from `train/methods.py`, so an unknown key
names the method and its allowed keys. Lineage (parents, cycles) is checked when the whole file is read.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from rualign.config import Seed, Strict, table_key
from rualign.paths import SafeName


class LoraSpec(Strict):
    r: int = Field(16, ge=1)
    alpha: int = Field(32, ge=1)
    dropout: float = Field(0.05, ge=0.0, lt=1.0)
    target_modules: str | list[str] = "all-linear"


class QLoraSpec(LoraSpec):
    """4-bit base weights (bitsandbytes, CUDA only) with a LoRA adapter on top."""

    quant_type: Literal["nf4", "fp4"] = "nf4"
    double_quant: bool = True


# Keys that do not change a trained model: left out of every stage key (the plan's train node and the stage's
# manifest hash both come from StageConfig.key_fields).
COSMETIC = frozenset({"samples", "sample_max_new_tokens", "logging_steps", "save_steps", "save_total_limit"})


def _methods() -> dict:
    from rualign.train.methods import METHODS  # imported when a method is checked: it pulls in TRL's configs

    return METHODS


class StageConfig(Strict):
    name: SafeName                      # the stage folder under --out
    method: str
    parent: str | None = None           # default: the previous stage (None for the first stage = base model)
    data: str | dict[str, Any]          # a `rualign data` output folder, or an inline recipe mapping
    lora: LoraSpec | None = None        # default LoRA when neither full nor qlora is set
    qlora: QLoraSpec | None = None
    full: bool = False
    continue_adapter: bool = False      # keep training the parent's adapter instead of merging it first
    max_length: int = Field(2048, ge=8)
    epochs: float = Field(1.0, gt=0)
    max_steps: int | None = Field(None, ge=1)
    lr: float = Field(2.0e-4, gt=0)
    batch_size: int = Field(8, ge=1)
    grad_accum: int = Field(1, ge=1)
    warmup_ratio: float = Field(0.0, ge=0, lt=1)
    weight_decay: float = Field(0.0, ge=0)
    lr_scheduler: str = "linear"
    max_grad_norm: float = Field(1.0, gt=0)
    gradient_checkpointing: bool = False
    save_steps: int = Field(50, ge=1)    # checkpoint every N optimizer steps; an interrupted stage resumes there
    save_total_limit: int = Field(2, ge=1)
    logging_steps: int = Field(1, ge=1)
    precision: Literal["auto", "bf16", "fp32"] = "auto"
    samples: int = Field(4, ge=0)        # greedy generations on validation prompts written at the end
    sample_max_new_tokens: int = Field(64, ge=1)
    params: dict[str, Any] = Field(default_factory=dict)  # method-specific keys, validated per method

    @model_validator(mode="before")
    @classmethod
    def _collect_method_keys(cls, data: Any) -> Any:
        """Move keys that are not common stage keys into `params` (checked against the method below)."""
        if not isinstance(data, dict):
            return data
        common = set(cls.model_fields)
        extra = {k: v for k, v in data.items() if k not in common}
        if not extra:
            return data
        out = {k: v for k, v in data.items() if k in common}
        out["params"] = {**dict(data.get("params") or {}), **extra}
        return out

    @field_validator("data")
    @classmethod
    def _inline_recipe(cls, value: str | dict[str, Any]) -> str | dict[str, Any]:
        """An inline recipe is checked with the config (names, numbers), not only when the stage runs."""
        if isinstance(value, dict):
            from pydantic import ValidationError

            from rualign.data.schema import Recipe

            try:
                Recipe.model_validate(value)
            except ValidationError as exc:
                first = exc.errors()[0]
                where = ".".join(str(p) for p in first["loc"])
                raise ValueError(f"inline recipe: '{where}': {first['msg']}") from None
        return value

    _known_method = field_validator("method")(table_key(_methods, "method"))

    @model_validator(mode="after")
    def _check(self) -> "StageConfig":
        from rualign.train.methods import METHODS

        chosen = [k for k, on in (("lora", self.lora is not None), ("qlora", self.qlora is not None),
                                  ("full", self.full)) if on]
        if len(chosen) > 1:
            raise ValueError(f"stage '{self.name}': choose one of lora, qlora, full (got {', '.join(chosen)})")
        if not chosen:
            object.__setattr__(self, "lora", LoraSpec())
        if self.continue_adapter and self.full:
            raise ValueError(f"stage '{self.name}': continue_adapter needs an adapter, not full fine-tuning")
        spec = METHODS[self.method]
        allowed = sorted(spec.params.model_fields)
        unknown = sorted(set(self.params) - set(allowed))
        if unknown:
            raise ValueError(f"unknown key(s) {', '.join(unknown)} for method '{self.method}' "
                             f"(allowed: {', '.join(allowed) or 'none'})")
        # Store the validated params with defaults filled in, so the config hash sees the effective values.
        validated = spec.params.model_validate(self.params).model_dump(mode="json")
        object.__setattr__(self, "params", validated)
        return self

    @property
    def adapter_kind(self) -> str:
        return "full" if self.full else ("qlora" if self.qlora is not None else "lora")

    @property
    def adapter_spec(self) -> LoraSpec | None:
        return self.qlora if self.qlora is not None else self.lora

    def key_fields(self, *, without: frozenset[str] = frozenset()) -> dict[str, Any]:
        """The stage settings that decide its trained model: the one source of the plan's train-node key and
        the stage manifest's hash (`parent` is keyed by its own hash, not its name)."""
        return self.model_dump(mode="json", exclude=set(COSMETIC | {"parent"} | without))

    def method_params(self) -> Strict:
        from rualign.train.methods import METHODS

        return METHODS[self.method].params.model_validate(self.params)


class TrainConfig(Strict):
    model: str = "default"
    chat_template: str = "model"        # model | chatml_no_system
    seed: Seed = 42
    report_to: list[Literal["tensorboard", "wandb", "mlflow"]] = Field(default_factory=list)
    trust_remote_code: bool = False
    stages: list[StageConfig] = Field(min_length=1)

    @model_validator(mode="after")
    def _lineage(self) -> "TrainConfig":
        names = [s.name for s in self.stages]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"duplicate stage name(s): {', '.join(dupes)}")
        for i, stage in enumerate(self.stages):
            if stage.parent is not None and stage.parent not in names:
                raise ValueError(f"stage '{stage.name}': parent '{stage.parent}' is not a stage "
                                 f"(stages: {', '.join(names)})")
            if stage.parent == stage.name:
                raise ValueError(f"stage '{stage.name}' is its own parent")
        order = self.execution_order()  # raises on cycles
        if order and self.parent_of(order[0]) is not None:
            raise ValueError("no stage starts from the base model")
        return self

    def parent_of(self, stage: StageConfig) -> str | None:
        if stage.parent is not None:
            return stage.parent
        index = [s.name for s in self.stages].index(stage.name)
        return self.stages[index - 1].name if index > 0 else None

    def stage(self, name: str) -> StageConfig:
        for stage in self.stages:
            if stage.name == name:
                return stage
        raise KeyError(name)

    def execution_order(self) -> list[StageConfig]:
        """Stages ordered so each runs after its parent; a cycle is an error naming its stages."""
        done: list[str] = []
        pending = list(self.stages)
        while pending:
            ready = [s for s in pending if self.parent_of(s) is None or self.parent_of(s) in done]
            if not ready:
                cycle = " -> ".join(f"{s.name} (parent {self.parent_of(s)})" for s in pending)
                raise ValueError(f"stage parents form a cycle: {cycle}")
            done.append(ready[0].name)
            pending.remove(ready[0])
        return [self.stage(n) for n in done]

    def lineage(self, name: str) -> list[str]:
        chain, current = [], self.stage(name)
        while current is not None:
            chain.append(current.name)
            parent = self.parent_of(current)
            current = self.stage(parent) if parent else None
        return list(reversed(chain))
