"""Pairwise-judge statistics: score, bootstrap CIs, ties/flips/position bias, lengths, length control.

Conventions (docs/formats.md, DESIGN "Evaluation, precisely"):
- A judgment's `preference` is the preference for the MODEL answer in [0, 1]; `null` is a failed call.
- Per-prompt value = mean of the successful orders. One failed order: the other order is used and the
  prompt is counted as `partial`. Both failed (or never judged): the prompt is a failure, listed with its
  reasons and left out of every rate, never counted as a loss.
- Outcomes use a tie band of `TIE_EPS` around ½: with parsed verdicts the values are in
  {0, .25, .5, .75, 1}, so "win + tie" (.75) is a win and "win + loss" (.5) a tie; with logprob
  preferences values within 0.4..0.6 are ties.
- Identical pairs (rows with `identical: true`: both answers the same text, never sent to the judge) are
  real ties: ½ per prompt in the score, the CIs, the tie count and the length-controlled fit (a tie at zero
  length difference). They are no judge behaviour, so they stay out of order_flip_rate and
  first_slot_win_rate, and are counted in `identical_pairs`.
- order_flip_rate: share of judged prompts with both orders whose two calls name OPPOSITE winners (model
  in one order, reference in the other), the classic symptom of position bias.
- first_slot_win_rate: mean preference for whichever answer sat in slot A, over successful judge calls
  (ties count ½, so an unbiased judge gives 0.5).
- Confidence intervals: percentile bootstrap over prompts (never over expanded judge rows), seeded.
- Length-controlled score (AlpacaEval 2's idea): logistic fit of each call's soft win on an intercept,
  tanh(length difference / its std) and a ±1 position term; the score predicts with the length term at 0.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass

import numpy as np

from rualign.eval.score_extras import criteria_win_rates, verdict_mass_summary

from rualign.records import (DEFAULT_TARGET, AnswerRecord, CategoryScore, Failures, IdList, Judgment, Lengths,
                             LengthStats, PromptValue, Score)

TIE_EPS = 0.1
LC_WARN_POINTS = 10.0
CI_LEVEL = 0.95
_MIN_LC_CALLS = 8  # below this a 3-parameter fit is noise


def outcome(value: float, eps: float = TIE_EPS) -> str:
    """'win' / 'tie' / 'loss' for the model given a preference or per-prompt value."""
    if value > 0.5 + eps:
        return "win"
    if value < 0.5 - eps:
        return "loss"
    return "tie"


def bootstrap_ci(values: np.ndarray, rng: np.random.Generator, n_boot: int = 2000,
                 level: float = CI_LEVEL) -> tuple[float, float]:
    """Percentile bootstrap CI of the mean of `values` (one value per prompt)."""
    values = np.asarray(values, dtype=float)
    if values.size == 0:
        return (math.nan, math.nan)
    if values.size == 1:
        return (float(values[0]), float(values[0]))
    means = _bootstrap_means(values, rng, n_boot)
    alpha = (1.0 - level) / 2.0
    low, high = np.quantile(means, [alpha, 1.0 - alpha])
    return (float(low), float(high))


def _bootstrap_means(values: np.ndarray, rng: np.random.Generator, n_boot: int) -> np.ndarray:
    # Chunked so a large benchmark does not allocate n_boot x n indices at once.
    out = np.empty(n_boot)
    chunk = max(1, 4_000_000 // values.size)
    for start in range(0, n_boot, chunk):
        stop = min(n_boot, start + chunk)
        idx = rng.integers(0, values.size, size=(stop - start, values.size))
        out[start:stop] = values[idx].mean(axis=1)
    return out


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(z, -35, 35)))


def fit_logistic(x: np.ndarray, y: np.ndarray, *, ridge: float = 1e-3, iters: int = 50) -> np.ndarray:
    """Logistic regression with soft labels y in [0, 1] by Newton/IRLS.

    A small ridge keeps the fit finite when the data are separable (e.g. the model wins every call);
    the intercept (column 0) is not penalised.
    """
    beta = np.zeros(x.shape[1])
    penalty = np.full(x.shape[1], ridge)
    penalty[0] = 0.0
    for _ in range(iters):
        p = _sigmoid(x @ beta)
        grad = x.T @ (p - y) + penalty * beta
        weights = np.maximum(p * (1.0 - p), 1e-9)
        hessian = (x * weights[:, None]).T @ x + np.diag(penalty + 1e-9)
        step = np.linalg.solve(hessian, grad)
        beta -= step
        if np.max(np.abs(step)) < 1e-10:
            break
    return beta


def length_controlled(calls: list[dict]) -> float | None:
    """LC win rate in [0, 1] from successful calls with `p`, `model_tokens`, `reference_tokens`, `order`."""
    rows = [c for c in calls if c["model_tokens"] is not None and c["reference_tokens"] is not None]
    if len(rows) < _MIN_LC_CALLS:
        return None
    y = np.array([c["p"] for c in rows], dtype=float)
    diff = np.array([c["model_tokens"] - c["reference_tokens"] for c in rows], dtype=float)
    position = np.array([1.0 if c["order"] == "model_first" else -1.0 for c in rows])
    columns = [np.ones_like(y)]
    scale = diff.std()
    if scale > 0:
        columns.append(np.tanh(diff / scale))
    if np.ptp(position) > 0:
        columns.append(position)
    beta = fit_logistic(np.column_stack(columns), y)
    # Predict every call with the length term removed, keeping its (balanced) position term.
    eta = np.full_like(y, beta[0])
    if np.ptp(position) > 0:
        eta = eta + beta[-1] * position
    return float(_sigmoid(eta).mean())


def _group_calls(judgments: list[Judgment]) -> dict[str, list[Judgment]]:
    grouped: dict[str, list[Judgment]] = defaultdict(list)
    for row in judgments:
        grouped[row.id].append(row)
    return grouped


def _valid(row: Judgment) -> bool:
    p = row.preference
    return p is not None and not row.error and 0.0 <= p <= 1.0 and not math.isnan(p)


def _failure_reason(rows: list[Judgment], has_reference: bool) -> str:
    if not has_reference:
        return "no reference answer"
    if not rows:
        return "not judged"
    reasons = []
    for row in rows:
        if row.error:
            reasons.append(str(row.error))
        elif row.preference is not None and not 0.0 <= row.preference <= 1.0:
            reasons.append(f"preference out of range: {row.preference!r}")
        else:
            reasons.append("unparsed verdict")
    return "; ".join(f"{row.order}: {reason}" for row, reason in zip(rows, reasons))


@dataclass
class _Prompt:
    """One prompt while scoring: its PromptValue and which side each successful order preferred."""

    value: PromptValue
    winners: dict[str, str]


def _per_prompt(ids: list[str], grouped: dict[str, list[Judgment]], model_answers: dict[str, AnswerRecord],
                reference_answers: dict[str, AnswerRecord]) -> tuple[list[_Prompt], list[dict], dict[str, str]]:
    """Per-prompt values, the successful calls (for position and LC stats), and failures by id."""
    per_prompt, calls, failures = [], [], {}
    for pid in ids:
        model, reference = model_answers.get(pid), reference_answers.get(pid)
        rows = grouped.get(pid, [])
        good = [r for r in rows if _valid(r)]
        entry = PromptValue(id=pid, category=(model or reference).category if (model or reference) else None,
                            orders=len(good), identical=bool(good) and all(r.identical for r in good),
                            model_tokens=model.answer_tokens if model else None,
                            reference_tokens=reference.answer_tokens if reference else None)
        winners: dict[str, str] = {}
        if not good:
            failures[pid] = _failure_reason(rows, reference is not None or bool(rows))
        else:
            entry.value = float(np.mean([r.preference for r in good]))
            winners = {r.order: outcome(float(r.preference)) for r in good}
            calls += [{"id": pid, "p": float(r.preference), "order": r.order, "identical": r.identical,
                       "model_tokens": entry.model_tokens, "reference_tokens": entry.reference_tokens}
                      for r in good]
        per_prompt.append(_Prompt(entry, winners))
    return per_prompt, calls, failures


def _flip_rate(scored: list[_Prompt]) -> float | None:
    both = [e for e in scored if e.value.orders >= 2 and len(e.winners) >= 2 and not e.value.identical]
    if not both:
        return None
    flips = sum(1 for e in both if {"win", "loss"} <= set(e.winners.values()))
    return flips / len(both)


def _first_slot(calls: list[dict]) -> float | None:
    slot_a = [c["p"] if c["order"] == "model_first" else 1.0 - c["p"]
              for c in calls if c["order"] in ("model_first", "reference_first") and not c["identical"]]
    return float(np.mean(slot_a)) if slot_a else None


def _per_category(scored: list[PromptValue], rng: np.random.Generator, n_boot: int) -> dict[str, CategoryScore]:
    by_cat: dict[str, list[float]] = defaultdict(list)
    for entry in scored:
        by_cat[entry.category or "uncategorized"].append(entry.value)
    result = {}
    for category in sorted(by_cat):
        values = np.array(by_cat[category])
        low, high = bootstrap_ci(values, rng, n_boot)
        result[category] = CategoryScore(score=_pct(values.mean()), ci_low=_pct(low), ci_high=_pct(high),
                                         n=int(values.size))
    return result


def _pct(x: float | None) -> float | None:
    return None if x is None or math.isnan(x) else round(100.0 * float(x), 2)


def _ordered_ids(model_answers: dict, judgments: list[Judgment]) -> list[str]:
    ids = [str(k) for k in model_answers]
    seen = set(ids)
    for row in judgments:  # judged ids without a model answer still count: nothing is dropped silently
        if row.id not in seen:
            seen.add(row.id)
            ids.append(row.id)
    return ids


def _lc_warning(lc: float | None, score: float, n: int) -> str | None:
    if lc is None or not n or abs(100 * lc - 100 * score) <= LC_WARN_POINTS:
        return None
    return (f"length-controlled score {100 * lc:.1f} differs from the raw score {100 * score:.1f} "
            f"by more than {LC_WARN_POINTS:g} points: answer length drives the judge's preference")


def _lengths(per_prompt: list[PromptValue], target: int) -> Lengths:
    model = [e.model_tokens for e in per_prompt if e.model_tokens is not None]
    reference = [e.reference_tokens for e in per_prompt if e.reference_tokens is not None]
    return Lengths(target=target, model=LengthStats.of(model, target), reference=LengthStats.of(reference, target))


def compute_score(judgments: list[Judgment], model_answers: dict[str, AnswerRecord],
                  reference_answers: dict[str, AnswerRecord], target: int = DEFAULT_TARGET, seed: int = 0,
                  n_boot: int = 2000) -> Score:
    """The Score of docs/formats.md (all but `judge`, which the judge stage adds).

    `model_answers` defines the prompts given (its keys, in order); `reference_answers` may hold more ids.
    `partial` counts prompts scored from one order; `identical_pairs` those scored ½ without a judge call.
    """
    ids = _ordered_ids(model_answers, judgments)
    prompts, calls, failures = _per_prompt(ids, _group_calls(judgments), model_answers, reference_answers)
    per_prompt = [p.value for p in prompts]
    scored = [e for e in per_prompt if e.value is not None]
    values = np.array([e.value for e in scored], dtype=float)
    rng = np.random.default_rng(seed)
    low, high = bootstrap_ci(values, rng, n_boot)
    score = float(values.mean()) if values.size else math.nan
    outcomes = [outcome(v) for v in values]
    n = len(scored)
    lc = length_controlled(calls)
    partial = [e.id for e in scored if e.orders < 2]
    identical = [e.id for e in scored if e.identical]
    mass = verdict_mass_summary(judgments)
    return Score(
        score=_pct(score), ci_low=_pct(low), ci_high=_pct(high), ci_level=CI_LEVEL, n=n, n_prompts=len(ids),
        failures=Failures(count=len(failures), ids=list(failures), reasons=failures),
        partial=IdList(count=len(partial), ids=partial), identical_pairs=IdList(count=len(identical), ids=identical),
        wins=outcomes.count("win"), ties=outcomes.count("tie"), losses=outcomes.count("loss"),
        tie_rate=round(outcomes.count("tie") / n, 4) if n else None,
        order_flip_rate=_round(_flip_rate([p for p in prompts if p.value.value is not None])),
        first_slot_win_rate=_round(_first_slot(calls)), lc_score=_pct(lc), lc_warning=_lc_warning(lc, score, n),
        per_category=_per_category(scored, rng, n_boot), lengths=_lengths(per_prompt, target),
        verdict_mass=mass.mean if mass is not None else None, criteria=criteria_win_rates(judgments),
        tie_eps=TIE_EPS, n_boot=n_boot, seed=seed, per_prompt=per_prompt)


def _round(x: float | None) -> float | None:
    return None if x is None else round(float(x), 4)
