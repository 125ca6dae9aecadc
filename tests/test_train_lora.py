"""LoRA merge-and-export equals base + adapter; QLoRA needs CUDA; continue_adapter keeps training one adapter."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch

from rualign.errors import RualignError
from rualign.train import lora
from rualign.train.schema import LoraSpec, QLoraSpec, StageConfig


def test_merged_logits_equal_base_plus_adapter(tiny_model_dir, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    stage = StageConfig(name="s", method="sft", data="d", lora=LoraSpec(r=4, alpha=8, dropout=0.0))
    model, base = lora.build_trainable(stage, str(tiny_model_dir))
    assert base == str(tiny_model_dir)
    torch.manual_seed(0)
    with torch.no_grad():  # a fresh adapter is a no-op (B = 0): give it real weights
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.2)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    paths = lora.export(model, tokenizer, tmp_path)
    assert set(paths) == {"adapter", "model"}
    ids = tokenizer("Привет, как дела? Hello world", return_tensors="pt")["input_ids"]
    base_model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    with torch.no_grad():
        plain = base_model(ids).logits
        with_adapter = PeftModel.from_pretrained(base_model, paths["adapter"]).eval()(ids).logits
        merged = AutoModelForCausalLM.from_pretrained(paths["model"]).eval()(ids).logits
    assert (with_adapter - plain).abs().max() > 1e-3  # the adapter changes the model...
    torch.testing.assert_close(merged, with_adapter, atol=1e-4, rtol=1e-4)  # ...and merging keeps it exactly


def test_full_fine_tuning_exports_model_folder(tiny_model_dir, tmp_path):
    from transformers import AutoTokenizer

    stage = StageConfig(name="s", method="sft", data="d", full=True)
    model, _ = lora.build_trainable(stage, str(tiny_model_dir))
    assert lora.trainable_summary(model)["trainable_params"] == lora.trainable_summary(model)["total_params"]
    paths = lora.export(model, AutoTokenizer.from_pretrained(tiny_model_dir), tmp_path)
    assert paths == {"model": str(tmp_path / "model")} and (tmp_path / "model" / "config.json").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU error")
def test_qlora_without_cuda_is_a_clear_error(tiny_model_dir):
    stage = StageConfig(name="s", method="sft", data="d", qlora=QLoraSpec(r=4))
    with pytest.raises(RualignError, match="qlora needs a CUDA GPU"):
        lora.build_trainable(stage, str(tiny_model_dir))


def test_continue_adapter_reloads_parent_adapter_trainable(tiny_model_dir, tmp_path):
    from transformers import AutoTokenizer

    parent_stage = StageConfig(name="p", method="sft", data="d", lora=LoraSpec(r=4, alpha=8, dropout=0.0))
    model, base = lora.build_trainable(parent_stage, str(tiny_model_dir))
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.fill_(0.01)
    lora.export(model, AutoTokenizer.from_pretrained(tiny_model_dir), tmp_path / "p")
    (tmp_path / "p" / "manifest.json").write_text(json.dumps({"adapter_base": base}))
    child = StageConfig(name="c", method="sft", data="d", continue_adapter=True)
    model, child_base = lora.build_trainable(child, str(tmp_path / "p" / "merged"), continue_from=tmp_path / "p")
    assert child_base == str(tiny_model_dir)  # the adapter still applies to the original base
    b_weights = [p for n, p in model.named_parameters() if "lora_B" in n]
    assert b_weights and all(p.requires_grad for p in b_weights)
    assert all(torch.allclose(p, torch.full_like(p, 0.01)) for p in b_weights)
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "manifest.json").write_text(json.dumps({"adapter_base": None}))
    with pytest.raises(RualignError, match="no adapter to continue"):
        lora.build_trainable(child, str(tiny_model_dir), continue_from=tmp_path / "full")
