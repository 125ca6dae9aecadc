"""Judge–human agreement: Cohen's kappa on hand-computed tables, CIs, and `rualign agreement` on a run folder."""

from __future__ import annotations

import json

import numpy as np
import pytest

from rualign.cli import main
from rualign.eval.agreement import CLASSES, agreement, kappa_from_table


def _labels(table):
    human, judge = [], []
    for i, row in enumerate(table):
        for j, count in enumerate(row):
            human += [CLASSES[i]] * count
            judge += [CLASSES[j]] * count
    return human, judge


@pytest.mark.parametrize("table,kappa", [
    # p_o = 35/50 = .7; p_e = .5*.6 + .5*.4 = .5; kappa = .2/.5
    ([[20, 5, 0], [10, 15, 0], [0, 0, 0]], 0.4),
    # p_o = 29/40 = .725; p_e = (15*13 + 15*15 + 10*12)/40^2 = .3375; kappa = .3875/.6625 = 31/53
    ([[10, 2, 3], [1, 12, 2], [2, 1, 7]], 31 / 53),
    # perfect agreement over three classes
    ([[5, 0, 0], [0, 3, 0], [0, 0, 2]], 1.0),
    # agreement exactly at chance: p_o = p_e = .5
    ([[5, 5, 0], [5, 5, 0], [0, 0, 0]], 0.0),
])
def test_kappa_on_hand_computed_tables(table, kappa):
    assert kappa_from_table(np.array(table)) == pytest.approx(kappa)
    human, judge = _labels(table)
    result = agreement(human, judge, n_boot=500)
    assert result["kappa"] == pytest.approx(kappa, abs=1e-4)
    assert result["confusion"]["table"] == table
    assert result["accuracy"] == pytest.approx(np.trace(np.array(table)) / np.sum(table), abs=1e-4)
    low, high = result["accuracy_ci"]
    assert low <= result["accuracy"] <= high


def test_kappa_undefined_when_both_raters_use_one_class():
    result = agreement(["tie"] * 6, ["tie"] * 6, n_boot=100)
    assert result["accuracy"] == 1.0 and result["kappa"] is None


def _run_folder(tmp_path, prefs):
    folder = tmp_path / "run"
    (folder / "judge").mkdir(parents=True)
    (folder / "run.json").write_text(json.dumps({"name": "sft-a"}), encoding="utf-8")
    rows = [{"id": pid, "order": order, "preference": p, "error": None}
            for pid, (a, b) in prefs.items() for order, p in (("model_first", a), ("reference_first", b))]
    (folder / "judge" / "judgments.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return folder


def test_agreement_command(tmp_path, capsys):
    folder = _run_folder(tmp_path, {"p1": (1, 1), "p2": (0, 0), "p3": (1, 0), "p4": (0.9, 0.8), "p5": (0, 0.1)})
    review = tmp_path / "review.json"
    marks = [("p1", "model"), ("p2", "reference"), ("p3", "tie"), ("p4", "reference"), ("p5", "reference")]
    review.write_text(json.dumps({"format": "rualign-review", "version": 1,
                                  "marks": [{"run": "sft-a", "id": i, "mark": m} for i, m in marks]
                                  + [{"run": "other", "id": "p1", "mark": "tie"}]}), encoding="utf-8")
    assert main(["agreement", str(review), str(folder), "--out", str(tmp_path / "out"), "--n-boot", "300"]) == 0
    result = json.loads((tmp_path / "out" / "agreement.json").read_text())
    assert result["n"] == 5 and result["accuracy"] == 0.8
    assert result["disagreements"] == [{"id": "p4", "human": "reference", "judge": "model", "judge_value": 0.85}]
    # human (rows) vs judge: model 1/0/0, reference 1/2/0, tie 0/0/1 -> p_o .8, p_e (1*2 + 3*2 + 1*1)/25 = .36
    assert result["kappa"] == pytest.approx((0.8 - 0.36) / 0.64, abs=1e-4)
    assert "p4: reference vs model" in capsys.readouterr().out


def test_agreement_names_the_runs_a_review_has(tmp_path, capsys):
    folder = _run_folder(tmp_path, {"p1": (1, 1)})
    review = tmp_path / "review.json"
    review.write_text(json.dumps({"format": "rualign-review", "marks": [{"run": "x", "id": "p1", "mark": "tie"}]}))
    assert main(["agreement", str(review), str(folder)]) == 2
    assert "has runs: x" in capsys.readouterr().err
    review.write_text("{}")
    assert main(["agreement", str(review), str(folder)]) == 2
