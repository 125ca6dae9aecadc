"""llama.cpp judge throughput, slots=1 (one server, all cores: the old setup) vs slots=N (N servers, cores/N
threads each), through the real judge path (run_judge, logprob mode, no cache hits) on the bundled
GrandMaster test answers cut to demo length. Usage: python bench/bench_judge_slots.py PROMPTS SLOTS..."""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

from rualign.data.sources import bundled_path
from rualign.eval.judge import run_judge
from rualign.eval.schema import parse_judge_spec


def answers(rows: list[dict], shift: int, path: Path) -> Path:
    with path.open("w", encoding="utf-8") as handle:
        for i, row in enumerate(rows):
            text = rows[(i + shift) % len(rows)]["conversation"][1]["content"][:450]  # ~150 words: demo length
            handle.write(json.dumps({"id": f"p{i}", "prompt": row["conversation"][0]["content"], "answer": text,
                                     "answer_tokens": len(text) // 3}, ensure_ascii=False) + "\n")
    return path


def main() -> None:
    n, slot_counts = int(sys.argv[1]), [int(s) for s in sys.argv[2:]] or [1, 2]
    rows = [json.loads(line) for line in bundled_path("grandmaster", "test").open(encoding="utf-8")][:n]
    tmp = Path(tempfile.mkdtemp(prefix="bench-judge-slots-"))
    model, ref = answers(rows, 0, tmp / "model.jsonl"), answers(rows, 1, tmp / "ref.jsonl")
    for slots in slot_counts:
        cfg = parse_judge_spec("llamacpp:default").model_copy(update={"slots": slots})
        started = time.perf_counter()
        run_judge(model, ref, cfg, tmp / f"out{slots}", cache_path=tmp / f"cache{slots}.sqlite")
        seconds = time.perf_counter() - started
        calls = json.loads((tmp / f"out{slots}" / "manifest.json").read_text())["calls"]
        print(json.dumps({"slots": slots, "calls": calls, "seconds": round(seconds, 1),
                          "calls_per_s": round(calls / seconds, 3)}), flush=True)


if __name__ == "__main__":
    main()
