"""SFT stages end to end on a tiny random model: loss falls, outputs and manifest, lineage, reuse, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rualign.errors import ConfigError, RualignError
from rualign.runs import read_jsonl, write_json, write_jsonl
from rualign.train.run import run_stage, run_training
from rualign.train.schema import TrainConfig


def chat_rows(n: int = 8) -> list[dict]:
    return [{"id": f"r{i}", "source": "test", "kind": "chat",
             "messages": [{"role": "user", "content": f"Сколько будет {i} плюс {i}?"},
                          {"role": "assistant", "content": f"Будет {2 * i}."}],
             "answer_tokens": 4, "meta": {}} for i in range(n)]


def make_data(folder: Path, rows: list[dict], kind: str = "chat") -> Path:
    write_jsonl(folder / "train.jsonl", rows)
    write_jsonl(folder / "val.jsonl", rows[:2])
    write_json(folder / "manifest.json", {"stage": "data", "config_hash": "test", "kind": kind})
    return folder


def stage(name: str, data: Path, **extra) -> dict:
    base = {"name": name, "method": "sft", "data": str(data), "max_steps": 4, "batch_size": 4, "lr": 3e-3,
            "max_length": 64, "samples": 1, "sample_max_new_tokens": 4, "precision": "fp32", "save_steps": 100}
    return {**base, **extra}


@pytest.fixture(scope="module")
def two_stages(tiny_model_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("sft")
    data = make_data(root / "data", chat_rows())
    config = TrainConfig.model_validate({"model": str(tiny_model_dir), "seed": 7, "stages": [
        stage("base", data, full=True, max_steps=30, lr=3e-3),
        stage("child", data, lora={"r": 4, "alpha": 8, "dropout": 0.0}, max_steps=2)]})
    manifests = run_training(config, root / "out")
    return config, root, manifests


def test_sft_loss_falls_on_a_memorisable_set(two_stages):
    _, root, manifests = two_stages
    log = [r for r in read_jsonl(root / "out" / "base" / "train_log.jsonl") if "loss" in r]
    assert [r["step"] for r in log] == list(range(1, 31))
    first, last = log[0]["loss"], sum(r["loss"] for r in log[-3:]) / 3
    assert last < first - 2.0, (first, last)
    assert all({"lr", "grad_norm", "tokens_per_s"} <= set(r) for r in log[1:])
    assert manifests["base"]["steps"] == 30 and manifests["base"]["tokens"] > 0


def test_stage_outputs_and_manifest(two_stages, tiny_model_dir):
    _, root, manifests = two_stages
    base, child = root / "out" / "base", root / "out" / "child"
    assert (base / "model" / "model.safetensors").exists() and not (base / "adapter").exists()
    assert (child / "adapter" / "adapter_config.json").exists() and (child / "merged" / "config.json").exists()
    assert not (base / "checkpoints").exists()  # only kept for an interrupted stage
    m = json.loads((child / "manifest.json").read_text())
    assert m["stage"] == "train" and m["method"] == "sft" and m["parent"] == "base"
    assert m["lineage"] == ["base", "child"] and m["init"] == "merged parent model"
    assert m["start_model"] == str(base / "model") and m["base_model"] == str(tiny_model_dir)
    assert m["adapter_base"] == str(base / "model") and m["adapter"] == "lora"
    assert m["precision"] == "fp32" and m["precision_reason"] == "requested in the stage config"
    assert m["rows"]["train"]["kept"] == 8 and m["rows"]["train"]["dropped_no_trainable_tokens"] == 0
    assert "[[" in m["mask_example"] and m["data_kind"] == "chat"
    assert m["pad_token"] and m["timing"]["tokens_per_s"] > 0
    assert {"config_hash", "data_hash", "stage_config_hash", "versions", "finished_at"} <= set(m)
    samples = read_jsonl(child / "samples.jsonl")
    assert len(samples) == 1 and samples[0]["id"] == "r0" and samples[0]["answer_tokens"] >= 1
    assert manifests["child"]["config_hash"] == m["config_hash"]


def test_finished_stage_is_skipped_and_a_changed_parent_is_not(two_stages):
    config, root, manifests = two_stages
    again = run_stage(config, config.stage("child"), root / "out")
    assert again["skipped"] is True and again["config_hash"] == manifests["child"]["config_hash"]
    # same child config, but another seed changes the parent hash and the child key with it
    other = config.model_copy(update={"seed": 8})
    from rualign.train.run import load_stage_data, stage_key
    from rualign.train.methods import METHODS

    data_dir = load_stage_data(config.stage("child"), METHODS["sft"], root / "out")[0]
    parent = json.loads((root / "out" / "base" / "manifest.json").read_text())
    assert stage_key(other, config.stage("child"), data_dir, parent) != stage_key(
        config, config.stage("child"), data_dir, parent)


def test_data_kind_must_match_method(tiny_model_dir, tmp_path):
    data = make_data(tmp_path / "prefs", chat_rows(2), kind="preference")
    config = TrainConfig.model_validate({"model": str(tiny_model_dir), "stages": [stage("s", data)]})
    with pytest.raises(ConfigError) as err:
        run_training(config, tmp_path / "out")
    assert "'sft'" in err.value.render() and "chat" in err.value.render() and "'preference'" in err.value.render()


def test_data_folder_without_manifest_is_refused(tiny_model_dir, tmp_path):
    (tmp_path / "half").mkdir()
    write_jsonl(tmp_path / "half" / "train.jsonl", chat_rows(2))
    config = TrainConfig.model_validate({"model": str(tiny_model_dir), "stages": [stage("s", tmp_path / "half")]})
    with pytest.raises(ConfigError, match="not a finished `rualign data` output"):
        run_training(config, tmp_path / "out")


def test_unfinished_parent_is_named(tiny_model_dir, tmp_path):
    data = make_data(tmp_path / "data", chat_rows(2))
    config = TrainConfig.model_validate({"model": str(tiny_model_dir),
                                         "stages": [stage("first", data), stage("second", data)]})
    with pytest.raises(RualignError, match="parent stage 'first'"):
        run_stage(config, config.stage("second"), tmp_path / "out")
