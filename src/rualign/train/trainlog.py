"""Per-stage training log (train_log.jsonl) and end-of-stage greedy samples (samples.jsonl)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from rualign.runs import JsonlAppender, write_jsonl


def _trim_log(path: Path, last_step: int) -> None:
    """On resume, drop log rows past the checkpoint we resume from: they are about to be redone."""
    if not path.exists():
        return
    keep = [line for line in path.read_text(encoding="utf-8").splitlines()
            if line.strip() and json.loads(line).get("step", 0) <= last_step]
    path.write_text("".join(line + "\n" for line in keep), encoding="utf-8")


def make_log_callback(path: Path, resume_step: int | None):
    """A TrainerCallback that appends one row per log event: step, loss, lr, grad_norm, tokens/s, metrics."""
    from transformers import TrainerCallback

    class TrainLog(TrainerCallback):
        def __init__(self):
            self.writer: JsonlAppender | None = None
            self.last_time = time.perf_counter()
            self.last_tokens = 0

        def on_train_begin(self, args, state, control, **kwargs):
            if state.is_world_process_zero:
                if resume_step is None:
                    path.unlink(missing_ok=True)
                else:
                    _trim_log(path, resume_step)
                self.writer = JsonlAppender(path)
            self.last_time = time.perf_counter()
            self.last_tokens = state.num_input_tokens_seen

        def on_log(self, args, state, control, logs=None, **kwargs):
            if self.writer is None or not logs:
                return
            now, tokens = time.perf_counter(), state.num_input_tokens_seen
            row: dict[str, Any] = {"step": state.global_step, "epoch": round(state.epoch or 0.0, 4)}
            for key, value in logs.items():
                if key in ("learning_rate",):
                    row["lr"] = value
                elif isinstance(value, (int, float)):
                    row[key] = value
            if tokens > self.last_tokens and now > self.last_time:
                row["tokens_per_s"] = round((tokens - self.last_tokens) / (now - self.last_time), 1)
            self.last_time, self.last_tokens = now, tokens
            self.writer.append(row)

        def on_train_end(self, args, state, control, **kwargs):
            if self.writer is not None:
                self.writer.close()
                self.writer = None

    return TrainLog()


def sample_prompts(rows: list[dict], n: int) -> list[tuple[str, list[dict], str | None]]:
    """(id, prompt messages, reference answer) for the first n validation rows of any data kind."""
    out = []
    for row in rows[:n]:
        if row.get("kind") == "chat":
            messages = row["messages"]
            cut = max(i for i, m in enumerate(messages) if m["role"] == "assistant")
            out.append((row["id"], messages[:cut], messages[cut]["content"]))
        else:
            reference = (row.get("chosen") or row.get("completion") or [{}])[0].get("content")
            out.append((row["id"], row["prompt"], reference))
    return out


def write_samples(model: Any, tokenizer: Any, rows: list[dict], n: int, max_new_tokens: int,
                  path: Path) -> int:
    """Greedy generations on validation prompts: a quick human check that the stage's model still talks."""
    import torch

    model.eval()
    samples = []
    for row_id, prompt, reference in sample_prompts(rows, n):
        ids = tokenizer.apply_chat_template(prompt, add_generation_prompt=True, return_tensors="pt",
                                            return_dict=True)
        with torch.no_grad():
            out = model.generate(**ids, max_new_tokens=max_new_tokens, do_sample=False,
                                 pad_token_id=tokenizer.pad_token_id)
        new = out[0, ids["input_ids"].shape[1]:]
        stopped = bool(len(new)) and int(new[-1]) == tokenizer.eos_token_id
        samples.append({"id": row_id, "prompt": prompt, "answer": tokenizer.decode(new, skip_special_tokens=True),
                        "answer_tokens": int(len(new)), "finish_reason": "stop" if stopped else "length",
                        "reference": reference})
    return write_jsonl(path, samples)


def make_progress_callback(label: str):
    """The stage's live display: steps done of max, elapsed, ETA and the latest loss."""
    from transformers import TrainerCallback

    from rualign.progress import progress

    class LiveProgress(TrainerCallback):
        def __init__(self):
            self.bar = None
            self.task = None

        def on_train_begin(self, args, state, control, **kwargs):
            self.bar = progress()
            self.bar.start()
            self.task = self.bar.add_task(f"train {label}", total=state.max_steps or None,
                                          completed=state.global_step, metric="")

        def on_step_end(self, args, state, control, **kwargs):
            if self.bar is not None:
                self.bar.update(self.task, completed=state.global_step)

        def on_log(self, args, state, control, logs=None, **kwargs):
            if self.bar is not None and logs and isinstance(logs.get("loss"), (int, float)):
                self.bar.update(self.task, metric=f"loss {logs['loss']:.3f}")

        def on_train_end(self, args, state, control, **kwargs):
            if self.bar is not None:
                self.bar.stop()
                self.bar = None

    return LiveProgress()
