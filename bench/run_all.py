"""Run the benchmark suite (or the named ones) and rewrite BENCHMARKS.md.

    python bench/run_all.py            # everything (tens of minutes on 2 cores)
    python bench/run_all.py data gen   # a subset
"""

from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import save, write_benchmarks_md  # noqa: E402

BENCHES = {
    "data": "bench_data",
    "judge": "bench_judge",
    "leaderboard": "bench_leaderboard",
    "gen": "bench_gen",
    "sft_levers": "bench_sft_levers",
    "flops": "bench_flops",
    "dpo": "bench_dpo",
    "sft": "bench_sft",
}


def main(argv: list[str]) -> int:
    names = argv or list(BENCHES)
    unknown = [n for n in names if n not in BENCHES]
    if unknown:
        print(f"unknown benchmark(s) {unknown}; known: {sorted(BENCHES)}")
        return 2
    for name in names:
        # One process per benchmark: its peak RSS is its own, and an edited bench file is read afresh.
        subprocess.run([sys.executable, __file__, "--one", name], check=True)
    print(f"wrote {write_benchmarks_md()}")
    return 0


def run_one(name: str) -> None:
    rows = importlib.import_module(BENCHES[name]).run()
    print(f"{name}: saved {save(name, rows)}", flush=True)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--one"]:
        run_one(sys.argv[2])
        raise SystemExit(0)
    raise SystemExit(main(sys.argv[1:]))
