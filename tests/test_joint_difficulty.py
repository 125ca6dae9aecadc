"""The optional per-prompt difficulty term of the joint fit (`rualign leaderboard --difficulty`): a ridge
(random-effect like) prompt offset whose penalty is estimated from the data. Measured in
bench/difficulty_term.py; these tests pin what it must do on simulated judgments with known coefficients."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from joint_sim import simulate, write_runs
from rualign.cli import main
from rualign.eval import joint
from rualign.eval.joint_difficulty import estimate_penalty, newton_difficulty


def _gamma(data, difficulty):
    counts = joint.bootstrap_counts(len(data.prompts), 100, np.random.default_rng(0))
    fit = joint.fit_joint(data, "lc", counts=counts, difficulty=difficulty)
    return {c.name: c for c in fit.coefficients}["length"], fit


def test_prompt_difficulty_term_recovers_the_length_slope_the_plain_fit_attenuates():
    # True gamma 0.8 with prompt offsets of sd 2: leaving them out shrinks the slope (a logistic model
    # without a random effect estimates the marginal, flatter slope); the estimated ridge recovers most of it.
    data, _ = simulate(n_runs=8, n_prompts=600, gamma=0.8, seed=3, difficulty_sd=2.0)
    plain, _ = _gamma(data, None)
    ridge, fit = _gamma(data, "auto")
    assert plain.value < 0.65 and abs(ridge.value - 0.8) < 0.12
    assert ridge.ci_low < 0.8 < ridge.ci_high and fit.converged
    assert 0.15 < fit.prompt_penalty < 1.0  # sigma between 1 and 2.6: the offsets are found, and shrunk


def test_without_prompt_effects_the_estimated_term_changes_nothing():
    data, _ = simulate(n_runs=6, n_prompts=400, gamma=0.8, seed=4)
    plain, plain_fit = _gamma(data, None)
    ridge, fit = _gamma(data, "auto")
    assert fit.prompt_penalty > 8  # sigma < 0.35: the data say the prompts hardly differ
    assert ridge.value == pytest.approx(plain.value, abs=0.02)
    assert np.allclose(fit.strength, plain_fit.strength, atol=1.0)


def test_batched_difficulty_fit_equals_one_weighted_fit_at_a_time():
    data, _ = simulate(n_runs=3, n_prompts=120, seed=5, difficulty_sd=1.0)
    z, _, _ = joint.design(data, "lc")
    counts = joint.bootstrap_counts(len(data.prompts), 3, np.random.default_rng(1))
    weights = counts[:, data.prompt_idx].astype(float)
    theta, b, coef, ok = newton_difficulty(weights, data, z, lam=0.7)
    assert ok
    for k in range(3):
        t1, b1, c1, ok1 = newton_difficulty(weights[k:k + 1], data, z, lam=0.7)
        assert ok1 and np.allclose(t1[0], theta[k], atol=1e-6) and np.allclose(c1[0], coef[k], atol=1e-6)
        assert np.allclose(b1[0], b[k], atol=1e-6)


def test_estimated_penalty_is_a_fixed_point():
    data, _ = simulate(n_runs=4, n_prompts=300, seed=6, difficulty_sd=1.0)
    z, _, _ = joint.design(data, "lc")
    lam, theta, b, coef, ok = estimate_penalty(data, z)
    eta = coef[0] @ z.T + theta[0, data.run_idx] + b[0, data.prompt_idx]
    p = 1 / (1 + np.exp(-eta))
    h = np.bincount(data.prompt_idx, p * (1 - p), minlength=len(data.prompts)) + lam
    assert ok and 1 / lam == pytest.approx(np.mean(b[0] ** 2 + 1 / h), rel=5e-3)


def test_leaderboard_difficulty_flag(tmp_path, capsys):
    data, _ = simulate(n_runs=3, n_prompts=120, seed=7, difficulty_sd=1.0)
    reference, runs = write_runs(tmp_path / "in", data)
    config = tmp_path / "in" / "board.yaml"
    config.write_text("reference: reference.jsonl\nruns:\n" + "".join(
        f"  - {{name: {r['name']}, answers: {r['answers']}, judgments: {r['judgments']}}}\n" for r in runs),
        encoding="utf-8")
    assert main(["leaderboard", str(config), "--out", str(tmp_path / "plain"), "--n-boot", "100"]) == 0
    assert main(["leaderboard", str(config), "--out", str(tmp_path / "diff"), "--n-boot", "100", "--difficulty"]) == 0
    fitted = json.loads((tmp_path / "diff" / "coefficients.json").read_text())[0]
    assert fitted["difficulty"]["requested"] == "auto" and fitted["difficulty"]["lc_penalty"] > 0
    assert json.loads((tmp_path / "plain" / "coefficients.json").read_text())[0]["difficulty"] is None
    assert "Prompt difficulty" in (tmp_path / "diff" / "leaderboard.md").read_text()
    plain_hash = json.loads((tmp_path / "plain" / "manifest.json").read_text())["config_hash"]
    assert json.loads((tmp_path / "diff" / "manifest.json").read_text())["config_hash"] != plain_hash
    rows = list(csv.DictReader((tmp_path / "diff" / "leaderboard.csv").open(encoding="utf-8")))
    assert all(float(r["lc_ci_low"]) <= float(r["lc"]) <= float(r["lc_ci_high"]) for r in rows)
    assert main(["leaderboard", str(config), "--out", str(tmp_path / "bad"), "--difficulty", "-1"]) == 2
    assert "--difficulty" in capsys.readouterr().err
