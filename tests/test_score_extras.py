"""Verdict-mass summaries and per-criterion win rates from judge rows."""

from __future__ import annotations

from rualign.eval.score_extras import MassSummary, criteria_win_rates, verdict_mass_summary
from rualign.records import Judgment


def _rows(*rows: dict) -> list[Judgment]:
    return [Judgment(**{"id": "p", "order": "model_first", **row}) for row in rows]


def test_verdict_mass_summary():
    rows = _rows({"verdict_mass": 0.9}, {"verdict_mass": 0.3}, {"verdict_mass": None}, {"mode": "identical"},
                 {"verdict_mass": 0.6})
    assert verdict_mass_summary(rows) == MassSummary(mean=0.6, min=0.3, calls=3, below_half=1)
    assert verdict_mass_summary(_rows({"verdict_mass": None})) is None


def test_criteria_win_rates_per_prompt_then_over_prompts():
    rows = _rows(
        {"id": "p1", "criteria": {"relevance": "model", "helpfulness": "tie", "clarity": "reference",
                                  "language": "model", "reason": "..."}},
        {"id": "p1", "criteria": {"relevance": "model", "helpfulness": "model", "clarity": "reference",
                                  "language": None}},
        {"id": "p2", "criteria": {"relevance": "reference", "helpfulness": "reference", "clarity": "tie",
                                  "language": "model"}},
        {"id": "p3", "criteria": {"relevance": "model"}, "error": "parse: nothing"},  # failures do not count
        {"id": "p4", "criteria": None},
    )
    assert criteria_win_rates(rows) == {"relevance": 50.0, "helpfulness": 37.5, "clarity": 25.0, "language": 100.0}
    assert criteria_win_rates(_rows({"id": "x", "criteria": None})) is None
