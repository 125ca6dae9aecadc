"""SFT throughput on the embedded default (SmolLM2-135M-Instruct, LoRA r16 all-linear, batch 4, max_length
1024) on the bundled GrandMaster sample rows (answers 20-850 tokens), non-padding tokens per second.

Contenders, each in its own subprocess (separate peak RSS), same tokenized rows and assistant-only labels,
same LoRA, lr, seed and number of optimizer steps:
- ours:  a rualign `sft` stage with its defaults (bf16 autocast chosen by precision: auto on this CPU,
         LM head on trainable positions only, length-grouped batches, pad to a multiple of 8);
- trl:   TRL SFTTrainer at the best settings measured here (bf16, group_by_length, pad to 8, activation
         checkpointing OFF: SFTConfig defaults it on, which saves memory and costs speed);
- study: the study's recipe: HF Trainer + DataCollatorForTokenClassification(pad_to_multiple_of=8),
         random order, fp32, full logits.
Every contender runs with the same torch thread count (common.bench_threads, 1 here). Each reports tokens/s (non-padding tokens seen / trainer.train() seconds) and the token-mean loss on the
same 8 held-out rows (grandmaster.test.jsonl, fp32, after training). Order alternates between repeats.

    python bench/bench_sft.py [steps] [repeats]
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from statistics import median

from common import Row, default_lora_model, no_checkpointing

HERE = Path(__file__).resolve().parent
SAMPLES = HERE.parent / "src" / "rualign" / "data" / "samples"
BATCH, MAX_LENGTH, LR, SEED, HELD_OUT = 4, 1024, 2e-4, 42, 8
LORA = {"r": 16, "alpha": 32, "dropout": 0.05}


def prepare(work: Path) -> tuple[Path, Path]:
    """Canonical chat rows of the bundled train and test samples (through `rualign data`)."""
    from rualign.config import validate
    from rualign.data.recipe import run_recipe
    from rualign.data.schema import Recipe

    out = {}
    for split in ("train", "test"):
        recipe = validate(Recipe, {"tokenizer": "column", "val_fraction": 0, "sources": [
            {"name": "gm", "format": "grandmaster", "path": str(SAMPLES / f"grandmaster.{split}.jsonl")}]}, split)
        run_recipe(recipe, work / split, force=True)
        out[split] = work / split
    return out["train"], out["test"]


def _tokenized(rows: list[dict], tokenizer) -> list[tuple[list[int], list[int]]]:
    from rualign.train.masks import tokenize_with_mask

    return [tuple(x[:MAX_LENGTH] for x in tokenize_with_mask(tokenizer, r["messages"])) for r in rows]


def held_out_loss(model_dir: str, test_dir: Path) -> float:
    """Token-mean cross-entropy on the assistant tokens of the first HELD_OUT test rows (fp32, no grad)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from rualign.runs import read_jsonl

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for ids, mask in _tokenized(read_jsonl(test_dir / "train.jsonl")[:HELD_OUT], tokenizer):
            x = torch.tensor([ids])
            labels = torch.where(torch.tensor([mask]) == 1, x, -100)[:, 1:]
            logits = model(input_ids=x).logits[:, :-1]
            keep = labels != -100
            total += float(torch.nn.functional.cross_entropy(logits[keep], labels[keep], reduction="sum"))
            count += int(keep.sum())
    return total / count


def _ours(train_dir: Path, work: Path, steps: int) -> dict:
    from rualign.models import ensure_default_model
    from rualign.train.run import run_stage
    from rualign.train.schema import TrainConfig

    config = TrainConfig.model_validate({"model": str(ensure_default_model()), "seed": SEED, "stages": [{
        "name": "sft", "method": "sft", "data": str(train_dir), "max_steps": steps, "batch_size": BATCH,
        "max_length": MAX_LENGTH, "lr": LR, "lora": LORA, "samples": 0, "save_steps": 10_000}]})
    manifest = run_stage(config, config.stages[0], work)
    return {"tokens": manifest["tokens"], "seconds": manifest["timing"]["train_seconds"],
            "model": manifest["model_path"], "precision": manifest["precision"], "train_loss": manifest["train_loss"]}


def _peer(kind: str, train_dir: Path, work: Path, steps: int) -> dict:
    """TRL SFTTrainer (kind 'trl') or the study's HF Trainer recipe (kind 'study') on the same rows."""
    from datasets import Dataset
    from transformers import DataCollatorForTokenClassification, Trainer, TrainingArguments, set_seed

    from rualign.runs import read_jsonl

    set_seed(SEED)
    tokenizer, model = default_lora_model(**LORA)
    encoded = _tokenized(read_jsonl(train_dir / "train.jsonl"), tokenizer)
    common = dict(output_dir=str(work / "ckpt"), per_device_train_batch_size=BATCH, max_steps=steps,
                  learning_rate=LR, lr_scheduler_type="linear", seed=SEED, data_seed=SEED, use_cpu=True,
                  logging_steps=1, save_strategy="no", report_to="none", dataloader_num_workers=0,
                  include_num_input_tokens_seen="non_padding", disable_tqdm=True)
    if kind == "trl":
        from trl import SFTConfig, SFTTrainer

        ds = Dataset.from_dict({"input_ids": [i for i, _ in encoded], "completion_mask": [m for _, m in encoded]})
        args = SFTConfig(**common, bf16=True, train_sampling_strategy="group_by_length", pad_to_multiple_of=8,
                         completion_only_loss=True, packing=False, max_length=MAX_LENGTH, **no_checkpointing())
        trainer = SFTTrainer(model=model, args=args, train_dataset=ds, processing_class=tokenizer)
    else:
        ds = Dataset.from_dict({"input_ids": [i for i, _ in encoded],
                                "attention_mask": [[1] * len(i) for i, _ in encoded],
                                "labels": [[t if b else -100 for t, b in zip(i, m)] for i, m in encoded]})
        trainer = Trainer(model=model, args=TrainingArguments(**common), train_dataset=ds,
                          data_collator=DataCollatorForTokenClassification(tokenizer, pad_to_multiple_of=8))
    started = time.perf_counter()
    result = trainer.train()
    seconds = time.perf_counter() - started
    merged = model.merge_and_unload()
    merged.save_pretrained(work / "merged")
    tokenizer.save_pretrained(work / "merged")
    return {"tokens": int(trainer.state.num_input_tokens_seen), "seconds": round(seconds, 2),
            "model": str(work / "merged"), "precision": "bf16" if kind == "trl" else "fp32",
            "train_loss": result.training_loss}


def worker(kind: str, train_dir: Path, test_dir: Path, work: Path, steps: int) -> dict:
    os.environ.setdefault("RUALIGN_QUIET", "1")
    sys.path.insert(0, str(HERE))
    from common import bench_threads, peak_rss_mb

    threads = bench_threads()
    result = _ours(train_dir, work, steps) if kind == "ours" else _peer(kind, train_dir, work, steps)
    result["tokens_per_s"] = result["tokens"] / result["seconds"]
    result["threads"] = threads
    result["peak_rss_mb"] = peak_rss_mb()  # training only: the held-out pass below loads another model
    result["held_out_loss"] = held_out_loss(result["model"], test_dir)
    return result


def _spawn(kind: str, train_dir: Path, test_dir: Path, work: Path, steps: int) -> dict:
    out = work / f"{kind}.json"
    subprocess.run([sys.executable, __file__, "--worker", kind, str(train_dir), str(test_dir), str(work / kind),
                    str(steps), str(out)], check=True)
    return json.loads(out.read_text())


def run(steps: int = 3, repeats: int = 1) -> list[Row]:
    work = Path(tempfile.mkdtemp(prefix="rualign-bench-sft-"))
    train_dir, test_dir = prepare(work)
    order = ["ours", "trl", "study"]
    runs: dict[str, list[dict]] = {k: [] for k in order}
    for rep in range(repeats):
        for kind in (order if rep % 2 == 0 else order[::-1]):
            result = _spawn(kind, train_dir, test_dir, work / f"r{rep}", steps)
            runs[kind].append(result)
            print(f"{kind}: {result['tokens_per_s']:.1f} tok/s ({result['tokens']} tokens, {result['seconds']} s), "
                  f"held-out loss {result['held_out_loss']:.4f}, peak RSS {result['peak_rss_mb']} MiB", flush=True)
    med = {k: median(r["tokens_per_s"] for r in v) for k, v in runs.items()}
    loss = {k: median(r["held_out_loss"] for r in v) for k, v in runs.items()}
    rss = {k: max(r["peak_rss_mb"] for r in v) for k, v in runs.items()}
    what = f"SFT non-padding tokens/s, default model LoRA r16, batch {BATCH}, {steps} steps, grandmaster samples"
    rows = []
    for peer, goal in (("trl", 1.5), ("study", 2.5)):
        no_worse = loss["ours"] <= loss[peer] + 0.01
        rows.append(Row("sft", f"{what}, vs {peer}", round(med["ours"], 1), round(med[peer], 1),
                        {"trl": "TRL SFTTrainer bf16+group_by_length", "study": "study recipe fp32"}[peer],
                        f">= {goal}x, held-out loss no worse", med["ours"] >= goal * med[peer] and no_worse,
                        f"held-out loss ours {loss['ours']:.4f} vs {loss[peer]:.4f}; peer RSS {rss[peer]:,.0f} MiB",
                        rss["ours"], extra={"runs": runs, "steps": steps, "repeats": repeats}))
    return rows


if __name__ == "__main__":
    if sys.argv[1:2] == ["--worker"]:
        kind, train, test, work, steps, out = sys.argv[2:8]
        result = worker(kind, Path(train), Path(test), Path(work), int(steps))
        Path(out).write_text(json.dumps(result))
    else:
        sys.path.insert(0, str(HERE))
        for row in run(*(int(a) for a in sys.argv[1:3])):
            print(row)
