"""LoRA / QLoRA / full fine-tuning: build the trainable model, then export adapter + merged model.

Each stage's output holds a plain HF model folder (`merged/` for adapters, `model/` for full fine-tuning)
that the next stage and generation load like any base model. With `continue_adapter: true` a stage
instead reloads the parent's adapter on the parent's own base and keeps training it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rualign.errors import RualignError, require


def lora_config(spec: Any):
    from peft import LoraConfig

    return LoraConfig(r=spec.r, lora_alpha=spec.alpha, lora_dropout=spec.dropout,
                      target_modules=spec.target_modules, bias="none", task_type="CAUSAL_LM")


def _quantization_config(spec: Any):
    import torch

    if not torch.cuda.is_available():
        raise RualignError("qlora needs a CUDA GPU (4-bit bitsandbytes kernels); none is available here",
                           hint="use lora: {...} or full: true on this machine")
    require("bitsandbytes", "gpu", "QLoRA")
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type=spec.quant_type,
                              bnb_4bit_use_double_quant=spec.double_quant,
                              bnb_4bit_compute_dtype=torch.bfloat16)


def load_base(location: str, *, qlora: Any = None, trust_remote_code: bool = False):
    import torch
    from transformers import AutoModelForCausalLM

    kwargs: dict = {"dtype": torch.float32, "trust_remote_code": trust_remote_code, "use_safetensors": True}
    if qlora is not None:
        kwargs["quantization_config"] = _quantization_config(qlora)
        kwargs["dtype"] = torch.bfloat16
    model = AutoModelForCausalLM.from_pretrained(location, **kwargs)
    if qlora is not None:
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(model)
    return model


def build_trainable(stage: Any, start_model: str, *, continue_from: Path | None = None,
                    trust_remote_code: bool = False) -> tuple[Any, str]:
    """The model to train and the folder its adapter applies to (the `adapter_base` of the manifest).

    `continue_from` is the parent's stage folder when `continue_adapter` is set: its adapter is reloaded
    trainable on the base it was trained on.
    """
    from peft import PeftModel, get_peft_model

    if continue_from is not None:
        manifest = json.loads((continue_from / "manifest.json").read_text())
        base = manifest.get("adapter_base")
        if not base or not (continue_from / "adapter").exists():
            raise RualignError("continue_adapter: the parent stage has no adapter to continue",
                               path=continue_from, expected="a parent trained with lora or qlora")
        model = load_base(base, qlora=stage.qlora, trust_remote_code=trust_remote_code)
        model = PeftModel.from_pretrained(model, str(continue_from / "adapter"), is_trainable=True)
        return model, base
    model = load_base(start_model, qlora=stage.qlora, trust_remote_code=trust_remote_code)
    if stage.full:
        return model, start_model
    return get_peft_model(model, lora_config(stage.adapter_spec)), start_model


def trainable_summary(model: Any) -> dict:
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {"trainable_params": trainable, "total_params": total}


def export(model: Any, tokenizer: Any, stage_dir: Path, *, adapter_base: str | None = None) -> dict[str, str]:
    """Save adapter/ + merged/ (LoRA) or model/ (full), each with the tokenizer. Returns the paths.

    A QLoRA adapter is merged into a freshly loaded full-precision base (merging into 4-bit weights would
    round the update away)."""
    import torch
    from peft import PeftModel

    paths: dict[str, str] = {}
    if isinstance(model, PeftModel):
        model.save_pretrained(stage_dir / "adapter")
        tokenizer.save_pretrained(stage_dir / "adapter")
        paths["adapter"] = str(stage_dir / "adapter")
        if getattr(model.base_model.model, "is_loaded_in_4bit", False) and adapter_base:
            base = load_base(adapter_base)
            if len(tokenizer) > base.get_input_embeddings().weight.shape[0]:
                base.resize_token_embeddings(len(tokenizer))
            model = PeftModel.from_pretrained(base, str(stage_dir / "adapter"))
        merged = model.merge_and_unload()
        target = stage_dir / "merged"
    else:
        merged, target = model, stage_dir / "model"
    merged = merged.to(torch.float32)
    merged.config.pad_token_id = tokenizer.pad_token_id
    merged.save_pretrained(target, safe_serialization=True)
    tokenizer.save_pretrained(target)
    paths["model"] = str(target)
    return paths
