"""The report shows validity: joint lc / sc for runs sharing a reference, the per-run LC as a diagnostic,
first-slot and per-criterion win rates, and UNVALIDATED wherever a score from an unvalidated judge is shown."""

from __future__ import annotations

import csv
import json

from browser.fake_runs import write_fake_runs
from rich.console import Console

from rualign.report import tables
from rualign.report.build import build_report


def _mark(run_dir, status, reasons, criteria=None):
    path = run_dir / "judge" / "score.json"
    score = json.loads(path.read_text(encoding="utf-8"))
    score["judge_card"] = {"status": status, "reasons": reasons}
    if criteria:
        score["criteria"] = criteria
    path.write_text(json.dumps(score, ensure_ascii=False), encoding="utf-8")


def test_report_marks_unvalidated_scores_and_shows_the_joint_fit(tmp_path):
    runs = write_fake_runs(tmp_path / "runs")
    grandmaster, simpo = runs[0], runs[1]
    _mark(grandmaster, "unvalidated", ["accuracy 0.50 [0.41, 0.59] is not above chance"],
          criteria={"relevance": 62.5, "helpfulness": 50.0, "clarity": 43.75, "language": None})
    _mark(simpo, "validated", [])
    result = build_report(runs, tmp_path / "report")
    rows = {r["name"]: r for r in csv.DictReader(open(result["files"]["csv"], encoding="utf-8"))}
    assert rows["sft-grandmaster"]["judge_status"] == "unvalidated" and rows["sft-simpo"]["judge_status"] == "validated"
    assert rows["sft-grandmaster"]["win_relevance"] == "62.5" and rows["sft-grandmaster"]["win_language"] == ""
    for name in ("sft-grandmaster", "sft-simpo"):  # two runs share the reference: one joint fit
        row = rows[name]
        assert float(row["lc_ci_low"]) <= float(row["lc"]) <= float(row["lc_ci_high"])
        assert row["sc"] and row["lc_score"] and row["first_slot_win_rate"]
    assert rows["sft-dpo"]["lc"] == "" and rows["sft-dpo"]["judge_status"] == ""
    md = open(result["files"]["md"], encoding="utf-8").read()
    assert md.count("UNVALIDATED") >= 2  # in the table cell and in the notes (with the reason)
    assert "is not above chance" in md and "joint length control over 2 runs" in md
    assert "| sft-grandmaster | 62.5 | 50.0 | 43.8 | — |" in md  # per-criterion win rates
    page = open(result["files"]["html"], encoding="utf-8").read()
    assert 'class="unvalidated"' in page and "UNVALIDATED" in page
    console = Console(record=True, width=220)
    tables.print_table(result["rows"], console)
    assert "UNVALIDATED" in console.export_text()
