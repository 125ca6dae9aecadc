"""Local generation throughput: `rualign generate` hf backend with batches vs one prompt at a time.

Same 16 prompts (bundled grandmaster test rows), same greedy settings and max_new_tokens, the embedded
default model, through `generate_answers` (the real path: resumable work file, token counting). Tokens/s
counts generated tokens only (a finished row idling in a batch counts nothing). Runs alternate
batched / single and repeat; medians. The answers must be identical (greedy output is batch-invariant).

    python bench/bench_gen.py [repeats]
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path
from statistics import median

from common import Row, peak_rss_mb

SAMPLES = Path(__file__).resolve().parent.parent / "src" / "rualign" / "data" / "samples"
PROMPTS, MAX_NEW, BATCH = 16, 64, 16


def _prompts() -> list[dict]:
    from rualign.runs import read_jsonl

    rows = read_jsonl(SAMPLES / "grandmaster.test.jsonl")[:PROMPTS]
    return [{"id": f"p{i}", "messages": [r["conversation"][0]]} for i, r in enumerate(rows)]


def run(repeats: int = 2) -> list[Row]:
    import os

    os.environ.setdefault("RUALIGN_QUIET", "1")
    from rualign.eval.backends import GenParams, HFBackend
    from rualign.eval.generate import TokenCounter, generate_answers
    from rualign.models import ensure_default_model
    from rualign.runs import read_jsonl

    model = str(ensure_default_model())
    # threads=1 for both (rualign generate --threads 1): on a shared CPU two OpenMP threads spin-wait on
    # each other's small decode matmuls; a first run here with 2 threads took ~60 s per single prompt.
    backends = {"batched": HFBackend(model, batch_size=BATCH, threads=1),
                "single": HFBackend(model, batch_size=1, threads=1)}
    counter = TokenCounter()
    params = GenParams(max_new_tokens=MAX_NEW)
    prompts = _prompts()
    speeds: dict[str, list[float]] = {k: [] for k in backends}
    answers: dict[str, list[str]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for rep in range(repeats):
            for name in (["batched", "single"] if rep % 2 == 0 else ["single", "batched"]):
                out = Path(tmp) / f"{name}-{rep}.jsonl"
                summary = generate_answers(prompts, backends[name], params, out, counter=counter)
                speeds[name].append(summary.tokens_per_second)
                answers[name] = [r["answer"] for r in read_jsonl(out)]
                print(f"{name}: {summary.new_tokens} tokens in {summary.seconds:.1f} s = "
                      f"{summary.tokens_per_second:.1f} tok/s", flush=True)
    same = answers["batched"] == answers["single"]
    ours, peer = median(speeds["batched"]), median(speeds["single"])
    return [Row("gen", f"generation tokens/s, default model, {PROMPTS} prompts, greedy, max_new_tokens {MAX_NEW}",
                round(ours, 1), round(peer, 1), "one prompt at a time", ">= 5x", ours >= 5 * peer,
                f"batch {BATCH}; answers identical batched vs single: {same}; runs {speeds}", peak_rss_mb(),
                extra={"speeds": speeds, "identical": same})]


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    for row in run(*(int(a) for a in sys.argv[1:2])):
        print(row)
