"""The joint length/style-controlled fit on simulated judgments with known coefficients."""

from __future__ import annotations

import numpy as np
import pytest

from joint_sim import simulate
from rualign.eval import joint


def _fit(data, kind="lc", n_boot=200, seed=0):
    counts = joint.bootstrap_counts(len(data.prompts), n_boot, np.random.default_rng(seed))
    return joint.fit_joint(data, kind, counts=counts), joint.raw_scores(data, counts)


def _logit(pct):
    p = np.asarray(pct) / 100.0
    return np.log(p / (1 - p))


def test_recovers_known_coefficients():
    data, truth = simulate(n_runs=6, n_prompts=1500, gamma=0.8, delta=0.3, seed=1)
    fit, _ = _fit(data)
    assert fit.converged
    coef = {c.name: c for c in fit.coefficients}
    assert abs(coef["length"].value - 0.8) < 0.1 and coef["length"].ci_low < 0.8 < coef["length"].ci_high
    assert abs(coef["order"].value - 0.3) < 0.08 and coef["order"].ci_low < 0.3 < coef["order"].ci_high
    assert np.max(np.abs(_logit(fit.strength) - truth.theta)) < 0.15
    inside = [(lo < 100 / (1 + np.exp(-t)) < hi) for (lo, hi), t in zip(fit.ci, truth.theta)]
    assert sum(inside) >= 5  # 95% intervals: at most one of six may miss by chance


def test_batched_bootstrap_equals_one_weighted_fit_at_a_time():
    data, _ = simulate(n_runs=3, n_prompts=200, seed=2)
    z, _, _ = joint.design(data, "lc")
    counts = joint.bootstrap_counts(len(data.prompts), 4, np.random.default_rng(0))
    weights = counts[:, data.prompt_idx].astype(float)
    theta, coef, ok = joint.newton_batched(weights, data, z)
    assert ok
    for b in range(4):  # reference: plain full-Hessian Newton on the expanded (duplicated-row) data
        keep = np.repeat(np.arange(len(data.y)), counts[b, data.prompt_idx])
        x = np.column_stack([np.eye(3)[data.run_idx[keep]], z[keep]])
        beta = np.zeros(x.shape[1])
        ridge = np.array([joint.RIDGE] * 3 + [joint.COEF_RIDGE] * z.shape[1])
        for _ in range(50):
            p = 1 / (1 + np.exp(-x @ beta))
            h = (x * (p * (1 - p))[:, None]).T @ x + np.diag(ridge)
            beta -= np.linalg.solve(h, x.T @ (p - data.y[keep]) + ridge * beta)
        assert np.allclose(np.concatenate([theta[b], coef[b]]), beta, atol=1e-6)


def test_length_only_judge_gives_lc_50_while_raw_spreads():
    """The judge prefers whichever answer is longer and nothing else: raw scores spread with length, lc does not."""
    lengths = np.array([60, 200, 400, 700, 1100])
    data, _ = simulate(n_runs=5, n_prompts=800, theta=np.zeros(5), mean_tokens=lengths, gamma=1.5, delta=0.0,
                       seed=3)
    fit, (raw, _, _) = _fit(data)
    assert raw.max() - raw.min() > 30
    assert np.all(np.abs(fit.strength - 50) < 4)
    assert np.all((fit.ci[:, 0] < 50) & (fit.ci[:, 1] > 50)) or np.all(np.abs(fit.strength - 50) < 2)


def test_very_short_run_gains_nothing():
    """A run of very short, mostly losing answers stays below every better run, under both raw and lc, and its
    lc stays at its true strength: the shared slope is estimated from the other runs and bounded (tanh)."""
    theta = np.array([0.6, 0.3, 0.0, -0.3, -1.2])
    lengths = np.array([450, 500, 400, 550, 15])
    data, _ = simulate(n_runs=5, n_prompts=800, theta=theta, mean_tokens=lengths, gamma=0.7, delta=0.2, seed=4)
    fit, (raw, _, _) = _fit(data)
    short = 4
    assert fit.strength[short] < fit.strength[:short].min() - 10
    assert abs(_logit(fit.strength[short]) - theta[short]) < 0.3
    truth = 100 / (1 + np.exp(-theta[short]))
    assert fit.ci[short, 0] - 1 < truth < fit.ci[short, 1] + 1


def test_style_coefficients_recovered_with_cis():
    rng = np.random.default_rng(5)
    data, truth = simulate(n_runs=4, n_prompts=1500, theta=np.array([0.5, 0.0, -0.5, 0.2]), gamma=0.5, seed=5)
    style = rng.normal(0, 1, (len(data.y), 4))
    beta = np.array([0.6, 0.0, -0.4, -0.8])
    logits = (truth.theta[data.run_idx] + truth.delta * data.order + truth.gamma
              * np.tanh(data.length_diff / data.length_diff.std()) + np.tanh(style / style.std(0)) @ beta)
    y = (rng.random(len(logits)) < 1 / (1 + np.exp(-logits))).astype(float)
    data = joint.JointData(data.runs, data.prompts, data.run_idx, data.prompt_idx, y, data.order, data.length_diff,
                           style, ("header_density", "list_density", "bold_density", "latin_share"))
    fit, _ = _fit(data, "sc")
    coef = {c.name: c for c in fit.coefficients}
    for name, value in zip(data.style_names, beta):
        assert abs(coef[name].value - value) < 0.12, (name, coef[name])
        assert coef[name].ci_low < value < coef[name].ci_high or abs(coef[name].value - value) < 0.05
    assert np.max(np.abs(_logit(fit.strength) - truth.theta)) < 0.15


def test_raw_scores_match_per_prompt_means_and_ci_brackets():
    data, _ = simulate(n_runs=2, n_prompts=300, seed=6, soft=True)
    counts = joint.bootstrap_counts(300, 300, np.random.default_rng(1))
    score, ci, n = joint.raw_scores(data, counts)
    for k in range(2):
        rows = data.run_idx == k
        per_prompt = np.bincount(data.prompt_idx[rows], data.y[rows]) / 2
        assert score[k] == pytest.approx(100 * per_prompt.mean())
        assert ci[k, 0] < score[k] < ci[k, 1]
    assert list(n) == [300, 300]
