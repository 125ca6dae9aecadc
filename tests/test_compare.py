"""Paired comparison of two score.json files: difference, CI, p-value, unpaired ids; and the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest

from rualign.cli import main
from rualign.errors import RualignError
from rualign.eval.compare import compare_scores, sign_flip_p_value
from rualign.records import Score, read_score as load_score


def _score(values: dict[str, float | None], judge="j") -> Score:
    return Score(score=None, ci_low=None, ci_high=None, n=len(values), judge={"name": judge},
                 per_prompt=[{"id": k, "category": None, "value": v} for k, v in values.items()])


def test_exact_difference_and_unpaired_ids_listed():
    a = _score({"p1": 1.0, "p2": 0.5, "p3": 0.0, "onlyA": 1.0, "failA": None})
    b = _score({"p1": 0.5, "p2": 0.5, "p3": 0.0, "onlyB": 0.0, "failA": 1.0})
    result = compare_scores(a, b)
    assert result["n_paired"] == 3
    assert result["score_a"] == pytest.approx(50.0) and result["score_b"] == pytest.approx(100 / 3, abs=0.01)
    assert result["diff"] == pytest.approx(100 * 0.5 / 3, abs=0.01)
    assert result["only_in_a"] == ["onlyA"] and result["only_in_b"] == ["onlyB"]
    assert result["failed_in_either"] == ["failA"]
    assert (result["a_better"], result["b_better"], result["equal"]) == (1, 0, 2)


def test_clear_improvement_is_significant_and_noise_is_not():
    rng = np.random.default_rng(1)
    ids = [f"p{i}" for i in range(200)]
    base = rng.choice([0.0, 0.25, 0.5, 0.75, 1.0], size=200)
    better = np.clip(base + rng.choice([0.0, 0.25, 0.5], size=200, p=[0.4, 0.4, 0.2]), 0, 1)
    result = compare_scores(_score(dict(zip(ids, better))), _score(dict(zip(ids, base))))
    assert result["diff"] > 10 and result["p_value"] < 0.001
    assert result["ci_low"] > 0

    noise_a = rng.choice([0.0, 0.5, 1.0], size=200)
    noise_b = rng.permutation(noise_a)  # same distribution, shuffled over prompts
    result = compare_scores(_score(dict(zip(ids, noise_a))), _score(dict(zip(ids, noise_b))))
    assert result["diff"] == pytest.approx(0.0)
    assert result["p_value"] > 0.5
    assert result["ci_low"] < 0 < result["ci_high"]


def test_sign_flip_p_value_is_uniform_under_the_null():
    rng = np.random.default_rng(2)
    p_values = [sign_flip_p_value(rng.normal(0, 1, 40), rng, n_perm=500) for _ in range(300)]
    assert 0.02 <= np.mean(np.array(p_values) < 0.05) <= 0.09


def test_cli_compare_writes_json(tmp_path, capsys):
    for name, vals in (("a", {"x": 1.0, "y": 1.0, "z": 0.5}), ("b", {"x": 0.0, "y": 0.5, "w": 0.5})):
        (tmp_path / name).mkdir()
        (tmp_path / name / "score.json").write_text(json.dumps(_score(vals).dump()), encoding="utf-8")
    out = tmp_path / "cmp.json"
    assert main(["compare", str(tmp_path / "a"), str(tmp_path / "b"), "--out", str(out)]) == 0
    result = json.loads(out.read_text(encoding="utf-8"))
    assert result["n_paired"] == 2 and result["diff"] == pytest.approx(75.0)
    assert result["only_in_a"] == ["z"] and result["only_in_b"] == ["w"]
    printed = capsys.readouterr().out
    assert "+75.00" in printed and "only in A" in printed


def test_load_score_errors(tmp_path):
    with pytest.raises(RualignError, match="no score.json"):
        load_score(tmp_path)
    (tmp_path / "score.json").write_text("{broken", encoding="utf-8")
    with pytest.raises(RualignError, match="malformed JSON"):
        load_score(tmp_path)
    (tmp_path / "score.json").write_text("{}", encoding="utf-8")
    with pytest.raises(RualignError, match="per_prompt"):
        load_score(tmp_path / "score.json")
