"""DPO on the embedded default (LoRA r16 all-linear, bf16 autocast), one epoch over ROWS bundled
saiga_preferences pairs: rualign's dpo stage with its on-disk reference log-prob cache vs TRL's
DPOTrainer with its defaults (reference forward inside every step, adapter disabled = reference).

Each contender runs in its own subprocess (separate peak RSS), same pairs, LoRA, lr, batch, max_length:
- trl:    DPOTrainer(DPOConfig defaults + the common keys), on the same pairs as conversational rows;
- trl_nockpt: the same with activation checkpointing off (DPOConfig defaults it on: memory over speed);
- cold:   rualign, empty cache: the reference pass runs once up front (inside train(), counted);
- warm:   rualign again with the cache filled (a rerun, a beta sweep, another stage on the same data);
- online: rualign with `ref_cache: false`: the reference forward inside every step, as TRL does, everything
          else rualign's. warm vs online is the cache's own effect; warm vs trl mixes it with the rest
          (bf16 autocast, compact head, collation).
Seconds per optimizer step from trainer.train() wall time.

    python bench/bench_dpo.py [rows]
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import Row, default_lora_model, no_checkpointing

HERE = Path(__file__).resolve().parent
SAMPLES = HERE.parent / "src" / "rualign" / "data" / "samples"
BATCH, MAX_LENGTH, LR, SEED = 2, 512, 5e-6, 42
LORA = {"r": 16, "alpha": 32, "dropout": 0.05}


def prepare(work: Path, rows: int) -> Path:
    from rualign.config import validate
    from rualign.data.recipe import run_recipe
    from rualign.data.schema import Recipe
    from rualign.runs import read_jsonl, write_jsonl

    recipe = validate(Recipe, {"tokenizer": "default", "val_fraction": 0, "sources": [
        {"name": "prefs", "format": "saiga_preferences", "path": str(SAMPLES / "saiga_preferences.jsonl")}]}, "dpo")
    folder = work / "data"
    run_recipe(recipe, folder, force=True)
    write_jsonl(folder / "train.jsonl", read_jsonl(folder / "train.jsonl")[:rows])
    return folder


def _ours(data: Path, work: Path, steps: int, ref_cache: bool = True) -> dict:
    from rualign.models import ensure_default_model
    from rualign.train.run import run_stage
    from rualign.train.schema import TrainConfig

    config = TrainConfig.model_validate({"model": str(ensure_default_model()), "seed": SEED, "stages": [{
        "name": "dpo", "method": "dpo", "data": str(data), "max_steps": steps, "batch_size": BATCH,
        "max_length": MAX_LENGTH, "lr": LR, "lora": LORA, "samples": 0, "save_steps": 10_000,
        "ref_cache": ref_cache}]})
    manifest = run_stage(config, config.stages[0], work)
    cache = manifest["builder_info"].get("ref_cache", {}).get("train", {})
    return {"seconds": manifest["timing"]["train_seconds"], "steps": manifest["steps"],
            "precision": manifest["precision"], "ref_forward_batches_before_training": cache.get("forward_batches"),
            "cache_hit": cache.get("hit"), "train_loss": manifest["train_loss"]}


def _trl(data: Path, work: Path, steps: int, checkpointing: bool = True) -> dict:
    from datasets import Dataset
    from transformers import set_seed
    from trl import DPOConfig, DPOTrainer

    from rualign.runs import read_jsonl

    set_seed(SEED)
    tokenizer, model = default_lora_model(**LORA)
    rows = read_jsonl(data / "train.jsonl")
    ds = Dataset.from_list([{"prompt": r["prompt"], "chosen": r["chosen"], "rejected": r["rejected"]} for r in rows])
    args = DPOConfig(output_dir=str(work / "ckpt"), per_device_train_batch_size=BATCH, max_steps=steps,
                     learning_rate=LR, max_length=MAX_LENGTH, seed=SEED, data_seed=SEED, use_cpu=True,
                     logging_steps=1, save_strategy="no", report_to="none", disable_tqdm=True,
                     **({} if checkpointing else no_checkpointing()))
    trainer = DPOTrainer(model=model, args=args, train_dataset=ds, processing_class=tokenizer)
    started = time.perf_counter()
    result = trainer.train()
    return {"seconds": round(time.perf_counter() - started, 2), "steps": int(trainer.state.global_step),
            "precision": "bf16" if args.bf16 else "fp32", "train_loss": result.training_loss}


def worker(kind: str, data: Path, work: Path, steps: int, cache_dir: Path) -> dict:
    os.environ.setdefault("RUALIGN_QUIET", "1")
    os.environ["RUALIGN_REFCACHE"] = str(cache_dir)
    sys.path.insert(0, str(HERE))
    from common import bench_threads, peak_rss_mb

    result = {"threads": bench_threads()}
    if kind in ("trl", "trl_nockpt"):
        result |= _trl(data, work, steps, checkpointing=kind == "trl")
    else:
        result |= _ours(data, work, steps, ref_cache=kind != "online")
    result["s_per_step"] = result["seconds"] / result["steps"]
    result["peak_rss_mb"] = peak_rss_mb()
    return result


def run(rows: int = 8) -> list[Row]:
    work = Path(tempfile.mkdtemp(prefix="rualign-bench-dpo-"))
    data = prepare(work, rows)
    steps = -(-rows // BATCH)  # one epoch
    results = {}
    for kind in ("trl", "trl_nockpt", "cold", "warm", "online"):
        out = work / f"{kind}.json"
        worker_kind = kind if kind in ("trl", "trl_nockpt", "online") else "ours"  # cold and warm differ only by the cache state
        subprocess.run([sys.executable, __file__, "--worker", worker_kind, str(data),
                        str(work / kind), str(steps), str(work / "refcache"), str(out)], check=True)
        results[kind] = json.loads(out.read_text())
        print(f"{kind}: {results[kind]}", flush=True)
    trl, cold, warm, online = (results[k]["s_per_step"] for k in ("trl", "cold", "warm", "online"))
    what = f"DPO s/step, default model LoRA r16, batch {BATCH} pairs, max_length {MAX_LENGTH}, 1 epoch of {rows} pairs"
    return [
        Row("dpo", f"{what}: steps/s, rualign warm cache vs TRL defaults", round(1 / warm, 4), round(1 / trl, 4),
            "TRL DPOTrainer defaults", ">= 1.4x", trl / warm >= 1.4,
            f"s/step ours {warm:.1f} vs TRL {trl:.1f}; reference forwards before training: "
            f"{results['warm'].get('ref_forward_batches_before_training')}", results["warm"]["peak_rss_mb"],
            extra=results),
        Row("dpo", f"{what}: steps/s, rualign cold cache (reference pass counted) vs TRL defaults",
            round(1 / cold, 4), round(1 / trl, 4), "TRL DPOTrainer defaults", "-", None,
            f"s/step ours {cold:.1f} vs TRL {trl:.1f}; TRL peak RSS {results['trl']['peak_rss_mb']:,.0f} MiB",
            results["cold"]["peak_rss_mb"]),
        Row("dpo", f"{what}: steps/s, rualign warm cache vs TRL with activation checkpointing off",
            round(1 / warm, 4), round(1 / results["trl_nockpt"]["s_per_step"], 4),
            "TRL DPOTrainer, checkpointing off", "-", None,
            f"s/step ours {warm:.1f} vs TRL {results['trl_nockpt']['s_per_step']:.1f} (DPOConfig defaults "
            f"checkpointing on); TRL peak RSS {results['trl_nockpt']['peak_rss_mb']:,.0f} MiB",
            results["warm"]["peak_rss_mb"]),
        Row("dpo", f"{what}: steps/s, rualign warm cache vs rualign ref_cache: false (reference forward every step)",
            round(1 / warm, 4), round(1 / online, 4), "rualign ref_cache: false", "-", None,
            f"s/step cached {warm:.1f} vs online {online:.1f}: the reference cache alone, all else equal",
            results["online"]["peak_rss_mb"]),
    ]


if __name__ == "__main__":
    if sys.argv[1:2] == ["--worker"]:
        kind, data, work, steps, cache, out = sys.argv[2:8]
        Path(out).write_text(json.dumps(worker(kind, Path(data), Path(work), int(steps), Path(cache))))
    else:
        sys.path.insert(0, str(HERE))
        for row in run(*(int(a) for a in sys.argv[1:2])):
            print(row)
