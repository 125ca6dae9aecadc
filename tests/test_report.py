"""`rualign report`: results table values, errors for non-run folders, plots, Markdown and HTML escaping."""

from __future__ import annotations

import csv
import json
import re
import struct
from pathlib import Path

import pytest

from browser.fake_runs import PROMPTS, RUNS, XSS_ANSWER, write_fake_runs
from rualign.errors import RualignError
from rualign.report import tables
from rualign.report.build import build_report, load_runs
from rualign.report.html import _results_table, browser_data, script_json


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    run_dirs = write_fake_runs(root)
    out = tmp_path_factory.mktemp("report")
    return {"runs": run_dirs, "out": out, "result": build_report(run_dirs, out, target=540)}


def _csv_rows(path: str) -> dict[str, dict]:
    with open(path, encoding="utf-8", newline="") as handle:
        return {row["name"]: row for row in csv.DictReader(handle)}


def test_results_csv_values_equal_score_json(report):
    rows = _csv_rows(report["result"]["files"]["csv"])
    assert list(rows) == ["sft-grandmaster", "sft-simpo", "sft-dpo"]  # input order, nothing dropped
    for run_dir in report["runs"][:2]:
        score = json.loads((run_dir / "judge" / "score.json").read_text(encoding="utf-8"))
        row = rows[run_dir.name]
        assert row["status"] == "judged"
        for key in ("score", "ci_low", "ci_high", "lc_score"):
            assert float(row[key]) == score[key]
        assert int(row["n"]) == score["n"] and int(row["n_prompts"]) == score["n_prompts"] == len(PROMPTS)
        assert int(row["failures"]) == score["failures"]["count"]
        assert (int(row["wins"]), int(row["ties"]), int(row["losses"])) == (score["wins"], score["ties"], score["losses"])
        assert float(row["mean_tokens"]) == score["lengths"]["model"]["mean"]
        assert float(row["median_tokens"]) == score["lengths"]["model"]["median"]
        assert float(row["gap_to_target"]) == pytest.approx(score["lengths"]["model"]["mean"] - 540)
    assert rows["sft-grandmaster"]["failures"] == "1" and rows["sft-grandmaster"]["n"] == "7"
    assert rows["sft-simpo"]["stages"] == "sft → simpo"


def test_not_judged_run_is_listed_with_lengths_from_answers(report):
    row = _csv_rows(report["result"]["files"]["csv"])["sft-dpo"]
    tokens = list(RUNS["sft-dpo"]["tokens"].values())
    assert row["status"] == "not judged"
    assert row["score"] == row["ci_low"] == row["n"] == row["failures"] == ""
    assert float(row["mean_tokens"]) == pytest.approx(sum(tokens) / len(tokens))
    assert row["n_prompts"] == str(len(PROMPTS))
    assert any("sft-dpo: not judged" in note for note in report["result"]["notes"])
    md = Path(report["result"]["files"]["md"]).read_text(encoding="utf-8")
    assert re.search(r"^\| sft-dpo \|.*\| not judged \|", md, re.M)


def test_folder_that_is_not_a_run_folder_is_a_clear_error(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(RualignError) as info:
        build_report([empty], tmp_path / "out")
    assert str(empty) in str(info.value) and "run.json and answers.jsonl" in str(info.value)
    (empty / "run.json").write_text("{}", encoding="utf-8")
    with pytest.raises(RualignError, match="lacks answers.jsonl"):
        load_runs([empty])
    with pytest.raises(RualignError, match="does not exist"):
        load_runs([tmp_path / "missing"])
    assert not (tmp_path / "out").exists()  # nothing half-written


def test_cli_prints_error_without_traceback(tmp_path, capsys):
    from rualign.cli import main

    assert main(["report", str(tmp_path), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {tmp_path}: not a run folder") and "Traceback" not in err


def test_malformed_inputs_name_file_and_line(tmp_path):
    run_dir = write_fake_runs(tmp_path)[0]
    (run_dir / "judge" / "score.json").write_text('{"score": 50}', encoding="utf-8")
    with pytest.raises(RualignError, match=r"score\.json.*lacks ci_low, ci_high, n"):
        load_runs([run_dir])
    (run_dir / "judge" / "score.json").unlink()
    lines = (run_dir / "answers.jsonl").read_text(encoding="utf-8").splitlines()
    lines[2] = "{not json"
    (run_dir / "answers.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(RualignError) as info:
        load_runs([run_dir])
    assert f"{run_dir / 'answers.jsonl'}:3" in str(info.value)


def test_cli_writes_files_and_prints_table(tmp_path, capsys):
    from rualign.cli import main

    run_dirs = write_fake_runs(tmp_path / "runs")
    assert main(["report", *map(str, run_dirs), "--out", str(tmp_path / "out"), "--target", "500"]) == 0
    out = capsys.readouterr().out
    assert "sft-simpo" in out and "not judged" in out
    row = _csv_rows(str(tmp_path / "out" / "results.csv"))["sft-simpo"]
    assert row["target"] == "500" and float(row["gap_to_target"]) == pytest.approx(float(row["mean_tokens"]) - 500)
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["stage"] == "report" and len(manifest["runs"]) == 3


def _png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def test_plots_are_valid_pngs(report):
    plots = report["result"]["files"]["plots"]
    assert set(plots) == {"score_vs_length", "length_histograms", "forest"}
    for path in map(Path, plots.values()):
        width, height = _png_size(path)
        assert width >= 600 and height >= 200 and path.stat().st_size > 10_000
    # Small multiples: three runs side by side are wider than one plot.
    assert _png_size(Path(plots["length_histograms"]))[0] > _png_size(Path(plots["forest"]))[0]


def test_no_score_plots_without_judged_runs(tmp_path):
    run_dirs = write_fake_runs(tmp_path / "runs")
    result = build_report([run_dirs[2]], tmp_path / "out")
    assert set(result["files"]["plots"]) == {"length_histograms"}


def test_markdown_cells_escape_pipes_and_newlines(report):
    assert tables.md_cell("a|b\nc\\d<e>") == "a\\|b<br>c\\\\d&lt;e&gt;"
    md = Path(report["result"]["files"]["md"]).read_text(encoding="utf-8")
    assert "GrandMaster-PRO-MAX \\| 20k rows<br>filtered to ≤1500 tokens" in md
    table = [line for line in md.splitlines() if line.startswith("|")]
    assert len(table) == 2 + 3
    for line in table:  # every row has exactly 11 column separators once escaped pipes are ignored
        assert len(re.findall(r"(?<!\\)\|", line)) == len(tables.DISPLAY_HEADERS) + 1


def test_print_table_shows_rounded_scores(report):
    from rich.console import Console

    console = Console(record=True, width=220)
    tables.print_table(report["result"]["rows"], console)
    text = console.export_text()
    score = json.loads((report["runs"][1] / "judge" / "score.json").read_text(encoding="utf-8"))
    assert f"{score['score']:.1f} [{score['ci_low']:.1f}, {score['ci_high']:.1f}]" in text
    assert "not judged" in text and "sft → simpo" in text
    narrow = Console(record=True, width=80)  # a default terminal: numbers stay whole, descriptions move below
    tables.print_table(report["result"]["rows"], narrow)
    text = narrow.export_text()
    assert " -170 " in text and " fail" in text and "sft-dpo: saiga_scored SFT, then DPO" in text
    assert max(len(line) for line in text.splitlines()) <= 80


def test_html_is_self_contained_and_escapes_model_text(report):
    page = Path(report["result"]["files"]["html"]).read_text(encoding="utf-8")
    assert "<script>alert(1)" not in page and "<img src=x" not in page
    assert page.count("<script") == 2 and page.count("</script>") == 2  # ours only: data block + code
    assert not re.search(r'(?:src|href)="(?!data:|#)', page)  # no external resource
    data = json.loads(re.search(r'<script type="application/json" id="report-data">(.*?)</script>',
                                page, re.S).group(1))
    assert XSS_ANSWER in data["strings"]
    evil = dict(report["result"]["rows"][0], name='<b id="x">run</b>', description="a & <i>b</i>")
    cells = _results_table([evil])
    assert "&lt;b id=&quot;x&quot;&gt;run&lt;/b&gt;" in cells and "a &amp; &lt;i&gt;b&lt;/i&gt;" in cells
    assert "<b" not in cells and "<i>" not in cells
    math = json.loads((report["runs"][1] / "judge" / "score.json").read_text(encoding="utf-8"))["per_category"]["math"]
    assert f"{math['score']:.1f} [{math['ci_low']:.1f}, {math['ci_high']:.1f}] · n={math['n']}" in page
    assert script_json({"t": "</script><!--&"}) == '{"t":"\\u003c/script\\u003e\\u003c!--\\u0026"}'


def test_browser_outcomes_match_score_json_counts(report):
    runs = load_runs(report["runs"])
    data = browser_data(runs)
    assert len(data["items"]) == 3 * len(PROMPTS)
    for index, run in enumerate(runs):
        outcomes = [it["outcome"] for it in data["items"] if it["run"] == index]
        if run.score is None:
            assert set(outcomes) == {"not judged"}
            continue
        assert outcomes.count("win") == run.score.wins and outcomes.count("loss") == run.score.losses
        assert outcomes.count("tie") == run.score.ties
        assert outcomes.count("failure") == run.score.failures.count
    first = data["items"][0]
    assert [v["order"] for v in first["verdicts"]] == ["model_first", "reference_first"]
    assert data["strings"][first["reference"]].startswith("Эталон")


def test_missing_reference_and_duplicate_names_are_noted(tmp_path):
    run_dirs = write_fake_runs(tmp_path / "a")
    copy = write_fake_runs(tmp_path / "b")[1]
    run_json = json.loads((copy / "run.json").read_text(encoding="utf-8"))
    run_json["reference_answers"] = str(tmp_path / "nowhere.jsonl")
    (copy / "run.json").write_text(json.dumps(run_json), encoding="utf-8")
    result = build_report([run_dirs[1], copy], tmp_path / "out")
    assert [r["name"] for r in result["rows"]] == ["sft-simpo", "sft-simpo (2)"]
    assert any("reference answers not found" in n for n in result["notes"])
    data = browser_data(load_runs([copy]))
    assert all(item["reference"] is None for item in data["items"])


def _read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_identical_pairs_are_counted_in_csv_diagnostics_and_notes(tmp_path):
    from rualign.eval.stats import compute_score
    from rualign.records import Judgment, read_answers, read_score, write_score

    run_dirs = write_fake_runs(tmp_path / "runs")
    folder = run_dirs[1]  # sft-simpo: make p4's answer equal to the reference, as the judge stage records it
    judgments = _read_jsonl(folder / "judge" / "judgments.jsonl")
    for row in judgments:
        if row["id"] == "p4":
            row.update(mode="identical", preference=0.5, verdict="tie", probs=None, raw="", identical=True,
                       usage={"prompt_tokens": 0, "completion_tokens": 0})
    (folder / "judge" / "judgments.jsonl").write_text(
        "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in judgments), encoding="utf-8")
    answers = {r.id: r for r in read_answers(folder / "answers.jsonl")}
    refs = {r.id: r for r in read_answers(tmp_path / "runs" / "reference" / "answers.jsonl")}
    judge = read_score(folder / "judge").judge
    score = compute_score([Judgment(**j) for j in judgments], answers, refs, target=540, n_boot=300)
    write_score(folder / "judge" / "score.json", score.model_copy(update={"judge": judge}))

    result = build_report(run_dirs, tmp_path / "out")
    rows = _csv_rows(result["files"]["csv"])
    assert (rows["sft-simpo"]["identical_pairs"], rows["sft-grandmaster"]["identical_pairs"]) == ("1", "0")
    assert rows["sft-dpo"]["identical_pairs"] == ""  # not judged
    assert any(n.startswith("sft-simpo: 1 of 8 answers are identical") for n in result["notes"])
    page = Path(result["files"]["html"]).read_text(encoding="utf-8")
    diagnostics = re.search(r'<table id="diagnostics-table">.*?</table>', page, re.DOTALL).group(0)
    assert "<th>identical pairs</th>" in diagnostics
    data = browser_data(load_runs(run_dirs))
    p4 = next(it for it in data["items"] if it["id"] == "p4" and data["runs"][it["run"]] == "sft-simpo")
    assert p4["outcome"] == "tie" and all(v["identical"] for v in p4["verdicts"])


def test_every_score_field_reaches_results_csv_or_says_where_it_goes(report):
    """A statistic added to Score is a results.csv column (records.shown) or names where it goes instead
    (records.elsewhere); nothing is computed and silently never shown."""
    from rualign.records import IdList, Score, read_score

    rows = _csv_rows(report["result"]["files"]["csv"])
    for name, info in Score.model_fields.items():
        where = (info.json_schema_extra or {}).get("report")
        assert where, f"Score.{name} declares neither shown() nor elsewhere()"
        if name == "version":
            continue
        if where == "csv":
            for run_dir in report["runs"][:2]:
                value = getattr(read_score(run_dir / "judge"), name)
                value = value.count if isinstance(value, IdList) else value
                cell = rows[run_dir.name][name]
                assert cell == ("" if value is None else str(value)), (name, cell, value)


def test_first_slot_win_rate_is_shown(report):
    rows = _csv_rows(report["result"]["files"]["csv"])
    score = json.loads((report["runs"][1] / "judge" / "score.json").read_text(encoding="utf-8"))
    assert score["first_slot_win_rate"] is not None
    assert float(rows["sft-simpo"]["first_slot_win_rate"]) == score["first_slot_win_rate"]
    page = Path(report["result"]["files"]["html"]).read_text(encoding="utf-8")
    diagnostics = re.search(r'<table id="diagnostics-table">.*?</table>', page, re.DOTALL).group(0)
    assert "<th>first-slot win rate</th>" in diagnostics
    assert f"{100 * score['first_slot_win_rate']:.1f}%" in diagnostics
