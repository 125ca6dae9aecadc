"""Score statistics that come from the judge rows but are not the score itself: verdict mass and, in verdict
mode, per-criterion win rates. Pure functions over judgments.jsonl rows (Judgment records).

- verdict_mass: how much probability the judge put on the verdict letters at all (logprob calls only). A low
  mean says the letters were noise next to what the judge wanted to write; calls below the judge's
  `min_verdict_mass` are failures, never renormalised into verdicts.
- criteria: the model's win rate per criterion (relevance, helpfulness, clarity, language) from the verdict-mode
  JSON, as 0..100 with ties counted ½: per prompt the mean over its answer orders, then the mean over prompts.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass

from rualign.eval.parse import CRITERIA
from rualign.records import Judgment

_SIDE_VALUE = {"model": 1.0, "tie": 0.5, "reference": 0.0}
UNVALIDATED_MASS = 0.5


@dataclass(frozen=True)
class MassSummary:
    mean: float
    min: float
    calls: int  # calls that recorded a verdict mass
    below_half: int


def verdict_mass_summary(rows: list[Judgment]) -> MassSummary | None:
    """Mean / min verdict mass over calls that recorded one; None when none did."""
    masses = [r.verdict_mass for r in rows if r.verdict_mass is not None and not math.isnan(r.verdict_mass)]
    if not masses:
        return None
    return MassSummary(mean=round(sum(masses) / len(masses), 4), min=round(min(masses), 4), calls=len(masses),
                       below_half=sum(1 for m in masses if m < UNVALIDATED_MASS))


def criteria_win_rates(rows: list[Judgment]) -> dict[str, float | None] | None:
    """Per-criterion win rate of the model (0..100, ties ½); None when no row carries criteria."""
    per_prompt: dict[str, dict[str, list[float]]] = {name: defaultdict(list) for name in CRITERIA}
    for row in rows:
        if row.error or row.criteria is None:
            continue
        for name in CRITERIA:
            side = row.criteria.get(name)  # {criterion: side}; a criterion the judge left out is absent
            if side in _SIDE_VALUE:
                per_prompt[name][row.id].append(_SIDE_VALUE[side])
    if not any(per_prompt.values()):
        return None
    rates = {}
    for name, prompts in per_prompt.items():
        values = [sum(v) / len(v) for v in prompts.values()]
        rates[name] = round(100.0 * sum(values) / len(values), 2) if values else None
    return rates
