"""Reward models and online RL: the `rm` stage's model and the `rlhf` stage's TRL config + trainer.

`rm` trains a sequence-classification model with one output (a scalar reward) on preference pairs; its
exported folder (`merged/` or `model/`) is what an `rlhf` stage's `reward_model:` loads. `rlhf` runs GRPO
or RLOO; TRL has one config class per algorithm, so the table names `RLHFConfig` (a GRPOConfig that
also records which algorithm and which keys were set) and `rlhf_trainer` builds the matching trainer.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from trl import GRPOConfig

from rualign.errors import RualignError


def build_reward_model(stage: Any, start_model: str, *, continue_from: Path | None = None,
                       trust_remote_code: bool = False) -> tuple[Any, str]:
    """`rm`'s model: the start model with a fresh one-output score head (+ LoRA unless `full`)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForSequenceClassification

    from rualign.train import lora

    if continue_from is not None:
        raise RualignError(f"stage '{stage.name}': continue_adapter is not supported for method 'rm' "
                           "(the parent is a generator, the reward model a classifier)",
                           hint="remove continue_adapter; the rm stage starts from the parent's merged model")
    kwargs: dict = {"num_labels": 1, "dtype": torch.float32, "trust_remote_code": trust_remote_code,
                    "use_safetensors": True}
    if stage.qlora is not None:
        kwargs["quantization_config"] = lora._quantization_config(stage.qlora)
        kwargs["dtype"] = torch.bfloat16
    model = AutoModelForSequenceClassification.from_pretrained(start_model, **kwargs)
    if stage.full:
        return model, start_model
    spec = stage.adapter_spec
    # SEQ_CLS makes peft train and save the new score head too (modules_to_save).
    config = LoraConfig(r=spec.r, lora_alpha=spec.alpha, lora_dropout=spec.dropout,
                        target_modules=spec.target_modules, bias="none", task_type="SEQ_CLS")
    return get_peft_model(model, config), start_model


@dataclasses.dataclass
class RLHFConfig(GRPOConfig):
    """GRPOConfig + the algorithm; for RLOO the keys that were set are replayed into an RLOOConfig."""

    algorithm: str = "grpo"

    def __post_init__(self):
        defaults = {f.name: f.default for f in dataclasses.fields(GRPOConfig)
                    if f.default is not dataclasses.MISSING}
        # Captured before GRPOConfig.__post_init__ derives fields, so replaying them is what the user set.
        self._given = {f.name: getattr(self, f.name) for f in dataclasses.fields(GRPOConfig)
                       if f.name not in defaults or getattr(self, f.name) != defaults[f.name]
                       or f.name in ("beta", "num_generations")}
        super().__post_init__()

    def for_rloo(self):
        from trl import RLOOConfig

        names = {f.name for f in dataclasses.fields(RLOOConfig)}
        return RLOOConfig(**{k: v for k, v in self._given.items() if k in names})


def rlhf_config_kwargs(params: Any, ctx: Any) -> dict:
    stage = ctx.stage
    generation_batch = stage.batch_size * stage.grad_accum
    if generation_batch % params.num_generations:
        raise RualignError(f"stage '{stage.name}': batch_size x grad_accum ({generation_batch}) must be a "
                           f"multiple of num_generations ({params.num_generations})",
                           hint="each prompt's completions are compared within one generation batch")
    kwargs = {"algorithm": params.algorithm, "num_generations": params.num_generations,
              "max_completion_length": params.max_completion_length, "beta": params.beta,
              "temperature": params.temperature}
    if "max_length" in {f.name for f in dataclasses.fields(GRPOConfig)}:  # older TRL: no cap on prompt+completion
        kwargs["max_length"] = None
    return kwargs


def rlhf_trainer_kwargs(ctx: Any) -> dict:
    """The reward model (an `rm` stage's output or a folder) and its tokenizer."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from rualign.train.preference import stage_or_folder

    params = ctx.stage.method_params()
    location = stage_or_folder(params.reward_model, ctx, "reward_model")
    try:
        reward = AutoModelForSequenceClassification.from_pretrained(
            location, num_labels=1, trust_remote_code=ctx.config.trust_remote_code, use_safetensors=True)
        reward_tokenizer = AutoTokenizer.from_pretrained(location)
    except (OSError, ValueError) as exc:
        raise RualignError(f"cannot load the reward model: {exc.__class__.__name__}: {str(exc).splitlines()[0]}",
                           path=location, expected="a sequence-classification model folder (an `rm` stage)") from exc
    if reward.config.num_labels != 1:
        raise RualignError(f"the reward model has {reward.config.num_labels} outputs", path=location,
                           expected="one output (num_labels=1), as an `rm` stage trains")
    if reward_tokenizer.pad_token_id is None:
        reward_tokenizer.pad_token = reward_tokenizer.eos_token
    reward.config.pad_token_id = reward_tokenizer.pad_token_id
    reward.eval()
    ctx.info["reward_model"] = {"model": location, "source": params.reward_model}
    return {"reward_funcs": [reward], "reward_processing_classes": [reward_tokenizer]}


def rlhf_trainer(*, model: Any, args: RLHFConfig, **kwargs: Any):
    from trl import GRPOTrainer, RLOOTrainer

    if args.algorithm == "rloo":
        return RLOOTrainer(model=model, args=args.for_rloo(), **kwargs)
    return GRPOTrainer(model=model, args=args, **kwargs)
