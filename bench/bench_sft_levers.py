"""What each SFT speed lever gives, one at a time, on the embedded default (LoRA r16 all-linear): one
optimizer step (forward + backward + AdamW) on real batches of the bundled GrandMaster rows, non-padding
tokens per second. All configurations run round-robin in one process on the same batches; medians.

Configurations (each adds one lever to the one before, except `bf16_packed` and `threads2`):
- fp32_full:      fp32, random batches padded to a multiple of 8, logits over every position (study recipe)
- bf16_full:      + bf16 autocast
- bf16_compact_mask: + LM head and loss on trainable positions only (train/fast.py), padding mask kept
- bf16_compact:   + right-padded batches run without the padding mask (SDPA's fused causal kernel)
- bf16_grouped:   + length-grouped batches (the same rows, batched by sorted length: less padding)
- bf16_fast_dropout: + LoRA dropout drawn 4 elements per 64 random bits (train/dropout.py), chunked head
- bf16_packed:    compact head, fast dropout, the random batches packed into one row (padding-free, block-diagonal mask)
- threads2:       bf16_fast_dropout with 2 torch threads instead of the benchmark's 1 (common.bench_threads)

    python bench/bench_sft_levers.py [repeats]
"""

from __future__ import annotations

import random
import sys
import time
from contextlib import nullcontext
from pathlib import Path
from statistics import median

from common import Row, bench_threads, default_lora_model, peak_rss_mb

SAMPLES = Path(__file__).resolve().parent.parent / "src" / "rualign" / "data" / "samples"
BATCH, N_BATCHES, SEED = 4, 1, 0


def _encoded(tokenizer) -> list[tuple[list[int], list[int]]]:
    from rualign.runs import read_jsonl
    from rualign.train.masks import tokenize_with_mask

    rows = read_jsonl(SAMPLES / "grandmaster.train.jsonl")
    return [tokenize_with_mask(tokenizer, r["conversation"]) for r in rows]


def _pad(examples, pad_id: int, multiple: int = 8) -> dict:
    import torch

    width = -(-max(len(i) for i, _ in examples) // multiple) * multiple
    ids = torch.full((len(examples), width), pad_id)
    attention = torch.zeros_like(ids)
    labels = torch.full_like(ids, -100)
    for row, (tokens, mask) in enumerate(examples):
        n = len(tokens)
        ids[row, :n], attention[row, :n] = torch.tensor(tokens), 1
        labels[row, :n] = torch.where(torch.tensor(mask) == 1, torch.tensor(tokens), -100)
    return {"input_ids": ids, "attention_mask": attention, "labels": labels}


def _packed(examples) -> dict:
    import torch

    ids = torch.tensor([t for tokens, _ in examples for t in tokens])[None]
    labels = torch.tensor([t if m else -100 for tokens, mask in examples for t, m in zip(tokens, mask)])[None]
    position_ids = torch.cat([torch.arange(len(tokens)) for tokens, _ in examples])[None]
    labels[position_ids == 0] = -100
    return {"input_ids": ids, "labels": labels, "position_ids": position_ids}


def _batches(encoded, pad_id: int) -> dict[str, list[dict]]:
    rng = random.Random(SEED)
    picked = rng.sample(encoded, BATCH * N_BATCHES)
    randomly = [picked[i:i + BATCH] for i in range(0, len(picked), BATCH)]
    by_length = sorted(picked, key=lambda e: len(e[0]))
    grouped = [by_length[i:i + BATCH] for i in range(0, len(by_length), BATCH)]
    return {"random": [_pad(b, pad_id) for b in randomly], "grouped": [_pad(b, pad_id) for b in grouped],
            "packed": [_packed(b) for b in randomly]}


CONFIGS = {  # name: (bf16, compact head, batches, threads, fast LoRA dropout)
    "fp32_full": (False, False, "random", None, False),
    "bf16_full": (True, False, "random", None, False),
    "bf16_compact_mask": (True, "mask", "random", None, False),
    "bf16_compact": (True, True, "random", None, False),
    "bf16_grouped": (True, True, "grouped", None, False),
    "bf16_fast_dropout": (True, True, "grouped", None, True),
    "bf16_packed": (True, True, "packed", None, True),
    "threads2": (True, True, "grouped", 2, True),
}


def _dropout_switch(model):
    """set(fast): swap every LoRA dropout between peft's nn.Dropout and rualign's FastDropout."""
    import torch

    from rualign.train.dropout import FastDropout, lora_dropouts

    slots = [(holder, name, drop, FastDropout(drop.p)) for holder, name, drop in lora_dropouts(model)
             if type(drop) is torch.nn.Dropout and drop.p > 0]

    def set_fast(fast: bool) -> None:
        for holder, name, native, fast_one in slots:
            holder[name] = fast_one if fast else native

    return set_fast


def _step(model, optimizer, batch: dict, bf16: bool, compact: bool) -> float:
    import torch

    base = model.get_base_model()
    base.rualign_drop_padding_mask = compact is True  # "mask": compact head, padding mask kept
    started = time.perf_counter()
    with torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else nullcontext():
        loss = model(**batch, use_cache=False, **({"trainable_only": True} if compact else {})).loss
    loss.backward()
    optimizer.step()
    optimizer.zero_grad()
    return time.perf_counter() - started


def run(repeats: int = 1) -> list[Row]:
    import torch

    from rualign.train.fast import add_trainable_head

    bench_threads()
    tokenizer, model = default_lora_model()
    add_trainable_head(model.get_base_model())
    model.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=0.0)  # lr 0: same weights
    batches = _batches(_encoded(tokenizer), tokenizer.pad_token_id)
    real = {k: sum(int(b["attention_mask"].sum()) if "attention_mask" in b else b["input_ids"].numel() for b in v)
            for k, v in batches.items()}
    default_threads = torch.get_num_threads()
    speeds: dict[str, list[float]] = {k: [] for k in CONFIGS}
    set_fast_dropout = _dropout_switch(model)
    for rep in range(repeats + 1):  # round 0 warms every shape up (oneDNN primitive creation) and is dropped
        for name, (bf16, compact, kind, threads, fast_dropout) in CONFIGS.items():
            torch.set_num_threads(threads or default_threads)
            set_fast_dropout(fast_dropout)
            seconds = sum(_step(model, optimizer, b, bf16, compact) for b in batches[kind])
            if rep:
                speeds[name].append(real[kind] / seconds)
            print(f"round {rep} {name}: {real[kind] / seconds:.1f} tok/s", flush=True)
    torch.set_num_threads(default_threads)
    med = {k: median(v) for k, v in speeds.items()}
    padded = {k: sum(b["input_ids"].numel() for b in v) for k, v in batches.items()}
    rows, previous = [], None
    for name in CONFIGS:
        peer = "fp32_full" if name == "fp32_full" else ("bf16_fast_dropout" if name == "threads2" else previous)
        notes = f"{real[CONFIGS[name][2]]} real of {padded[CONFIGS[name][2]]} tokens; runs {speeds[name]}"
        rows.append(Row("sft_levers", f"SFT step tokens/s, {name}", round(med[name], 1),
                        round(med[peer], 1) if name != "fp32_full" else None, peer if name != "fp32_full" else "",
                        "-", None, notes, peak_rss_mb()))
        if name not in ("bf16_packed", "threads2"):
            previous = name
    return rows


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    for row in run(*(int(a) for a in sys.argv[1:2])):
        print(row.what, row.ours, row.peer, f"{row.ratio:.2f}x" if row.ratio else "", row.notes)
