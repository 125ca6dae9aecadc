"""Fuzz every stage with generated hostile inputs (issue 16): `python bench/fuzz_inputs.py [--n 10000]
[--stage data ...]`. Uses the harness in tests/fuzz_strategies.py: every input must exit 0 or 2 without a
traceback, touch nothing outside its root folder, and leave its inputs byte-identical when it fails.
Prints per-stage counts of exit codes and the wall time; a violation stops the run with the failing input
(hypothesis shrinks it first)."""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")


def fuzz(stage: str, n: int, counts: Counter) -> float:
    from fuzz_strategies import check_example
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    started = time.perf_counter()

    @settings(max_examples=n, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(st.data())
    def one(data):
        check_example(stage, data.draw, counts, fast=True)
        done = counts[f"{stage}:exit0"] + counts[f"{stage}:exit2"]
        if done % 1000 == 0:  # progress, so a long run that is stopped still says how far it got
            print(f"  {stage}: {done} inputs ({counts[f'{stage}:exit0']} exit 0), "
                  f"{time.perf_counter() - started:.0f}s", flush=True)

    one()
    return time.perf_counter() - started


def main() -> int:
    import logging

    from fuzz_strategies import STAGES

    logging.disable(logging.WARNING)  # judge fallbacks and the like, thousands of times
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=10_000, help="generated inputs per stage (default 10000)")
    parser.add_argument("--stage", action="append", choices=sorted(STAGES), help="only this stage (repeatable)")
    args = parser.parse_args()
    from rualign.models import ensure_default_model

    ensure_default_model()  # once, outside the timings
    counts: Counter = Counter()
    print(f"{'stage':10} {'inputs':>7} {'exit 0':>7} {'exit 2':>7} {'seconds':>8}")
    for stage in args.stage or sorted(STAGES):
        seconds = fuzz(stage, args.n, counts)
        ok, refused = counts[f"{stage}:exit0"], counts[f"{stage}:exit2"]
        print(f"{stage:10} {ok + refused:7d} {ok:7d} {refused:7d} {seconds:8.1f}", flush=True)
    print("no traceback, no write or delete outside the root, inputs intact after every failure")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
