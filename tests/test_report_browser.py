"""report.html in real headless Chromium (system package, driven by Playwright): loads with no console
errors, its table matches results.csv, filters and search change the visible answers, and model text
with markup shows as literal text without running anything."""

from __future__ import annotations

import csv
import os
import shutil
from pathlib import Path

import pytest

from browser.chromium import open_page, skip_reason
from browser.fake_runs import PROMPTS, SEARCH_WORD, XSS_ANSWER, write_fake_runs
from rualign.report.build import build_report

pytestmark = pytest.mark.skipif(skip_reason() is not None, reason=skip_reason() or "")
ARTIFACT = Path(__file__).parent / "artifacts" / "report.png"


def _visible(page) -> int:
    count = page.locator("#items .item").count()
    assert page.text_content("#visible-count") == str(count)
    return count


def _expected_cells(row: dict) -> list[str]:
    """The table cells as a reader should see them, derived from results.csv on its own."""
    def num(key: str, fmt: str) -> str:
        return format(float(row[key]), fmt) if row[key] else "—"

    def ci(key: str, prefix: str) -> str:
        return f"{float(row[key]):.1f} [{float(row[prefix + 'ci_low']):.1f}, {float(row[prefix + 'ci_high']):.1f}]"
    score = "not judged" if row["status"] == "not judged" else ci("score", "")
    if row["judge_status"] == "unvalidated":
        score += " UNVALIDATED"
    capped = f"{100 * float(row['capped_share']):.0f}%" if row["capped_share"] else "—"
    return [row["name"], row["description"].replace("\n", " "), row["stages"], num("mean_tokens", ".0f"),
            num("median_tokens", ".0f"), num("gap_to_target", "+.0f"), capped, num("ru_share", ".2f"),
            num("distinct2", ".2f"), num("ref_loss", ".2f"), num("knowledge", ".1f"), score, ci("lc", "lc_") if row["lc"] else "—",
            num("sc", ".1f"), num("lc_score", ".1f"), num("first_slot_win_rate", ".2f"),
            row["n"] or "—", row["failures"] or "—"]


def test_report_page_in_chromium(tmp_path):
    run_dirs = write_fake_runs(tmp_path / "runs")
    result = build_report(run_dirs, tmp_path / "report")
    with open(result["files"]["csv"], encoding="utf-8", newline="") as handle:
        csv_rows = list(csv.DictReader(handle))
    with open_page(Path(result["files"]["html"]).as_uri()) as (page, log):
        # The results table matches results.csv row by row.
        table = page.locator("#results-table tbody tr")
        assert table.count() == len(csv_rows) == 3
        for index, row in enumerate(csv_rows):
            cells = [" ".join(c.split()) for c in table.nth(index).locator("td").all_inner_texts()]
            assert cells == [" ".join(c.split()) for c in _expected_cells(row)]

        total = len(PROMPTS) * len(run_dirs)
        assert _visible(page) == total
        losses = sum(int(r["losses"] or 0) for r in csv_rows)
        page.select_option("#filter-outcome", "loss")
        assert _visible(page) == losses == 4
        assert set(page.locator("#items .item").evaluate_all("els => els.map(e => e.dataset.outcome)")) == {"loss"}
        page.select_option("#filter-outcome", "")
        page.select_option("#filter-run", "sft-dpo")
        assert _visible(page) == len(PROMPTS)
        page.select_option("#filter-run", "sft-grandmaster")
        page.select_option("#filter-outcome", "failure")
        assert _visible(page) == 1 and "failure: " in page.inner_text("#items .item .verdicts")
        page.select_option("#filter-outcome", "")
        page.select_option("#filter-category", "math")
        assert _visible(page) == 3
        page.select_option("#filter-category", "")

        # Markup in a model answer is text: nothing injected, nothing ran, the text is visible as written.
        page.fill("#search", "alert(1)")
        assert _visible(page) == 1
        answer = page.locator("#items .item .answer-text")
        assert answer.text_content() == XSS_ANSWER and answer.is_visible()
        assert page.locator("#items img, #items script, #items b").count() == 0
        page.locator("#items details summary").first.click()  # raw judge output holds "</script>" too
        assert "</script>" in page.locator("#items details pre").first.text_content()

        page.select_option("#filter-run", "")
        page.fill("#search", SEARCH_WORD.upper())  # case-insensitive
        assert _visible(page) == len(run_dirs)
        page.fill("#search", "")
        assert _visible(page) == total

        page.screenshot(path=str(tmp_path / "report.png"), full_page=True)
        page.wait_for_timeout(200)  # let any late (injected) script or dialog surface before checking
        assert log.dialogs == []
        assert log.console_errors == [] and log.page_errors == []
        assert all(url.startswith(("file:", "data:")) for url in log.requests), log.requests
    assert (tmp_path / "report.png").stat().st_size > 20_000
    if os.environ.get("RUALIGN_SAVE_SCREENSHOT") == "1":
        ARTIFACT.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(tmp_path / "report.png", ARTIFACT)
