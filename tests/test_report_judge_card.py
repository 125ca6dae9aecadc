"""The judge card in the report: an unvalidated card marks every judged score UNVALIDATED, its numbers are a
note on screen and in report.md/html, and results.csv says judge_status; no card, no marking."""

from __future__ import annotations

import csv
from pathlib import Path

from rualign.records import JudgeCard
from rualign.report.build import build_report
from rualign.report.tables import DISPLAY_HEADERS, display_cells
from test_report import write_fake_runs

SCORE = DISPLAY_HEADERS.index("score [95% CI]")  # by name: columns were added before it once already
CARD = JudgeCard.model_validate({"accuracy": 0.5, "ci_low": 0.38, "ci_high": 0.62, "n": 16, "n_pairs": 16, "first_slot_rate": 0.93,
        "order_flip_rate": 0.9, "tie_rate": 0.0, "verdict_mass": 0.18, "validated": False,
        "reasons": ["accuracy 0.50 [0.38, 0.62] is not above chance"], "failed_pairs": 0,
        "length_bias": {"chosen_shorter": {"accuracy": 0.5, "n": 8}, "chosen_longer": {"accuracy": 0.5, "n": 8}},
        "per_category": {}, "judge": {"name": "llamacpp:default"}, "gold": {"name": "bundled:gold_ru"}})


def test_unvalidated_card_marks_scores(tmp_path):
    runs = write_fake_runs(tmp_path / "runs")
    result = build_report(runs, tmp_path / "report", target=540, judge_card=CARD)
    judged = [r for r in result["rows"] if r["status"] == "judged"]
    assert judged and all(r["judge_status"] == "unvalidated" for r in judged)
    assert all(display_cells(r)[SCORE].endswith(" UNVALIDATED") for r in judged)
    assert result["notes"][0].startswith("judge card (16 of 16 gold pairs from bundled:gold_ru): accuracy 0.5 "
                                         "[0.38, 0.62], first-slot rate 0.93, verdict mass 0.18 -> UNVALIDATED")
    md = Path(result["files"]["md"]).read_text(encoding="utf-8")
    assert "## Judge card: llamacpp:default" in md and "UNVALIDATED" in md
    assert "UNVALIDATED" in Path(result["files"]["html"]).read_text(encoding="utf-8")
    with open(result["files"]["csv"], encoding="utf-8") as handle:
        statuses = {row["name"]: row["judge_status"] for row in csv.DictReader(handle)}
    assert {statuses[r["name"]] for r in judged} == {"unvalidated"}


def test_validated_or_missing_card_leaves_scores_alone(tmp_path):
    runs = write_fake_runs(tmp_path / "runs")
    plain = build_report(runs, tmp_path / "plain", target=540)
    good = build_report(runs, tmp_path / "good", target=540, judge_card=CARD.model_copy(update={"validated": True, "reasons": []}))
    for result in (plain, good):
        assert not any(display_cells(r)[SCORE].endswith(" UNVALIDATED") for r in result["rows"])
    assert all(r["judge_status"] is None for r in plain["rows"])
    assert good["notes"][0].endswith("-> validated")
