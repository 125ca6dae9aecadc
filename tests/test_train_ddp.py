"""Two-process DDP on CPU (gloo): `torchrun` and `accelerate launch` with the shipped multi-cpu config both
start 2 ranks, finish, and give a loss curve of the same shape as one process with the same global batch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from rualign.runs import read_jsonl
from rualign.train.run import run_training
from rualign.train.schema import TrainConfig
from test_train_sft import chat_rows, make_data, stage

ROOT = Path(__file__).resolve().parents[1]


def _config_yaml(path: Path, model: Path, data: Path, batch_size: int) -> Path:
    import yaml

    cfg = {"model": str(model), "seed": 5,
           "stages": [stage("sft", data, full=True, max_steps=8, batch_size=batch_size, lr=3e-3, samples=0)]}
    path.write_text(yaml.safe_dump(cfg))
    return path


def _losses(out: Path) -> list[float]:
    return [r["loss"] for r in read_jsonl(out / "sft" / "train_log.jsonl") if "loss" in r]


def _launch(prefix: list[str], config: Path, out: Path) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "RUALIGN_QUIET": "1",
           "PYTHONPATH": str(ROOT / "src") + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.run([*prefix, "-m", "rualign", "train", str(config), "--out", str(out)], env=env,
                          capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    return json.loads((out / "sft" / "manifest.json").read_text())


def _same_shape(single: list[float], multi: list[float]) -> None:
    import numpy as np

    assert len(single) == len(multi) == 8
    assert multi[-1] < multi[0] - 0.5 and single[-1] < single[0] - 0.5
    assert np.corrcoef(single, multi)[0, 1] > 0.9
    assert abs(single[-1] - multi[-1]) < 0.15 * single[0]


@pytest.fixture(scope="module")
def setup(tiny_model_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("ddp")
    data = make_data(root / "data", chat_rows(16))
    single_cfg = TrainConfig.model_validate(
        {"model": str(tiny_model_dir), "seed": 5,
         "stages": [stage("sft", data, full=True, max_steps=8, batch_size=4, lr=3e-3, samples=0)]})
    run_training(single_cfg, root / "single")
    # two ranks x batch 2 = the single run's global batch of 4
    return root, _config_yaml(root / "ddp.yaml", tiny_model_dir, data, batch_size=2), _losses(root / "single")


def test_torchrun_two_processes(setup):
    root, config, single = setup
    manifest = _launch([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2"], config,
                       root / "torchrun")
    assert manifest["world_size"] == 2 and manifest["steps"] == 8
    _same_shape(single, _losses(root / "torchrun"))


def test_accelerate_launch_with_shipped_multi_cpu_config(setup):
    root, config, single = setup
    manifest = _launch([sys.executable, "-m", "accelerate.commands.launch", "--config_file",
                        str(ROOT / "configs" / "accelerate" / "multi-cpu.yaml")], config, root / "accelerate")
    assert manifest["world_size"] == 2 and manifest["steps"] == 8
    _same_shape(single, _losses(root / "accelerate"))
