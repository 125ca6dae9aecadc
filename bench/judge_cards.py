"""Judge cards of the embedded judges in each mode: the table behind README's "Judge modes" part.

    python bench/judge_cards.py --out runs/judge_cards                      # every row, full bundled:gold_ru
    python bench/judge_cards.py --out runs/judge_cards smol-pointwise gemma-pointwise --gold subset.jsonl

Each row is `rualign judge-check` (the normal judge path: cache, retries, both orders) with its own call cache
in OUT/NAME.sqlite, so its time is its own. A row whose card already exists in OUT/NAME is only read again.

`--cached-only` builds each card from its call cache alone, without starting a judge: a call that is not cached
fails (and is counted as such on the card: `n` is the pairs judged in both orders), so an interrupted row still
gives the card of the pairs it finished, and the `min_verdict_mass: 0` rows cost nothing.

Seconds: `wall` is the judge-check's wall time; `active` sums the gaps between consecutive cached calls that
are shorter than 60 s, so time a shared machine spent paused (other jobs measured, ours stopped) is left out.
Both depend on load; accuracy, rates and mass do not. Also printed per logprob row: the accuracy had the free
call's letter probabilities been used whatever their mass (`min_verdict_mass: 0`, read back from the
cached top logprobs, no new calls), with and without averaging the two orders in logit space (a position
calibration: an additive first-slot bias cancels exactly).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROWS = {  # name: judge config (written to OUT/NAME.yaml, passed as --judge-config)
    "smol-logprob": {"model": "default", "mode": "logprob"},
    "smol-logprob-en": {"model": "default", "mode": "logprob", "template": "judge_pairwise_en_v1"},
    "smol-verdict": {"model": "default", "mode": "verdict"},
    "smol-pointwise": {"model": "default", "mode": "pointwise"},
    "smol-pointwise-en": {"model": "default", "mode": "pointwise", "template": "judge_pointwise_en_v1"},
    # The same cached calls read with min_verdict_mass 0: the free call's letters / digits renormalised whatever
    # probability they carry (no constrained call, no new call: the free calls are in the base row's cache).
    "smol-logprob-mass0": {"model": "default", "mode": "logprob", "min_verdict_mass": 0.0, "cache": "smol-logprob"},
    "smol-pointwise-mass0": {"model": "default", "mode": "pointwise", "min_verdict_mass": 0.0,
                             "cache": "smol-pointwise"},
    "smol-logprob-en-mass0": {"model": "default", "mode": "logprob", "template": "judge_pairwise_en_v1",
                              "min_verdict_mass": 0.0, "cache": "smol-logprob-en"},
    "smol-pointwise-en-mass0": {"model": "default", "mode": "pointwise", "template": "judge_pointwise_en_v1",
                                "min_verdict_mass": 0.0, "cache": "smol-pointwise-en"},
    "gemma-logprob": {"model": "gemma3-270m", "mode": "logprob"},
    "gemma-pointwise": {"model": "gemma3-270m", "mode": "pointwise"},
    "gemma-logprob-mass0": {"model": "gemma3-270m", "mode": "logprob", "min_verdict_mass": 0.0,
                            "cache": "gemma-logprob"},
    "gemma-pointwise-mass0": {"model": "gemma3-270m", "mode": "pointwise", "min_verdict_mass": 0.0,
                              "cache": "gemma-pointwise"},
}


def active_seconds(cache: Path, gap_s: float = 60.0) -> float | None:
    if not cache.exists():
        return None
    with sqlite3.connect(cache) as db:
        times = sorted(t for (t,) in db.execute("SELECT created FROM calls"))
    return float(sum(d for d in np.diff(times) if d < gap_s)) if len(times) > 1 else None


def _logit(p: float) -> float:
    p = min(max(p, 1e-6), 1 - 1e-6)
    return math.log(p / (1 - p))


def renormalised(folder: Path) -> dict | None:
    """Logprob rows only: accuracy from the free call's letters at any mass, averaged in probability space
    (as the score does) and in logit space (position-calibrated)."""
    from rualign.eval import parse
    from rualign.eval.judge_reply import TopLogprob

    per_pair: dict[str, dict[str, float]] = {}
    for line in (folder / "judgments.jsonl").read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        if row.get("mode") not in ("logprob", "constrained") or not row.get("raw"):
            return None
        top = json.loads(row["raw"]).get("top_logprobs") or []
        dist = parse.letter_distribution([TopLogprob(**entry) for entry in top])
        if dist.probs is None:
            continue
        per_pair.setdefault(row["id"], {})[row["order"]] = parse.model_preference(dist.probs, row["order"])
    both = [v for v in per_pair.values() if len(v) == 2]
    if not both:
        return None
    prob = [(v["model_first"] + v["reference_first"]) / 2 for v in both]
    logit = [1 / (1 + math.exp(-(_logit(v["model_first"]) + _logit(v["reference_first"])) / 2)) for v in both]
    return {"n": len(both), "prob_avg": round(float(np.mean(prob)), 4), "logit_avg": round(float(np.mean(logit)), 4),
            "logit_hard": round(float(np.mean([1.0 if x > 0.5 else 0.0 if x < 0.5 else 0.5 for x in logit])), 4)}


class _CacheOnly:
    """A judge backend that has nothing to say: every call not answered by the cache fails."""

    def __init__(self, identity: str):
        self.identity = identity

    async def complete(self, messages, kind):
        from rualign.eval.client import CallFailed

        raise CallFailed("not in the call cache (--cached-only)")

    def stats(self) -> dict:
        return {"requests": 0, "retries": 0}

    async def aclose(self) -> None:
        return None


def cached_only_card(config: dict, gold: str, folder: Path, cache: Path) -> None:
    """The card of `config` from `cache` alone, through the normal judge-check path (identity as llamacpp's)."""
    from rualign.eval import judge as judge_mod
    from rualign.eval.judge_backends import llamacpp_judge
    from rualign.eval.judge_check import run_judge_check
    from rualign.eval.schema import JudgeConfig

    cfg = JudgeConfig(backend="llamacpp", **config)
    _, identity, _ = llamacpp_judge(cfg.model)  # what the llamacpp backend keys its calls by

    @contextlib.contextmanager
    def factory(_cfg):
        yield lambda: _CacheOnly(identity)

    judge_mod.backend_factory = factory
    run_judge_check(gold, cfg, folder, cache_path=cache)


def run_row(name: str, config: dict, out: Path, gold: str, cached_only: bool = False) -> dict:
    folder = out / name
    wall = None
    config = dict(config)
    cache = out / f"{config.pop('cache', name)}.sqlite"
    if cached_only:
        cached_only_card(config, gold, folder, cache)
    elif not (folder / "judge_card.json").exists():
        out.mkdir(parents=True, exist_ok=True)
        settings = out / f"{name}.yaml"
        settings.write_text(json.dumps({"backend": "llamacpp", **config}), encoding="utf-8")  # JSON is YAML
        started = time.perf_counter()
        subprocess.run([sys.executable, "-m", "rualign", "judge-check", "--judge-config", str(settings), "--gold", gold,
                        "--out", str(folder), "--cache", str(cache)], check=True)
        wall = round(time.perf_counter() - started)
    card = json.loads((folder / "judge_card.json").read_text(encoding="utf-8"))
    return {"name": name, "card": card, "wall_s": wall, "active_s": active_seconds(cache),
            "renormalised": renormalised(folder)}


def table(rows: list[dict]) -> str:
    def f(x):
        return "–" if x is None else f"{x:.2f}"
    lines = ["| judge | mode | template | n | accuracy [95% CI] | first-slot | tie | verdict mass | "
             "acc. chosen shorter / longer | active s | status |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        c, lb = r["card"], r["card"]["length_bias"]
        lines.append(f"| {c['judge']['name']} | {c['judge']['mode']} | {c['judge']['template_version']} | {c['n']} | "
                     f"{f(c['accuracy'])} [{f(c['ci_low'])}, {f(c['ci_high'])}] | {f(c['first_slot_rate'])} | "
                     f"{f(c['tie_rate'])} | {f(c['verdict_mass'])} | {f(lb['chosen_shorter']['accuracy'])} / "
                     f"{f(lb['chosen_longer']['accuracy'])} | {r['active_s'] and round(r['active_s'])} | "
                     f"{'validated' if c['validated'] else 'unvalidated'} |")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help=f"rows to run (default all): {', '.join(ROWS)}")
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--gold", default="bundled:gold_ru")
    parser.add_argument("--cached-only", action="store_true", help="cards from the call caches alone (no judge)")
    args = parser.parse_args(argv)
    rows = [run_row(n, ROWS[n], args.out, args.gold, args.cached_only) for n in (args.names or ROWS)]
    print(table(rows))
    for r in rows:
        if r["renormalised"]:
            print(f"{r['name']}: free-call letters at any mass: {r['renormalised']}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
