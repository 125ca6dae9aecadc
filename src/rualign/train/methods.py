"""THE one table mapping a training method to TRL: data kind(s), TRL config + trainer, dataset builder,
method-specific keys. Adding a method = one `MethodSpec` row here + its builder + a test (DESIGN rule 1).

Classes and builders are named as "module:attribute" strings and imported only when a stage runs, so
reading or validating a config never imports torch/trl, and a row can point at a module written later.

Row contract (what `train/run.py` calls):
- `params`: a `Strict` pydantic model of the method-specific stage keys, with their defaults. The stage
  YAML writes them at the stage's top level (`beta: 0.1`); an unknown key is an error listing these fields.
- `build_dataset(rows, ctx) -> datasets.Dataset`: rows are canonical records (docs/formats.md) whose
  `kind` is in `data_kinds`; the result is what the TRL trainer expects (tokenized or not).
- `config_kwargs(params, ctx) -> dict`: extra kwargs for the TRL config class (default: the params as-is).
  Common keys (lr, batch_size, max_length, precision, save_steps, ...) are set by run.py, not here.
- `trainer_kwargs(ctx) -> dict`: extra kwargs for the trainer (e.g. ref_model, reward_model); default none.
  run.py always passes model, args, train_dataset, eval_dataset, processing_class and callbacks.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Literal

from pydantic import Field

from rualign.config import Strict, resolve
from rualign.train import preference as _pref  # light: pydantic schemas only, no torch/trl at import
from rualign.train.fast import FastSFTParams as _FastSFTParams  # light too: TRL is imported on first use


@dataclass(frozen=True)
class MethodSpec:
    name: str
    data_kinds: tuple[str, ...]          # accepted `kind` of the stage's data folder (manifest.json["kind"])
    params: type[Strict]                 # method-specific keys and defaults
    trl_config: str                      # "trl:SFTConfig"
    trl_trainer: str                     # "trl:SFTTrainer"
    build_dataset: str                   # "module:function" (rows, ctx) -> datasets.Dataset
    config_kwargs: str | None = None     # "module:function" (params, ctx) -> dict for the TRL config
    trainer_kwargs: str | None = None    # "module:function" (ctx) -> dict of extra trainer kwargs
    # "module:function" with lora.build_trainable's signature, for methods whose model is not a causal LM
    # (rm: a sequence-classification head); None = lora.build_trainable.
    build_model: str | None = None
    generates: bool = True               # False: the trained model is no generator (rm), write no samples
    description: str = ""

    def config_class(self):
        return resolve(self.trl_config)

    def trainer_class(self):
        return resolve(self.trl_trainer)


@dataclass
class StageContext:
    """What a dataset builder or a kwargs hook may need while one stage is being set up."""

    config: Any                          # schema.TrainConfig
    stage: Any                           # schema.StageConfig
    tokenizer: Any
    model: Any                           # the model being trained (a PeftModel for LoRA)
    start_model: str                     # folder the stage starts from (base model or the parent's merged/)
    out_root: Path                       # the `--out` folder; stage outputs are out_root / stage name
    precision: str                       # "bf16" or "fp32"
    info: dict = field(default_factory=dict)  # builders record what they did here, for the manifest
    log: Callable[[str], None] = print
    split: Literal["train", "val"] = "train"  # which rows build_dataset is building now
    rows: dict[str, dict] = field(default_factory=dict)  # per split: rows in / kept / dropped, for the manifest
    mask_example: str | None = None       # the first example's trainable tokens, marked (chat data)

    def stage_output(self, name: str) -> Path:
        return self.out_root / name

    def for_split(self, split: Literal["train", "val"]) -> "StageContext":
        """The same context building another split (info and rows are shared, so counts land in one place)."""
        return dataclasses.replace(self, split=split)

    def record_rows(self, counts: dict) -> None:
        self.rows[self.split] = counts


# ---- method-specific keys -------------------------------------------------------------------------------

class SFTParams(_FastSFTParams):  # + speed switches (train/fast.py)
    neftune_noise_alpha: float | None = Field(None, gt=0)


_P = "rualign.train.preference"

# ---- the table --------------------------------------------------------------------------------------------

METHODS: dict[str, MethodSpec] = {
    "sft": MethodSpec(
        name="sft", data_kinds=("chat",), params=SFTParams,
        trl_config="trl:SFTConfig", trl_trainer="rualign.train.fast:fast_sft_trainer",
        build_dataset="rualign.train.masks:build_sft_dataset",
        config_kwargs="rualign.train.fast:sft_config_kwargs", trainer_kwargs="rualign.train.fast:sft_trainer_kwargs",
        description="supervised fine-tuning, loss on assistant turns only"),
    # Preference methods: builders and trainer glue in train/preference.py (+ refcache.py, rlhf.py).
    "dpo": MethodSpec(
        name="dpo", data_kinds=("preference",), params=_pref.DPOParams,
        trl_config="trl:DPOConfig", trl_trainer="rualign.train.refcache:CachedDPOTrainer",
        build_dataset=f"{_P}:build_preference_dataset", config_kwargs=f"{_P}:dpo_config_kwargs",
        trainer_kwargs=f"{_P}:reference_trainer_kwargs",
        description="direct preference optimisation against a frozen reference (cached log-probs)"),
    "simpo": MethodSpec(
        name="simpo", data_kinds=("preference",), params=_pref.SimPOParams,
        trl_config="trl.experimental.cpo:CPOConfig",
        trl_trainer="rualign.train.pair_trainers:SimPOTrainer",
        build_dataset=f"{_P}:build_preference_dataset", config_kwargs=f"{_P}:simpo_config_kwargs",
        description="SimPO: length-normalised reward margin, no reference model (CPO trainer, cpo_alpha 0)"),
    "orpo": MethodSpec(
        name="orpo", data_kinds=("preference",), params=_pref.ORPOParams,
        trl_config="trl.experimental.orpo:ORPOConfig",
        trl_trainer="rualign.train.pair_trainers:CountingORPOTrainer",
        build_dataset=f"{_P}:build_preference_dataset", config_kwargs=f"{_P}:orpo_config_kwargs",
        description="ORPO: SFT loss + odds-ratio preference term, no reference model"),
    "kto": MethodSpec(
        name="kto", data_kinds=("kto", "preference"), params=_pref.KTOParams,
        trl_config="trl:KTOConfig", trl_trainer="rualign.train.refcache:CachedKTOTrainer",
        build_dataset=f"{_P}:build_kto_dataset", config_kwargs=f"{_P}:kto_config_kwargs",
        trainer_kwargs=f"{_P}:reference_trainer_kwargs",
        description="KTO on labelled completions; preference pairs are unpaired (chosen good, rejected bad)"),
    "rm": MethodSpec(
        name="rm", data_kinds=("preference",), params=_pref.RMParams,
        trl_config="trl:RewardConfig", trl_trainer="trl:RewardTrainer",
        build_dataset=f"{_P}:build_rm_dataset", config_kwargs=f"{_P}:rm_config_kwargs",
        build_model="rualign.train.rlhf:build_reward_model", generates=False,
        description="reward model (sequence classification, one score) on preference pairs"),
    "rlhf": MethodSpec(
        name="rlhf", data_kinds=("prompt", "preference", "chat"), params=_pref.RLHFParams,
        trl_config="rualign.train.rlhf:RLHFConfig", trl_trainer="rualign.train.rlhf:rlhf_trainer",
        build_dataset=f"{_P}:build_prompt_dataset", config_kwargs="rualign.train.rlhf:rlhf_config_kwargs",
        trainer_kwargs="rualign.train.rlhf:rlhf_trainer_kwargs",
        description="online RL (GRPO or RLOO) against a reward model trained by an `rm` stage"),
}


def get_method(name: str) -> MethodSpec:
    from rualign.errors import ConfigError

    if name not in METHODS:
        raise ConfigError(f"unknown method '{name}'", expected=f"one of {', '.join(METHODS)}")
    return METHODS[name]
