"""Score statistics that come from the judge rows but are not the score itself: verdict mass and, in verdict
mode, per-criterion win rates. Pure functions over judgments.jsonl rows (dicts or records with the same keys).

- verdict_mass: how much probability the judge put on the verdict letters at all (logprob calls only). A low
  mean says the letters were noise next to what the judge wanted to write; calls below the judge's
  `min_verdict_mass` are failures, never renormalised into verdicts.
- criteria: the model's win rate per criterion (relevance, helpfulness, clarity, language) from the verdict-mode
  JSON, as 0..100 with ties counted ½: per prompt the mean over its answer orders, then the mean over prompts.
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Any

from rualign.eval.parse import CRITERIA

_SIDE_VALUE = {"model": 1.0, "tie": 0.5, "reference": 0.0}
UNVALIDATED_MASS = 0.5


def _get(row: Any, key: str) -> Any:
    return row.get(key) if isinstance(row, dict) else getattr(row, key, None)


def verdict_mass_summary(rows: list[Any]) -> dict | None:
    """{"mean", "min", "calls", "below_half"} over calls that recorded a verdict mass; None when none did."""
    masses = [float(m) for r in rows if isinstance(m := _get(r, "verdict_mass"), (int, float)) and not math.isnan(m)]
    if not masses:
        return None
    return {"mean": round(sum(masses) / len(masses), 4), "min": round(min(masses), 4), "calls": len(masses),
            "below_half": sum(1 for m in masses if m < UNVALIDATED_MASS)}


def criteria_win_rates(rows: list[Any]) -> dict[str, float | None] | None:
    """Per-criterion win rate of the model (0..100, ties ½); None when no row carries criteria."""
    per_prompt: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for row in rows:
        criteria = _get(row, "criteria")
        if _get(row, "error") or not isinstance(criteria, dict):
            continue
        for name in CRITERIA:
            side = criteria.get(name)
            if side in _SIDE_VALUE:
                per_prompt[name][str(_get(row, "id"))].append(_SIDE_VALUE[side])
    if not per_prompt:
        return None
    rates = {}
    for name in CRITERIA:
        prompts = per_prompt.get(name) or {}
        values = [sum(v) / len(v) for v in prompts.values()]
        rates[name] = round(100.0 * sum(values) / len(values), 2) if values else None
    return rates
