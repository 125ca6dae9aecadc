"""Judge card: how a judge does on gold pairs whose better answer is known. Pure functions over judge rows.

A row is a judgments.jsonl row where the "model" answer is the gold `chosen` and the "reference" is `rejected`,
so `preference` is directly the judge's preference for the better answer.

- accuracy: mean over pairs of the mean preference for `chosen` over both orders (ties count ½), with a
  percentile bootstrap CI over pairs. A judge that always picks slot A scores exactly 0.5. Only pairs judged
  in both orders count (a pair with a failed order is a failed pair).
- first_slot_rate: mean preference for whatever sat in slot A, over calls (0.5 = no position bias).
- order_flip_rate: share of pairs judged in both orders whose two calls name opposite winners.
- tie_rate: share of calls whose verdict is a tie.
- verdict_mass: mean probability the judge put on valid verdict tokens (logprob mode; None otherwise).
- length_bias: accuracy on pairs where `chosen` is the shorter answer vs the longer one; a judge that just
  likes length is right on the second kind and wrong on the first.
A card is **unvalidated** when its accuracy CI contains 0.5 (or lies below it) or verdict_mass < 0.5.
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import TYPE_CHECKING

import numpy as np

from rualign.records import CardAccuracy, Judgment, JudgeCard, LengthBias

if TYPE_CHECKING:
    from rualign.eval.judge_check import GoldPair

MIN_VERDICT_MASS = 0.5
N_BOOT = 2000


def _valid(row: Judgment) -> bool:
    return not row.error and row.preference is not None and not math.isnan(row.preference)


def _ci(values: np.ndarray, rng: np.random.Generator) -> tuple[float | None, float | None]:
    if values.size == 0:
        return None, None
    idx = rng.integers(0, values.size, size=(N_BOOT, values.size))
    low, high = np.quantile(values[idx].mean(1), [0.025, 0.975])
    return float(low), float(high)


def _acc(values: list[float], rng: np.random.Generator) -> CardAccuracy:
    arr = np.asarray(values, float)
    low, high = _ci(arr, rng)
    return CardAccuracy(accuracy=_r(arr.mean()) if arr.size else None, ci_low=_r(low), ci_high=_r(high),
                        n=int(arr.size))


def _r(x: float | None) -> float | None:
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else round(float(x), 4)


def _per_pair(rows: list[Judgment]) -> dict[str, list[Judgment]]:
    grouped: dict[str, list[Judgment]] = defaultdict(list)
    for row in rows:
        if _valid(row):
            grouped[row.id].append(row)
    return grouped


def verdict_of(row: Judgment) -> str:
    """'chosen' / 'rejected' / 'tie' from a row's preference (the same tie band as the score)."""
    p = row.preference
    return "chosen" if p > 0.6 else "rejected" if p < 0.4 else "tie"


def build_card(rows: list[Judgment], pairs: list[GoldPair], *, seed: int = 0) -> JudgeCard:
    """The judge card (without the judge/gold identity, which the caller adds)."""
    rng = np.random.default_rng(seed)
    grouped = _per_pair(rows)
    # A pair is scored only when judged in both orders: one order alone carries the judge's position bias (a
    # judge that always picks A scores 1 on a pair seen only with the better answer first). A pair with one
    # order failed counts as failed; its other call still counts in the per-call rates below.
    value = {pid: float(np.mean([r.preference for r in calls])) for pid, calls in grouped.items()
             if {r.order for r in calls} >= {"model_first", "reference_first"}}
    calls = [r for rs in grouped.values() for r in rs]
    slot_a = [r.preference if r.order == "model_first" else 1 - r.preference for r in calls]
    both = [rs for rs in grouped.values() if len(rs) >= 2]
    flips = sum(1 for rs in both if {"chosen", "rejected"} <= {verdict_of(r) for r in rs})
    # Over every call that measured it, failed ones included: a call failed for too little mass is the evidence.
    masses = [r.verdict_mass for r in rows if r.verdict_mass is not None]
    by_id = {p.id: p for p in pairs}
    shorter = [value[p] for p in value if len(by_id[p].chosen) < len(by_id[p].rejected)]
    longer = [value[p] for p in value if len(by_id[p].chosen) > len(by_id[p].rejected)]
    categories: dict[str, list[float]] = defaultdict(list)
    for pid, v in value.items():
        categories[by_id[pid].category or "uncategorized"].append(v)
    overall = _acc(list(value.values()), rng)
    card = JudgeCard(**overall.model_dump(), n_pairs=len(pairs), failed_pairs=len(pairs) - len(value),
                     first_slot_rate=_r(np.mean(slot_a)) if slot_a else None,
                     order_flip_rate=_r(flips / len(both)) if both else None,
                     tie_rate=_r(np.mean([verdict_of(r) == "tie" for r in calls])) if calls else None,
                     verdict_mass=_r(np.mean(masses)) if masses else None,
                     length_bias=LengthBias(chosen_shorter=_acc(shorter, rng), chosen_longer=_acc(longer, rng),
                                            gap=_r(np.mean(longer) - np.mean(shorter)) if shorter and longer else None),
                     per_category={c: _acc(v, rng) for c, v in sorted(categories.items())})
    card.validated, card.reasons = verdict_on(card)
    return card


def verdict_on(card: JudgeCard) -> tuple[bool, list[str]]:
    """(validated, reasons it is not): at chance, below chance, too little verdict mass, nothing judged."""
    reasons = []
    if card.accuracy is None:
        reasons.append("no gold pair could be judged")
    elif card.ci_low <= 0.5:
        reasons.append(f"accuracy {card.accuracy:.2f} [{card.ci_low:.2f}, {card.ci_high:.2f}] is not above "
                       "chance (its 95% CI reaches 0.5)")
    if card.verdict_mass is not None and card.verdict_mass < MIN_VERDICT_MASS:
        reasons.append(f"only {card.verdict_mass:.2f} of its probability is on verdict letters (< {MIN_VERDICT_MASS})")
    return not reasons, reasons


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{x:.2f}"


def _pointwise_note(card: JudgeCard) -> list[str]:
    if card.judge.mode != "pointwise":
        return []
    return ["Pointwise judge: each answer is scored alone (1-9), so no slot exists: the first-slot rate is 0.5 and "
            "the order-flip rate 0 by construction; verdict mass is the probability on the score digits.", ""]


def markdown(card: JudgeCard) -> str:
    status = "validated" if card.validated else "**UNVALIDATED**: " + "; ".join(card.reasons)
    lb = card.length_bias
    lines = [f"# Judge card: {card.judge.name or '?'}", "",
             f"Gold set: `{card.gold.name or '?'}` ({card.n} of {card.n_pairs} pairs judged, "
             "each in both answer orders)", "", f"Status: {status}", "", *_pointwise_note(card),
             "| statistic | value | meaning |", "|---|---|---|",
             f"| accuracy | {_pct(card.accuracy)} [{_pct(card.ci_low)}, {_pct(card.ci_high)}] | "
             "mean preference for the better answer (0.5 = chance) |",
             f"| first-slot rate | {_pct(card.first_slot_rate)} | preference for whatever is shown first "
             "(0.5 = no position bias) |",
             f"| order-flip rate | {_pct(card.order_flip_rate)} | pairs whose winner changes with the order |",
             f"| tie rate | {_pct(card.tie_rate)} | calls answered with a tie |",
             f"| verdict mass | {_pct(card.verdict_mass)} | probability on valid verdict letters (logprob mode) |",
             f"| accuracy, better answer shorter | {_pct(lb.chosen_shorter.accuracy)} "
             f"(n={lb.chosen_shorter.n}) | a length-loving judge fails here |",
             f"| accuracy, better answer longer | {_pct(lb.chosen_longer.accuracy)} "
             f"(n={lb.chosen_longer.n}) | |", "", "## Per kind", "",
             "| kind | accuracy | 95% CI | n |", "|---|---|---|---|"]
    for name, c in card.per_category.items():
        lines.append(f"| {name} | {_pct(c.accuracy)} | [{_pct(c.ci_low)}, {_pct(c.ci_high)}] | {c.n} |")
    return "\n".join(lines) + "\n"
