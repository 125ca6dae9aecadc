"""An interrupted stage resumes from its last checkpoint with the same data order and ends with the same
weights as an uninterrupted run."""

from __future__ import annotations

import pytest
import torch

from rualign.runs import read_jsonl
from rualign.train.run import run_training
from rualign.train.schema import TrainConfig
from test_train_sft import chat_rows, make_data, stage


class Interrupt(Exception):
    pass


def interrupt_after(step: int):
    from transformers import TrainerCallback

    class Stop(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == step:
                raise Interrupt(f"simulated kill after step {step}")

    return Stop()


def _weights(folder):
    from safetensors.torch import load_file

    return load_file(str(folder / "merged" / "model.safetensors"))


def test_interrupted_stage_resumes_to_the_same_weights(tiny_model_dir, tmp_path):
    data = make_data(tmp_path / "data", chat_rows(12))
    config = TrainConfig.model_validate({"model": str(tiny_model_dir), "seed": 3, "stages": [
        stage("sft", data, max_steps=8, save_steps=3, batch_size=2, samples=0,
              lora={"r": 4, "alpha": 8, "dropout": 0.1})]})
    straight = run_training(config, tmp_path / "straight")["sft"]
    with pytest.raises(Interrupt):
        run_training(config, tmp_path / "resumed", callbacks=[interrupt_after(5)])
    assert not (tmp_path / "resumed" / "sft" / "manifest.json").exists()
    assert (tmp_path / "resumed" / "sft" / "checkpoints" / "checkpoint-3").exists()
    resumed = run_training(config, tmp_path / "resumed")["sft"]
    assert resumed["resumed_from"] == "checkpoint-3" and straight["resumed_from"] is None
    assert resumed["config_hash"] == straight["config_hash"] and resumed["steps"] == 8
    a, b = _weights(tmp_path / "straight" / "sft"), _weights(tmp_path / "resumed" / "sft")
    assert a.keys() == b.keys()
    base = _weights_base(tiny_model_dir)
    assert any((a[k] - base[k]).abs().max() > 1e-4 for k in a if k in base)  # training changed something
    for key in a:
        torch.testing.assert_close(a[key], b[key], atol=1e-5, rtol=1e-4)
    log = read_jsonl(tmp_path / "resumed" / "sft" / "train_log.jsonl")
    steps = [r["step"] for r in log if "loss" in r]
    assert steps == list(range(1, 9))  # rows past the checkpoint were redone once, not duplicated
    straight_log = [r["loss"] for r in read_jsonl(tmp_path / "straight" / "sft" / "train_log.jsonl") if "loss" in r]
    assert [round(r["loss"], 4) for r in log if "loss" in r] == [round(x, 4) for x in straight_log]


def _weights_base(folder):
    from safetensors.torch import load_file

    return load_file(str(folder / "model.safetensors"))
