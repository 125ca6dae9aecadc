"""Paired comparison of two score.json files: same prompts, same judge, which model is better?

Pairs `per_prompt` values by id (prompts scored in both; failures on either side are left out and
counted). Difference = mean(A - B) in points; 95% CI by percentile bootstrap over the paired prompts;
two-sided p-value by a sign-flip permutation test (under "no difference" each paired difference is
equally likely to have either sign), with the +1 correction so p is never 0.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from rualign.eval.stats import CI_LEVEL, bootstrap_ci
from rualign.records import Score


def _values(score: Score) -> dict[str, float | None]:
    return {entry.id: entry.value for entry in score.per_prompt}


def sign_flip_p_value(diffs: np.ndarray, rng: np.random.Generator, n_perm: int = 10000) -> float:
    if diffs.size == 0:
        return float("nan")
    observed = abs(diffs.mean())
    signs = rng.choice(np.array([-1.0, 1.0]), size=(n_perm, diffs.size))
    null = np.abs((signs * diffs).mean(axis=1))
    return float((1 + np.count_nonzero(null >= observed - 1e-12)) / (n_perm + 1))


def compare_scores(a: Score, b: Score, *, path_a: Path | str = "A", path_b: Path | str = "B", seed: int = 0,
                   n_boot: int = 2000, n_perm: int = 10000) -> dict[str, Any]:
    values_a, values_b = _values(a), _values(b)
    shared = [pid for pid in values_a if pid in values_b]
    paired = [pid for pid in shared if values_a[pid] is not None and values_b[pid] is not None]
    diffs = np.array([values_a[pid] - values_b[pid] for pid in paired], dtype=float)
    rng = np.random.default_rng(seed)
    low, high = bootstrap_ci(diffs, rng, n_boot)
    mean_a = float(np.mean([values_a[p] for p in paired])) if paired else float("nan")
    mean_b = float(np.mean([values_b[p] for p in paired])) if paired else float("nan")

    def pts(x: float) -> float | None:
        return None if np.isnan(x) else round(100.0 * x, 2)

    return {
        "a": str(path_a), "b": str(path_b), "n_paired": len(paired),
        "score_a": pts(mean_a), "score_b": pts(mean_b),
        "diff": pts(float(diffs.mean()) if paired else float("nan")),
        "ci_low": pts(low), "ci_high": pts(high), "ci_level": CI_LEVEL,
        "p_value": None if not paired else round(sign_flip_p_value(diffs, rng, n_perm), 5),
        "a_better": int(np.count_nonzero(diffs > 0)), "b_better": int(np.count_nonzero(diffs < 0)),
        "equal": int(np.count_nonzero(diffs == 0)),
        "only_in_a": [pid for pid in values_a if pid not in values_b],
        "only_in_b": [pid for pid in values_b if pid not in values_a],
        "failed_in_either": [pid for pid in shared if pid not in set(paired)],
        "judge_a": a.judge.model_dump(mode="json") if a.judge else None,
        "judge_b": b.judge.model_dump(mode="json") if b.judge else None,
        "seed": seed, "n_boot": n_boot, "n_perm": n_perm,
    }


def render(result: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    table = Table(title=f"paired comparison on {result['n_paired']} prompts")
    for column in ("", "A", "B", "A − B", "95% CI", "p"):
        table.add_column(column)
    ci = "-" if result["ci_low"] is None else f"[{result['ci_low']:+.2f}, {result['ci_high']:+.2f}]"
    diff = "-" if result["diff"] is None else f"{result['diff']:+.2f}"
    table.add_row("score", str(result["score_a"]), str(result["score_b"]), diff, ci, str(result["p_value"]))
    table.add_row("prompts better", str(result["a_better"]), str(result["b_better"]), f"{result['equal']} equal",
                  "", "")
    console.print(table)
    console.print(f"A = {result['a']}\nB = {result['b']}", markup=False)
    for key, label in (("only_in_a", "only in A"), ("only_in_b", "only in B"),
                       ("failed_in_either", "judge failure on either side")):
        ids = result[key]
        if ids:
            shown = ", ".join(ids[:10]) + (" …" if len(ids) > 10 else "")
            console.print(f"{len(ids)} prompt(s) {label}, not paired: {shown}", markup=False)
    if result["judge_a"] != result["judge_b"]:
        console.print("[yellow]warning: the two scores come from different judges; the difference mixes "
                      "model and judge effects[/yellow]")
