"""Local generation throughput: `rualign generate` (hf backend, continuous batching) vs one prompt at a time.

The workload is what `rualign run` generates: the bundled Russian eval prompts (arena-style questions,
52-206 prompt tokens), greedy, the embedded default model. Three contenders on the same prompts, same
settings, same threads, back to back in one process:

- ours: `generate_answers` with the hf backend, `SLOTS` rows in flight (the real path: work file, counting),
  fp32 (the goal row) and with bf16 autocast (faster; not batch-invariant);
- transformers.generate on fixed batches of `SLOTS` length-sorted prompts (rualign's previous path);
- transformers.generate one prompt at a time (the peer of the goal).

Tokens/s counts generated tokens only. The answers must be identical across all three (greedy output
does not depend on batching in fp32).

    python bench/bench_gen.py
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

from common import Row, bench_threads, peak_rss_mb

SAMPLES = Path(__file__).resolve().parent.parent / "src" / "rualign" / "data" / "samples"
PROMPTS, MAX_NEW, SLOTS = 32, 128, 32


def _prompts() -> list[dict]:
    rows = json.loads((SAMPLES / "eval_prompts.json").read_text(encoding="utf-8"))[:PROMPTS]
    return [{"id": r["id"], "messages": [{"role": "user", "content": r["instruction"]}]} for r in rows]


def _fixed_batches(backend, prompts: list[dict], params, size: int) -> tuple[list[str], int, float]:
    """transformers.generate over length-sorted batches of `size` (size 1: one prompt at a time)."""
    ordered = sorted(prompts, key=lambda p: -backend.prompt_length(p["messages"]))
    texts, tokens = {}, 0
    started = time.perf_counter()
    for i in range(0, len(ordered), size):
        batch = ordered[i:i + size]
        for prompt, completion in zip(batch, backend._generate_fixed([p["messages"] for p in batch], params)):
            texts[prompt["id"]] = completion.text
            tokens += completion.completion_tokens
    return [texts[p["id"]] for p in prompts], tokens, time.perf_counter() - started


def run() -> list[Row]:
    import os

    os.environ.setdefault("RUALIGN_QUIET", "1")
    from rualign.eval.backends import GenParams, HFBackend
    from rualign.eval.generate import TokenCounter, generate_answers
    from rualign.models import ensure_default_model
    from rualign.runs import read_jsonl

    threads = bench_threads()
    backend = HFBackend(str(ensure_default_model()), batch_size=SLOTS, threads=threads)
    counter, params, prompts = TokenCounter(), GenParams(max_new_tokens=MAX_NEW), _prompts()
    speeds, answers = {}, {}
    bf16 = HFBackend(str(ensure_default_model()), batch_size=SLOTS, threads=threads, bf16="on")
    for name, contender in (("ours", backend), ("ours_bf16", bf16)):
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "answers.jsonl"
            summary = generate_answers(prompts, contender, params, out, counter=counter)
            speeds[name] = summary.tokens_per_second
            answers[name] = [r["answer"] for r in read_jsonl(out)]
        print(f"{name}: {summary.new_tokens} tokens in {summary.seconds:.1f} s = {speeds[name]:.1f} tok/s",
              flush=True)
    for name, size in (("fixed", SLOTS), ("single", 1)):
        answers[name], tokens, seconds = _fixed_batches(backend, prompts, params, size)
        speeds[name] = tokens / seconds
        print(f"{name}: {tokens} tokens in {seconds:.1f} s = {speeds[name]:.1f} tok/s", flush=True)
    same = answers["ours"] == answers["fixed"] == answers["single"]
    what = (f"generation tokens/s, default model, {PROMPTS} eval prompts, greedy, max_new_tokens {MAX_NEW}, "
            f"{threads} thread(s)")
    rss = peak_rss_mb()
    return [
        Row("gen", what, round(speeds["ours"], 1), round(speeds["single"], 1), "transformers.generate, one prompt "
            "at a time", ">= 5x", speeds["ours"] >= 5 * speeds["single"],
            f"continuous batching, {SLOTS} slots; answers identical to one-at-a-time: {same}", rss,
            extra={"speeds": speeds, "identical": same}),
        Row("gen", what.replace("greedy", "greedy, bf16 autocast (the `rualign run` default on bf16 CPUs)"),
            round(speeds["ours_bf16"], 1), round(speeds["single"], 1), "transformers.generate fp32, one prompt at a "
            "time", "-", None, f"answers equal to fp32 one-at-a-time: {sum(a == b for a, b in zip(answers['ours_bf16'], answers['single']))} of {PROMPTS} (bf16 rounding "
            "changes some greedy continuations)", rss),
        Row("gen", what, round(speeds["ours"], 1), round(speeds["fixed"], 1), f"transformers.generate, fixed "
            f"length-sorted batches of {SLOTS}", "-", None,
            "the gain of continuous batching over rualign's previous fixed batches", rss),
    ]


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    for row in run():
        print(row)
