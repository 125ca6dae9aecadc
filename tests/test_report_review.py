"""Human review in report.html (real headless Chromium): mark answers with the keyboard and the mouse, the marks
survive a reload (localStorage), the export downloads a JSON file, and `rualign agreement` computes on it."""

from __future__ import annotations

import json
import shutil

import pytest

from browser.chromium import open_page, skip_reason
from browser.fake_runs import write_fake_runs
from rualign.cli import main
from rualign.report.build import build_report

pytestmark = pytest.mark.skipif(skip_reason() is not None, reason=skip_reason() or "")


def test_mark_export_and_compute_agreement(tmp_path, capsys):
    run_dirs = write_fake_runs(tmp_path / "runs")
    html = build_report(run_dirs, tmp_path / "report")["files"]["html"]
    review = tmp_path / "review.json"
    with open_page(f"file://{html}") as (page, log):
        page.select_option("#filter-run", "sft-simpo")
        page.locator("#items .item").first.click(position={"x": 5, "y": 5})
        for key in ("1", "2", "3", "j", "1"):  # p1 model, p2 reference, p3 tie, skip p4, p5 model
            page.keyboard.press(key)
        page.locator("#items .item").nth(7).locator(".mark-btn[data-mark=reference]").click()  # p8, by mouse
        assert page.text_content("#review-count") == "5"
        marks = page.locator("#items .item").evaluate_all("els => els.map(e => e.dataset.mark)")
        assert marks == ["model", "reference", "tie", "", "model", "", "", "reference"]
        page.fill("#search", "3")  # typing in the search box is not a mark
        assert page.text_content("#review-count") == "5"
        page.fill("#search", "")
        page.reload()
        assert page.text_content("#review-count") == "5"  # kept in the browser
        with page.expect_download() as download:
            page.click("#export-review")
        shutil.copyfile(download.value.path(), review)
        assert log.console_errors == [] and log.page_errors == []
    data = json.loads(review.read_text(encoding="utf-8"))
    assert data["format"] == "rualign-review"
    assert sorted((m["id"], m["mark"]) for m in data["marks"]) == [
        ("p1", "model"), ("p2", "reference"), ("p3", "tie"), ("p5", "model"), ("p8", "reference")]
    simpo = next(d for d in run_dirs if d.name == "sft-simpo")
    assert main(["agreement", str(review), str(simpo), "--out", str(tmp_path / "agree"), "--n-boot", "300"]) == 0
    result = json.loads((tmp_path / "agree" / "agreement.json").read_text())
    # judge: p1 model, p2 model (.755), p3 reference (.275), p5 model, p8 reference (.125)
    assert result["n"] == 5 and result["accuracy"] == 0.6
    assert result["kappa"] == pytest.approx(1 / 3, abs=1e-4)  # p_o .6, p_e (2*3 + 2*2 + 0)/25 = .4
    assert [d["id"] for d in result["disagreements"]] == ["p2", "p3"]
