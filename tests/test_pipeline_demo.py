"""End to end: a reduced `rualign demo --quick` (2 prompts, 2 steps, 16 new tokens, llama.cpp judge)."""

from __future__ import annotations

import json

import pytest

from rualign.cli import main


@pytest.mark.slow
def test_quick_demo_end_to_end_then_rerun_reuses_everything(tmp_path, default_model_dir, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--quick", "--out", str(out)]) == 0
    first = capsys.readouterr().out
    names = ["base", "sft-short", "sft-long", "control"]
    for name in names:
        run = json.loads((out / name / "run.json").read_text(encoding="utf-8"))
        assert run["name"] == name and run["target"] == 150  # the demo-scale target (eval.target in demo.yaml)
        answers = (out / name / "answers.jsonl").read_text(encoding="utf-8").splitlines()
        assert len(answers) == 2
        score = json.loads((out / name / "judge" / "score.json").read_text(encoding="utf-8"))
        assert score["n_prompts"] == 2 and score["judge"]["name"] == "llamacpp:default"
    # base answers are the reference itself: both prompts are ties by symmetry, the judge is never called
    base = json.loads((out / "base" / "judge" / "score.json").read_text(encoding="utf-8"))
    assert base["identical_pairs"]["count"] == 2 and base["score"] == 50.0 and base["judge"]["mode"] == "identical"
    control = json.loads((out / "control" / "run.json").read_text(encoding="utf-8"))
    assert [s["method"] for s in control["stages"]] == ["sft"]
    assert (out / "report" / "report.html").is_file() and (out / "report" / "results.csv").is_file()
    csv_rows = (out / "report" / "results.csv").read_text(encoding="utf-8").splitlines()
    assert len(csv_rows) == 1 + len(names)
    assert {"ru_share", "distinct2", "ref_loss", "judge_status"} <= set(csv_rows[0].split(","))
    assert "rualign results" in first and "135M" in first and str(out / "report" / "report.html") in first
    assert "14 stages ran, 0 reused" in " ".join(first.split())

    assert main(["demo", "--quick", "--out", str(out)]) == 0
    second = " ".join(capsys.readouterr().out.split())
    assert "0 stages ran, 14 reused" in second
