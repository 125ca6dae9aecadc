"""A real `rualign run` on a tiny model, as a subprocess: the terminal shows rualign's own lines and live
displays only (no warnings, tqdm bars or raw trainer dicts); the library output is in each stage's
stage.log; `-v` puts it back on screen. Also checks the judge-free metric columns end to end."""

from __future__ import annotations

import csv
import os
import re
import subprocess
import sys
from pathlib import Path

from test_pipeline import _experiment_file

ONE = """\
experiments:
  - name: base
  - name: sft
    stages: [{name: sft, method: sft, data: ss}]
"""
NOISE = [re.compile(p, re.I) for p in (r"warning", r"\d+it/s|s/it\b", r"\d+%\|", r"\{'loss'", r"'train_runtime'",
                                         r"Writing model shards", r"FutureWarning", r"Traceback")]


def _run(tmp_path: Path, tiny: Path, *extra: str) -> subprocess.CompletedProcess:
    path = _experiment_file(tmp_path, tiny, ONE)
    text = path.read_text(encoding="utf-8").replace(
        "    judge: local:", "    heldout: bundled:grandmaster\n    heldout_limit: 2\n    judge: local:")
    path.write_text(text, encoding="utf-8")
    env = {**os.environ, "RUALIGN_PROGRESS": "1", "PYTHONWARNINGS": "default",
           "PYTHONPATH": str(Path(__file__).parents[1] / "src") + os.pathsep + os.environ.get("PYTHONPATH", "")}
    env.pop("RUALIGN_QUIET", None)
    return subprocess.run([sys.executable, "-m", "rualign", *extra, "run", str(path), "--out",
                           str(tmp_path / "runs")], capture_output=True, text=True, env=env, timeout=600)


def test_run_terminal_is_clean_and_logs_go_to_stage_logs(tmp_path, tiny_model_dir):
    done = _run(tmp_path, tiny_model_dir)
    screen = done.stdout + done.stderr
    assert done.returncode == 0, screen
    for pattern in NOISE:
        assert not pattern.search(screen), (pattern.pattern, screen)
    assert "train sft (sft)" in screen  # the training stage's live display
    assert "judge" in screen and "rualign results" in screen
    logs = {p.parent.parent.name: p.read_text(encoding="utf-8") for p in (tmp_path / "runs" / "_store").glob("*/*/stage.log")}
    assert set(logs) == {"data", "train", "answers", "judge"}
    assert "'loss'" in logs["train"]  # the trainer's dicts are kept, in the stage log
    rows = {r["name"]: r for r in csv.DictReader(open(tmp_path / "runs" / "report" / "results.csv"))}
    for row in rows.values():
        # a random tiny model's 6 tokens may hold no letter or no bigram: then the cell is empty, not 0
        assert row["ru_share"] == "" or 0.0 <= float(row["ru_share"]) <= 1.0
        assert row["distinct2"] == "" or 0.0 < float(row["distinct2"]) <= 1.0
        assert float(row["ref_loss"]) > 0  # a random tiny model: a large loss, but a number
        assert 0.0 <= float(row["capped_share"]) <= 1.0
    assert rows["base"]["ref_loss"] != rows["sft"]["ref_loss"]
    print(screen)


def test_verbose_shows_library_output(tmp_path, tiny_model_dir):
    done = _run(tmp_path, tiny_model_dir, "-v")
    assert done.returncode == 0, done.stderr
    assert "'loss'" in done.stdout + done.stderr
    assert not list((tmp_path / "runs" / "_store").glob("*/*/stage.log"))


def test_results_table_keeps_its_columns_when_piped(monkeypatch):
    """Piped into a file, rich would assume 80 columns and drop the table's right-hand columns."""
    from rualign.progress import results_console

    monkeypatch.delenv("COLUMNS", raising=False)
    assert results_console().width == 160  # pytest's stdout is not a terminal
    monkeypatch.setenv("COLUMNS", "100")
    assert results_console().width == 100  # the user's explicit width wins
