"""Shared benchmark plumbing: machine facts, result rows, and the BENCHMARKS.md table.

Every figure is a ratio measured side by side in one run on one machine (these machines are noisy).
"""

from __future__ import annotations

import json
import os
import platform
import resource
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"


@dataclass
class Row:
    bench: str           # which benchmark
    what: str            # what is measured, with its unit
    ours: float
    peer: float | None   # the side-by-side baseline, same run, same machine
    peer_name: str
    goal: str            # e.g. ">= 1.5x", "<= 60 s"
    met: bool | None
    notes: str = ""
    peak_rss_mb: float | None = None
    extra: dict = field(default_factory=dict)

    @property
    def ratio(self) -> float | None:
        if self.peer in (None, 0) or self.ours in (None, 0):
            return None
        return self.ours / self.peer


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as handle:
            cpu = next((line.split(":", 1)[1].strip() for line in handle if line.startswith("model name")), cpu)
    except OSError:
        pass
    return f"{os.cpu_count()} cores, {cpu}"


def bench_threads() -> int:
    """torch threads for the training benchmarks (BENCH_THREADS, default 1), the same for every contender.
    On this shared 2-core machine two OpenMP threads spin-wait on each other whenever another process takes
    a core: a LoRA forward+backward measured 5-7x slower with 2 threads than with 1 (bench/NOTES.md)."""
    import torch

    threads = int(os.environ.get("BENCH_THREADS", "1"))
    torch.set_num_threads(threads)
    return threads


def peak_rss_mb() -> float:
    """Peak resident memory of this process (and waited-for children) in MiB."""
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return round(max(own, children) / 1024, 1)


def save(name: str, rows: list[Row]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    payload = {"machine": machine(), "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
               "rows": [asdict(r) | {"ratio": r.ratio} for r in rows]}
    path.write_text(json.dumps(payload, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return path


def _fmt(value: float | None) -> str:
    if value is None:
        return "-"
    if abs(value) < 1:
        return f"{value:.3g}"  # e.g. DPO steps/s: 0.0577, not 0.06
    return f"{value:,.2f}" if abs(value) < 100 else f"{value:,.0f}"


def render_markdown() -> str:
    lines = ["# Benchmarks", "",
             "Regenerate with `python bench/run_all.py` (or one: `python bench/run_all.py data`). Each row is one "
             "side-by-side measurement in a single run on the machine named in the row; ratios > 1 mean rualign "
             "is faster (or, for a time, lower is better and the ratio is peer/ours).", "",
             "| benchmark | what | ours | peer | ratio | goal | met | peak RSS MiB | machine | date | notes |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for path in sorted(RESULTS.glob("*.json")):
        data = json.loads(path.read_text(encoding="utf-8"))
        for row in data["rows"]:
            ratio = f"{row['ratio']:.2f}x" if row.get("ratio") else "-"
            met = {True: "yes", False: "**no**", None: "-"}[row["met"]]
            peer = f"{_fmt(row['peer'])} ({row['peer_name']})" if row["peer"] is not None else row["peer_name"] or "-"
            lines.append(f"| {row['bench']} | {row['what']} | {_fmt(row['ours'])} | {peer} | {ratio} | {row['goal']} "
                         f"| {met} | {_fmt(row.get('peak_rss_mb'))} | {data['machine']} | {data['date']} | "
                         f"{row.get('notes', '')} |")
    return "\n".join(lines) + "\n"


def write_benchmarks_md() -> Path:
    path = ROOT / "BENCHMARKS.md"
    notes = ROOT / "bench" / "NOTES.md"
    text = render_markdown()
    if notes.exists():
        text += "\n" + notes.read_text(encoding="utf-8")
    path.write_text(text, encoding="utf-8")
    return path


def default_lora_model(**lora):
    """(tokenizer, model): the embedded default in fp32 with a distinct pad token and a LoRA adapter —
    the starting point every training benchmark shares."""
    import torch
    from peft import get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from rualign.models import ensure_default_model
    from rualign.train.lora import lora_config
    from rualign.train.masks import ensure_pad_token
    from rualign.train.schema import LoraSpec

    base = str(ensure_default_model())
    tokenizer = AutoTokenizer.from_pretrained(base)
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    ensure_pad_token(tokenizer, model)
    return tokenizer, get_peft_model(model, lora_config(LoraSpec(**lora)))


def no_checkpointing() -> dict:
    """TrainingArguments keys that turn activation (gradient) checkpointing off. TRL's SFTConfig and
    DPOConfig default it ON (memory over speed); transformers 5 renamed the key."""
    from dataclasses import fields

    from transformers import TrainingArguments

    names = {f.name for f in fields(TrainingArguments)}
    return {"activation_checkpointing": False} if "activation_checkpointing" in names else \
        {"gradient_checkpointing": False}
