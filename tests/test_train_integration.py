"""The embedded default model fine-tuned with LoRA for a few steps through `rualign train`; the merged model
loads like any model and generates text."""

from __future__ import annotations

import json

import pytest

from rualign.cli import main
from rualign.runs import read_jsonl

CONFIG = """\
model: default
stages:
  - name: sft
    method: sft
    data:
      tokenizer: column
      val_fraction: 0.2
      sources:
        - {name: grandmaster, format: grandmaster, path: "bundled:grandmaster", filters: {answer_tokens: {max: 250}}}
    lora: {r: 8, alpha: 16, dropout: 0.05, target_modules: all-linear}
    max_steps: 3
    batch_size: 2
    max_length: 256
    lr: 2.0e-4
    samples: 2
    sample_max_new_tokens: 16
"""


@pytest.mark.slow
def test_default_model_lora_sft_then_merged_model_generates(tmp_path, capsys):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    (tmp_path / "train.yaml").write_text(CONFIG)
    assert main(["train", str(tmp_path / "train.yaml"), "--out", str(tmp_path / "out")]) == 0
    stage = tmp_path / "out" / "sft"
    manifest = json.loads((stage / "manifest.json").read_text())
    assert manifest["steps"] == 3 and manifest["precision"] in ("bf16", "fp32") and manifest["precision_reason"]
    assert manifest["data_kind"] == "chat" and manifest["rows"]["train"]["kept"] > 0
    assert "[[" in manifest["mask_example"] and "<|im_end|>]]" in manifest["mask_example"]
    samples = read_jsonl(stage / "samples.jsonl")
    assert len(samples) == 2 and all(s["answer"].strip() for s in samples)

    tokenizer = AutoTokenizer.from_pretrained(stage / "merged")
    assert tokenizer.pad_token_id != tokenizer.eos_token_id
    model = AutoModelForCausalLM.from_pretrained(stage / "merged").eval()
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": "Назови столицу России."}],
                                           add_generation_prompt=True, return_tensors="pt", return_dict=True)
    with torch.no_grad():
        out = model.generate(**prompt, max_new_tokens=12, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    text = tokenizer.decode(out[0, prompt["input_ids"].shape[1]:], skip_special_tokens=True)
    assert len(text.strip()) > 3
    # the second run reuses the finished stage
    capsys.readouterr()
    assert main(["train", str(tmp_path / "train.yaml"), "--out", str(tmp_path / "out")]) == 0
    assert "skipped (finished)" in capsys.readouterr().out


def test_cli_reports_bad_config_without_traceback(tmp_path, capsys):
    (tmp_path / "bad.yaml").write_text("stages:\n  - {name: a, method: dpx, data: d}\n")
    assert main(["train", str(tmp_path / "bad.yaml"), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "bad.yaml:2" in err and "unknown method 'dpx'" in err and "Traceback" not in err
    (tmp_path / "ok.yaml").write_text("stages:\n  - {name: a, method: sft, data: d}\n")
    assert main(["train", str(tmp_path / "ok.yaml"), "--out", str(tmp_path / "out"), "--stage", "zz"]) == 2
    assert "no stage named 'zz'" in capsys.readouterr().err
