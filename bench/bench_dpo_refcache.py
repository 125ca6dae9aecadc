"""DPO step time and tokens/s on the embedded default model, with vs without cached reference log-probs.

    python bench/bench_dpo_refcache.py [--steps 6] [--rows 24] [--batch 4] [--repeat 1]

Three runs of the same LoRA DPO stage: `cold` (cache empty: reference computed once, before training),
`warm` (cache hit: no reference forward at all) and `online` (ref_cache: false: TRL runs the reference
forward inside every step). Step time excludes the one-off precompute (`stage s` includes it, plus
loading and export). `warm` and `online` alternate `--repeat` times, so a machine shared with other work
slows both alike; the table shows each run and the ratio of the medians.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path


def _rows(n: int) -> list[dict]:
    topics = ["погоду", "историю Москвы", "квантовые компьютеры", "рецепт борща", "теорему Пифагора",
              "чайный гриб", "Байкал", "фотосинтез"]
    return [{"id": f"b{i}", "source": "bench", "kind": "preference",
             "prompt": [{"role": "user", "content": f"Расскажи коротко про {topics[i % len(topics)]}, вариант {i}."}],
             "chosen": [{"role": "assistant", "content": ("Вот короткий, но полный и точный ответ. " * 6).strip()}],
             "rejected": [{"role": "assistant", "content": "Не знаю, спросите кого-нибудь другого."}],
             "answer_tokens": 60, "rejected_tokens": 10, "meta": {}} for i in range(n)]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--rows", type=int, default=24)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--repeat", type=int, default=1)
    args = parser.parse_args()
    os.environ.setdefault("RUALIGN_QUIET", "1")
    from rualign.models import ensure_default_model
    from rualign.runs import read_jsonl, write_jsonl, write_manifest
    from rualign.train.run import run_stage
    from rualign.train.schema import TrainConfig

    model = ensure_default_model()
    work = Path(tempfile.mkdtemp(prefix="bench-dpo-"))
    os.environ["RUALIGN_REFCACHE"] = str(work / "refcache")
    write_jsonl(work / "data" / "train.jsonl", _rows(args.rows))
    write_manifest(work / "data", stage="data", config_hash="bench", kind="preference")
    results = []
    plan = [("cold", {})] + [run for _ in range(args.repeat) for run in (("warm", {}), ("online", {"ref_cache": False}))]
    for index, (name, extra) in enumerate(plan):
        config = TrainConfig.model_validate({"model": str(model), "stages": [{
            "name": "dpo", "method": "dpo", "data": str(work / "data"), "max_steps": args.steps,
            "batch_size": args.batch, "samples": 0, "max_length": 256, "precision": "fp32", **extra}]})
        started = time.perf_counter()
        manifest = run_stage(config, config.stages[0], work / f"{name}{index}")
        total = time.perf_counter() - started
        log = [r for r in read_jsonl(work / f"{name}{index}" / "dpo" / "train_log.jsonl") if r.get("loss") is not None]
        train_s = manifest["timing"]["train_seconds"]
        cache = manifest["builder_info"].get("ref_cache", {}).get("train", {})
        results.append({"run": name, "steps": manifest["steps"], "s_per_step": round(train_s / manifest["steps"], 3),
                        "tokens_per_s": manifest["timing"]["tokens_per_s"], "stage_s": round(total, 1),
                        "ref_forward_batches": cache.get("forward_batches", "per step"),
                        "final_loss": round(log[-1]["loss"], 4)})
    print(f"{'run':8} {'s/step':>8} {'tok/s':>8} {'stage s':>8} {'ref fwd':>10} {'loss':>8}")
    for r in results:
        print(f"{r['run']:8} {r['s_per_step']:8.3f} {r['tokens_per_s']:8.1f} {r['stage_s']:8.1f} "
              f"{str(r['ref_forward_batches']):>10} {r['final_loss']:8.4f}")
    import statistics

    median = {m: statistics.median(r["s_per_step"] for r in results if r["run"] == m) for m in ("warm", "online")}
    print(f"median s/step: cached {median['warm']:.3f}, online {median['online']:.3f}; "
          f"speed-up {median['online'] / median['warm']:.2f}x (load average {os.getloadavg()[0]:.1f})")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
