"""Sharded training on two CPU ranks (gloo), launched with the shipped configs/accelerate/fsdp-cpu.yaml
(and deepspeed-zero3.yaml with 2 processes, when DeepSpeed is installed):
FSDP2 full-shard trains a full fine-tune stage and a LoRA stage on top of it; the exported model/,
adapter/ and merged/ are gathered from both shards by accelerate's `get_state_dict` and equal a
one-process run's (same seed, same global batch, same data order). A 2-rank run killed (SIGKILL) after a
checkpoint resumes from the sharded (DCP) checkpoint with the same per-step losses and final weights.

Equal within float tolerance is possible because the runs do the same arithmetic up to reduction order:
two ranks x batch 2 = one process x batch 4 (accelerate hands consecutive per-rank batches of one shuffled
order to the ranks), LoRA dropout is 0 (ranks draw different masks than one process would), and the loss
is normalised by the global token count in both (average_tokens_across_devices)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from rualign.runs import read_jsonl
from rualign.train.run import run_training
from rualign.train.schema import TrainConfig
from test_train_sft import chat_rows, stage

ROOT = Path(__file__).resolve().parents[1]
FSDP_CPU = ROOT / "configs" / "accelerate" / "fsdp-cpu.yaml"
LORA = {"r": 4, "alpha": 8, "dropout": 0.0}


def _data(folder: Path, n: int = 8) -> Path:
    from rualign.runs import write_json, write_jsonl

    write_jsonl(folder / "train.jsonl", chat_rows(n))  # no val.jsonl: no evaluation pass, faster
    write_json(folder / "manifest.json", {"stage": "data", "config_hash": "test", "kind": "chat"})
    return folder


def _config(model: Path, data: Path, batch_size: int, **lora_stage) -> dict:
    common = dict(batch_size=batch_size, samples=0, lr=3e-3)
    return {"model": str(model), "seed": 11, "stages": [
        stage("full", data, full=True, max_steps=2, **common),
        stage("lora", data, lora=LORA, **{"max_steps": 2, **lora_stage, **common})]}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _launch(args: list[str], *, check: bool = True, accelerate_config: Path = FSDP_CPU) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "RUALIGN_QUIET": "1",
           "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT / "tests"), os.environ.get("PYTHONPATH", "")])}
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(accelerate_config),
           "--main_process_port", str(_free_port()), *args]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900, cwd=ROOT)
    if check:
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    return proc


def _write_config(path: Path, cfg: dict) -> Path:
    import yaml

    path.write_text(yaml.safe_dump(cfg))
    return path


def _tensors(path: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(path))


def _assert_same_weights(a: Path, b: Path, base: dict | None = None) -> None:
    x, y = _tensors(a), _tensors(b)
    assert x.keys() == y.keys() and x
    if base is not None:  # training moved the weights, so equality below is not trivially the base
        assert any((x[k] - base[k]).abs().max() > 1e-3 for k in x if k in base)
    for key in x:
        torch.testing.assert_close(x[key], y[key], atol=2e-5, rtol=1e-4, msg=lambda m, k=key: f"{a}: {k}: {m}")


def _losses(stage_dir: Path) -> list[tuple[int, float]]:
    return [(r["step"], r["loss"]) for r in read_jsonl(stage_dir / "train_log.jsonl") if "loss" in r]


@pytest.fixture(scope="module")
def single(tiny_model_dir, tmp_path_factory):
    """The one-process reference: batch 4 = the two ranks' global batch of 2 x 2."""
    root = tmp_path_factory.mktemp("sharded")
    data = _data(root / "data")
    lora_steps = {"max_steps": 4, "save_steps": 2}
    run_training(TrainConfig.model_validate(_config(tiny_model_dir, data, 4, **lora_steps)), root / "single")
    return root, data, lora_steps


def _assert_equals_single(root: Path, out: Path, kind: str, tiny_model_dir: Path) -> None:
    for name in ("full", "lora"):
        manifest = json.loads((out / name / "manifest.json").read_text())
        assert manifest["world_size"] == 2 and manifest["sharding"] == kind
        one = json.loads((root / "single" / name / "manifest.json").read_text())
        assert one["sharding"] is None and manifest["steps"] == one["steps"]
        assert manifest["tokens"] == one["tokens"]  # every row seen once per step across the two ranks
        for (s1, l1), (s2, l2) in zip(_losses(root / "single" / name), _losses(out / name), strict=True):
            assert s1 == s2 and l1 == pytest.approx(l2, abs=1e-4)
    base = _tensors(tiny_model_dir / "model.safetensors")
    _assert_same_weights(root / "single/full/model/model.safetensors", out / "full/model/model.safetensors", base)
    full = _tensors(root / "single/full/model/model.safetensors")
    _assert_same_weights(root / "single/lora/merged/model.safetensors", out / "lora/merged/model.safetensors", full)
    _assert_same_weights(root / "single/lora/adapter/adapter_model.safetensors",
                         out / "lora/adapter/adapter_model.safetensors")


def test_fsdp_two_cpu_ranks_export_full_and_lora_equal_one_process(single, tiny_model_dir):
    root, data, lora_steps = single
    config = _write_config(root / "fsdp.yaml", _config(tiny_model_dir, data, 2, **lora_steps))
    started = time.perf_counter()
    _launch(["-m", "rualign", "train", str(config), "--out", str(root / "fsdp")])
    print(f"2-rank FSDP launch: {time.perf_counter() - started:.1f} s")
    _assert_equals_single(root, root / "fsdp", "fsdp2", tiny_model_dir)


def _deepspeed_on_cpu() -> str | None:
    """None when DeepSpeed imports and picks its CPU accelerator with a gloo backend, else why not."""
    proc = subprocess.run([sys.executable, "-c", "from deepspeed.accelerator import get_accelerator as g; "
                           "a = g(); print(a.device_name(), a.communication_backend_name())"],
                          capture_output=True, text=True, timeout=300)
    if proc.returncode != 0:
        return proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else "deepspeed does not import"
    words = proc.stdout.split()
    return None if words[-2:] == ["cpu", "gloo"] else f"DeepSpeed accelerator here: {proc.stdout.strip()}"


def test_deepspeed_zero3_two_cpu_ranks_export_equals_one_process(single, tiny_model_dir):
    """The shipped deepspeed-zero3.yaml (with 2 processes and fp32, to compare with the fp32 one-process run)
    on DeepSpeed's CPU accelerator (gloo); the weights are consolidated by the engine itself
    (zero3_save_16bit_model -> engine._zero3_consolidated_16bit_state_dict via accelerate.get_state_dict)."""
    import yaml

    why = _deepspeed_on_cpu()
    if why is not None:
        pytest.skip(f"DeepSpeed CPU accelerator unavailable: {why}")
    root, data, lora_steps = single
    shipped = yaml.safe_load((ROOT / "configs" / "accelerate" / "deepspeed-zero3.yaml").read_text())
    assert shipped["deepspeed_config"]["zero3_save_16bit_model"] is True  # what the export relies on
    launch_cfg = _write_config(root / "zero3-cpu.yaml", {**shipped, "num_processes": 2, "mixed_precision": "no"})
    config = _write_config(root / "zero3.yaml", _config(tiny_model_dir, data, 2, **lora_steps))
    started = time.perf_counter()
    _launch(["-m", "rualign", "train", str(config), "--out", str(root / "zero3")], accelerate_config=launch_cfg)
    print(f"2-rank ZeRO-3 launch: {time.perf_counter() - started:.1f} s")
    _assert_equals_single(root, root / "zero3", "zero3", tiny_model_dir)


def test_sharded_fsdp_resume_after_kill_same_losses(single, tiny_model_dir):
    """Rank 0 is SIGKILLed when step 3 of the LoRA stage ends (checkpoint-2 is on disk, sharded); the
    rerun resumes there and ends with the one-process run's per-step losses and weights."""
    root, data, lora_steps = single
    config = _write_config(root / "resume.yaml", _config(tiny_model_dir, data, 2, **lora_steps))
    out = root / "resume"
    started = time.perf_counter()
    killed = _launch([str(ROOT / "tests" / "sharded_entry.py"), str(config), str(out), "3"], check=False)
    assert killed.returncode != 0, "the run was expected to die"
    lora_dir = out / "lora"
    assert (out / "full" / "manifest.json").exists() and not (lora_dir / "manifest.json").exists()
    checkpoint = lora_dir / "checkpoints" / "checkpoint-2"
    assert (checkpoint / "pytorch_model_fsdp_0").is_dir(), sorted(p.name for p in checkpoint.parent.iterdir())
    assert (checkpoint / "rng_state_0.pth").exists() and (checkpoint / "rng_state_1.pth").exists()
    _launch(["-m", "rualign", "train", str(config), "--out", str(out)])
    print(f"2-rank FSDP kill + resume launches: {time.perf_counter() - started:.1f} s")
    manifest = json.loads((lora_dir / "manifest.json").read_text())
    assert manifest["resumed_from"] == "checkpoint-2" and manifest["steps"] == 4
    assert manifest["sharding"] == "fsdp2"
    resumed, straight = _losses(lora_dir), _losses(root / "single" / "lora")
    assert [s for s, _ in resumed] == [1, 2, 3, 4]  # steps past the checkpoint were redone once
    assert [loss for _, loss in resumed] == pytest.approx([loss for _, loss in straight], abs=1e-4)
    _assert_same_weights(root / "single/lora/adapter/adapter_model.safetensors",
                         lora_dir / "adapter" / "adapter_model.safetensors")
