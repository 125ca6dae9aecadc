"""Launcher entry for tests/test_train_sharded.py (`accelerate launch ... tests/sharded_entry.py CONFIG OUT
KILL_AFTER`): trains CONFIG like `rualign train`, and rank 0 SIGKILLs itself when optimizer step KILL_AFTER
ends (a real kill mid-stage, after the checkpoint of an earlier step was written by every rank)."""

from __future__ import annotations

import os
import signal
import sys

from transformers import TrainerCallback

from rualign.config import load_yaml
from rualign.train.run import run_training
from rualign.train.schema import TrainConfig


class KillAfter(TrainerCallback):
    def __init__(self, step: int):
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step and int(os.environ.get("RANK", "0")) == 0:
            os.kill(os.getpid(), signal.SIGKILL)


if __name__ == "__main__":
    config_path, out, kill_after = sys.argv[1], sys.argv[2], int(sys.argv[3])
    run_training(load_yaml(config_path, TrainConfig), out, callbacks=[KillAfter(kill_after)], source=config_path)
