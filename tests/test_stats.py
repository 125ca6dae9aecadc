"""Statistics of pairwise judgments on hand-made and simulated data with known truth."""

from __future__ import annotations

import numpy as np
import pytest

from rualign.eval.stats import bootstrap_ci, compute_score, fit_logistic, outcome
from rualign.records import AnswerRecord, Judgment


def _compute(judgments, model, reference, **kwargs):
    """compute_score on records made from the short dicts below; returns score.json's content."""
    def record(pid, fields):
        return AnswerRecord(**{"id": pid, "prompt": [{"role": "user", "content": pid}], "answer": "", **fields})

    return compute_score([Judgment(**j) for j in judgments], {k: record(k, v) for k, v in model.items()},
                         {k: record(k, v) for k, v in reference.items()}, **kwargs).dump()


def _j(pid, order, pref, error=None):
    return {"id": pid, "order": order, "preference": pref, "error": error}


def _answers(ids, tokens=100, category="general"):
    return {pid: {"id": pid, "category": category, "answer_tokens": tokens} for pid in ids}


def _both(pid, mf, rf):
    return [_j(pid, "model_first", mf), _j(pid, "reference_first", rf)]


def test_exact_win_rates_ties_count_half():
    judgments = (_both("w", 1.0, 1.0) + _both("t", 1.0, 0.0) + _both("l", 0.0, 0.0)
                 + _both("wt", 1.0, 0.5) + _both("tt", 0.5, 0.5))
    result = _compute(judgments, _answers(["w", "t", "l", "wt", "tt"]), _answers(["w", "t", "l", "wt", "tt"]))
    # values: 1, .5, 0, .75, .5 -> mean .55
    assert result["score"] == pytest.approx(55.0)
    assert (result["wins"], result["ties"], result["losses"]) == (2, 2, 1)
    assert result["tie_rate"] == pytest.approx(0.4)
    assert result["n"] == 5 and result["n_prompts"] == 5
    assert result["failures"]["count"] == 0
    # "t" is the only prompt where the orders name opposite winners
    assert result["order_flip_rate"] == pytest.approx(1 / 5)
    values = {row["id"]: row["value"] for row in result["per_prompt"]}
    assert values == {"w": 1.0, "t": 0.5, "l": 0.0, "wt": 0.75, "tt": 0.5}


def test_failures_are_listed_never_losses_and_partials_use_the_other_order():
    judgments = (_both("ok", 1.0, 1.0)
                 + [_j("half", "model_first", None, "HTTP 500"), _j("half", "reference_first", 1.0)]
                 + [_j("dead", "model_first", None, "unparseable"), _j("dead", "reference_first", None, "timeout")])
    ids = ["ok", "half", "dead", "unjudged"]
    result = _compute(judgments, _answers(ids), _answers(ids))
    assert result["score"] == pytest.approx(100.0)
    assert result["losses"] == 0 and result["wins"] == 2
    assert result["n"] == 2 and result["n_prompts"] == 4
    assert result["failures"]["count"] == 2
    assert result["failures"]["ids"] == ["dead", "unjudged"]
    assert "unparseable" in result["failures"]["reasons"]["dead"]
    assert "timeout" in result["failures"]["reasons"]["dead"]
    assert result["failures"]["reasons"]["unjudged"] == "not judged"
    assert result["partial"] == {"count": 1, "ids": ["half"]}
    # counts add up: every prompt is scored or a failure
    assert result["n"] + result["failures"]["count"] == result["n_prompts"]


def test_first_slot_win_rate_measures_position_bias():
    # The judge always prefers slot A: model wins model_first, loses reference_first.
    judgments = [row for i in range(10) for row in _both(f"p{i}", 1.0, 0.0)]
    ids = [f"p{i}" for i in range(10)]
    result = _compute(judgments, _answers(ids), _answers(ids))
    assert result["first_slot_win_rate"] == pytest.approx(1.0)
    assert result["order_flip_rate"] == pytest.approx(1.0)
    assert result["score"] == pytest.approx(50.0)
    assert result["ties"] == 10


def test_per_category_and_lengths():
    model = {"a": {"category": "math", "answer_tokens": 100}, "b": {"category": "math", "answer_tokens": 300},
             "c": {"category": "poetry", "answer_tokens": 500}}
    reference = {k: {"category": v["category"], "answer_tokens": 540} for k, v in model.items()}
    judgments = _both("a", 1.0, 1.0) + _both("b", 0.0, 0.0) + _both("c", 1.0, 0.5)
    result = _compute(judgments, model, reference, target=540)
    assert result["per_category"]["math"]["score"] == pytest.approx(50.0)
    assert result["per_category"]["math"]["n"] == 2
    assert result["per_category"]["poetry"] == {"score": 75.0, "ci_low": 75.0, "ci_high": 75.0, "n": 1}
    lengths = result["lengths"]
    assert lengths["target"] == 540
    assert lengths["model"]["mean"] == pytest.approx(300.0)
    assert lengths["model"]["median"] == pytest.approx(300.0)
    assert lengths["model"]["p90"] == pytest.approx(460.0)
    assert lengths["model"]["gap_to_target"] == pytest.approx(-240.0)
    assert lengths["reference"]["gap_to_target"] == pytest.approx(0.0)


def test_outcome_band():
    assert [outcome(v) for v in (0.0, 0.25, 0.5, 0.75, 1.0)] == ["loss", "loss", "tie", "win", "win"]
    assert outcome(0.55) == "tie" and outcome(0.62) == "win"


def test_bootstrap_ci_coverage_near_nominal():
    rng = np.random.default_rng(123)
    support = np.array([0.0, 0.25, 0.5, 0.75, 1.0])
    probs = np.array([0.2, 0.1, 0.2, 0.15, 0.35])
    truth = float(support @ probs)
    covered = 0
    sims = 200
    for _ in range(sims):
        values = rng.choice(support, size=80, p=probs)
        low, high = bootstrap_ci(values, rng, n_boot=1000)
        covered += low <= truth <= high
    assert 0.90 <= covered / sims <= 0.98


def test_bootstrap_is_seeded_and_over_prompts():
    rng_values = np.random.default_rng(0).random(50)
    judgments = [row for i, v in enumerate(rng_values) for row in _both(f"p{i}", float(v), float(v))]
    ids = [f"p{i}" for i in range(50)]
    first = _compute(judgments, _answers(ids), _answers(ids), seed=7)
    again = _compute(judgments, _answers(ids), _answers(ids), seed=7)
    assert (first["ci_low"], first["ci_high"]) == (again["ci_low"], again["ci_high"])
    # CI width of a mean of 50 prompts (not of 100 rows): about 2 * 1.96 * sd / sqrt(50)
    expected = 2 * 1.96 * rng_values.std() / np.sqrt(50) * 100
    assert (first["ci_high"] - first["ci_low"]) == pytest.approx(expected, rel=0.15)


def _simulate(n, *, quality_logit, length_effect, position_effect, model_mean, ref_mean, seed):
    """Two-order verdicts from a judge that may prefer longer answers and slot A."""
    rng = np.random.default_rng(seed)
    model_tokens = np.clip(rng.normal(model_mean, 150, n), 20, None).round().astype(int)
    ref_tokens = np.clip(rng.normal(ref_mean, 150, n), 20, None).round().astype(int)
    judgments = []
    for i in range(n):
        length_term = length_effect * np.tanh((model_tokens[i] - ref_tokens[i]) / 200.0)
        for order, slot in (("model_first", 1.0), ("reference_first", -1.0)):
            logit = quality_logit + length_term + position_effect * slot
            win = rng.random() < 1.0 / (1.0 + np.exp(-logit))
            judgments.append(_j(f"p{i}", order, 1.0 if win else 0.0))
    model = {f"p{i}": {"category": None, "answer_tokens": int(model_tokens[i])} for i in range(n)}
    ref = {f"p{i}": {"category": None, "answer_tokens": int(ref_tokens[i])} for i in range(n)}
    return judgments, model, ref


def test_length_control_recovers_unbiased_win_rate():
    # True quality is equal (50%); the judge prefers longer answers and the model writes longer ones.
    raw, lc = [], []
    for seed in range(5):
        judgments, model, ref = _simulate(1000, quality_logit=0.0, length_effect=2.0, position_effect=0.4,
                                          model_mean=750, ref_mean=450, seed=seed)
        result = _compute(judgments, model, ref, n_boot=200)
        assert result["score"] > 70  # the length-biased judge inflates the raw score
        assert abs(result["lc_score"] - 50.0) < 8  # one run: the LC estimate is noisier than the raw one
        assert result["lc_warning"] is not None and "length" in result["lc_warning"]
        raw.append(result["score"])
        lc.append(result["lc_score"])
    assert abs(np.mean(lc) - 50.0) < 3  # no systematic bias left
    assert np.mean(raw) > 75


def test_length_control_keeps_a_real_quality_difference():
    judgments, model, ref = _simulate(600, quality_logit=1.0, length_effect=0.0, position_effect=0.0,
                                      model_mean=500, ref_mean=500, seed=4)
    result = _compute(judgments, model, ref)
    assert abs(result["lc_score"] - result["score"]) < 3
    assert result["lc_warning"] is None
    assert result["score"] == pytest.approx(100 / (1 + np.exp(-1.0)), abs=4)


def test_reference_against_itself_is_fifty_with_ci_covering_fifty():
    # Identical answers: only noise and position bias decide.
    judgments, model, ref = _simulate(300, quality_logit=0.0, length_effect=0.0, position_effect=0.85,
                                      model_mean=400, ref_mean=400, seed=5)
    for pid in model:
        ref[pid]["answer_tokens"] = model[pid]["answer_tokens"]
    result = _compute(judgments, model, ref)
    assert abs(result["score"] - 50.0) < 4
    assert result["ci_low"] <= 50.0 <= result["ci_high"]
    assert result["first_slot_win_rate"] == pytest.approx(0.70, abs=0.04)
    assert result["lc_score"] == pytest.approx(result["score"], abs=1.5)


def test_logistic_fit_recovers_coefficients():
    rng = np.random.default_rng(0)
    x = np.column_stack([np.ones(5000), rng.normal(size=5000)])
    y = (rng.random(5000) < 1 / (1 + np.exp(-(0.5 + 1.5 * x[:, 1])))).astype(float)
    beta = fit_logistic(x, y)
    assert beta == pytest.approx([0.5, 1.5], abs=0.12)


def test_all_failed_gives_no_score():
    judgments = [_j("a", "model_first", None, "x"), _j("a", "reference_first", None, "y")]
    result = _compute(judgments, _answers(["a"]), _answers(["a"]))
    assert result["score"] is None and result["n"] == 0 and result["failures"]["count"] == 1
    assert result["tie_rate"] is None and result["lc_score"] is None


def _identical(pid):
    return [{**_j(pid, order, 0.5), "identical": True} for order in ("model_first", "reference_first")]


def test_identical_pairs_are_ties_outside_the_judge_diagnostics():
    # A judge that always prefers slot A: every judged prompt flips, slot A wins 0.9 of the time.
    judgments = _both("a", 0.9, 0.1) + _both("b", 0.9, 0.1) + _identical("same1") + _identical("same2")
    ids = ["a", "b", "same1", "same2"]
    result = _compute(judgments, _answers(ids), _answers(ids))
    assert result["score"] == pytest.approx(50.0) and result["n"] == 4  # every value is ½
    assert (result["wins"], result["ties"], result["losses"]) == (0, 4, 0)
    assert result["identical_pairs"] == {"count": 2, "ids": ["same1", "same2"]}
    assert result["failures"]["count"] == 0
    # Identical pairs had no judge call: diluting these rates with them would hide the position bias.
    assert result["order_flip_rate"] == pytest.approx(1.0)
    assert result["first_slot_win_rate"] == pytest.approx(0.9)
    flags = {row["id"]: row["identical"] for row in result["per_prompt"]}
    assert flags == {"a": False, "b": False, "same1": True, "same2": True}
