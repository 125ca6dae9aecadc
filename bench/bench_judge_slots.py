"""llama.cpp judge throughput through the real judge path (run_judge, logprob mode, no cache hits) on the
bundled GrandMaster test answers cut to demo length, one setup after another in one process:
  q4_1:1  the packaged Q4_1 GGUF, one server with all cores (the previous demo judge)
  q4_1:2  the packaged Q4_1 GGUF, two servers (slots) of one thread each
  f16:2   the embedded judge as served now: its F16 copy, two slots
Usage: python bench/bench_judge_slots.py PROMPTS [SETUP...]   (default: q4_1:1 q4_1:2 f16:2)"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

from rualign.data.sources import bundled_path
from rualign.eval.judge import run_judge
from rualign.eval.schema import parse_judge_spec
from rualign.models import default_gguf_path


def answers(rows: list[dict], shift: int, path: Path) -> Path:
    with path.open("w", encoding="utf-8") as handle:
        for i, row in enumerate(rows):
            text = rows[(i + shift) % len(rows)]["conversation"][1]["content"][:450]  # ~150 words: demo length
            handle.write(json.dumps({"id": f"p{i}", "prompt": row["conversation"][0]["content"], "answer": text,
                                     "answer_tokens": len(text) // 3}, ensure_ascii=False) + "\n")
    return path


def main() -> None:
    n, setups = int(sys.argv[1]), sys.argv[2:] or ["q4_1:1", "q4_1:2", "f16:2"]
    rows = [json.loads(line) for line in bundled_path("grandmaster", "test").open(encoding="utf-8")][:n]
    tmp = Path(tempfile.mkdtemp(prefix="bench-judge-slots-"))
    model, ref = answers(rows, 0, tmp / "model.jsonl"), answers(rows, 1, tmp / "ref.jsonl")
    for setup in setups:
        weights, slots = setup.split(":")
        spec = "llamacpp:default" if weights == "f16" else f"llamacpp:{default_gguf_path()}"
        cfg = parse_judge_spec(spec).model_copy(update={"slots": int(slots)})
        started = time.perf_counter()
        run_judge(model, ref, cfg, tmp / f"out-{weights}-{slots}", cache_path=tmp / f"cache-{weights}-{slots}.sqlite")
        seconds = time.perf_counter() - started
        manifest = json.loads((tmp / f"out-{weights}-{slots}" / "manifest.json").read_text())
        print(json.dumps({"setup": setup, "calls": manifest["calls"], "requests": manifest["client"]["requests"],
                          "prompt_tokens": manifest["client"]["prompt_tokens"], "seconds": round(seconds, 1),
                          "calls_per_s": round(manifest["calls"] / seconds, 3)}), flush=True)


if __name__ == "__main__":
    main()
