"""The results table: one row per run (Table 4 of the study), as CSV, Markdown and a rich terminal table.

Numbers are kept at full precision in the row dicts and results.csv; `display_cells` is the one place that
rounds them for people, so report.md, report.html and the terminal always agree.
"""

from __future__ import annotations

import csv
import math
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rualign.runs import atomic_open

if TYPE_CHECKING:
    from rich.console import Console

    from rualign.report.build import Run

NOT_JUDGED = "not judged"
CSV_COLUMNS = ["name", "description", "stages", "status", "score", "ci_low", "ci_high", "lc_score", "n",
               "n_prompts", "failures", "wins", "ties", "losses", "identical_pairs", "tie_rate", "order_flip_rate",
               "mean_tokens", "median_tokens", "p90_tokens", "gap_to_target", "target", "capped_share",
               "ru_share", "distinct2", "ref_loss", "judge", "lc_warning", "run_dir"]
DISPLAY_HEADERS = ["run", "training data", "stages", "mean tokens", "median tokens", "gap to target",
                   "at cap", "ru share", "distinct-2", "ref loss", "score [95% CI]", "LC score", "n", "failures"]


def stages_text(stages: list[dict]) -> str:
    """'sft → simpo' from run.json stages (method, else name); the base model alone is 'base'."""
    names = [str(s.get("method") or s.get("name") or "?") for s in stages]
    return " → ".join(names) if names else "base"


def _answer_lengths(run: "Run", target: int) -> dict[str, float | None]:
    from rualign.eval.stats import length_stats

    tokens = [int(a["answer_tokens"]) for a in run.answers if isinstance(a.get("answer_tokens"), (int, float))]
    return length_stats(tokens, target)


def summary_row(run: "Run", target: int) -> dict[str, Any]:
    """One results row. Lengths come from score.json when judged (the judge's own count), else answers.jsonl."""
    score = run.score or {}
    lengths = ((score.get("lengths") or {}).get("model") or {}) if score else {}
    if lengths.get("mean") is None:
        lengths = _answer_lengths(run, target)
    mean = lengths.get("mean")
    failures = score.get("failures") or {}
    judge = score.get("judge") or {}
    from rualign.eval.metrics import answer_metrics

    texts = answer_metrics([str(a.get("answer") or "") for a in run.answers])
    capped = [a.get("finish_reason") == "length" for a in run.answers if a.get("finish_reason")]
    return {
        "name": run.name, "description": run.description, "stages": stages_text(run.stages),
        "status": "judged" if run.score is not None else NOT_JUDGED,
        "score": score.get("score"), "ci_low": score.get("ci_low"), "ci_high": score.get("ci_high"),
        "lc_score": score.get("lc_score"), "n": score.get("n"),
        "n_prompts": score.get("n_prompts", len(run.answers)) if run.score is not None else len(run.answers),
        "failures": failures.get("count") if run.score is not None else None,
        "wins": score.get("wins"), "ties": score.get("ties"), "losses": score.get("losses"),
        # Ties scored without a judge call (answer = reference); absent from score.json files of older runs.
        "identical_pairs": (score.get("identical_pairs") or {}).get("count"),
        "tie_rate": score.get("tie_rate"), "order_flip_rate": score.get("order_flip_rate"),
        "mean_tokens": mean, "median_tokens": lengths.get("median"), "p90_tokens": lengths.get("p90"),
        "gap_to_target": None if mean is None else round(mean - target, 2), "target": target,
        # Judge-free metrics (eval/metrics.py): answers stopped at max_new_tokens, language, loops, held-out loss.
        "capped_share": sum(capped) / len(capped) if capped else None, **texts, "ref_loss": run.ref_loss,
        "judge": judge.get("model") or judge.get("name"), "lc_warning": score.get("lc_warning"),
        "run_dir": str(run.folder),
    }


def write_csv(rows: list[dict], path: Path) -> None:
    """Full-precision values; empty cells for values a run does not have (e.g. not judged)."""
    with atomic_open(path) as handle:
        writer = csv.DictWriter(handle, fieldnames=CSV_COLUMNS, lineterminator="\n")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: "" if row.get(k) is None else row[k] for k in CSV_COLUMNS})


def _num(value: Any, digits: int, signed: bool = False) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    return f"{value:+.{digits}f}" if signed else f"{value:.{digits}f}"


def _pct(value: Any) -> str:
    return "—" if value is None else f"{100 * value:.0f}%"


def display_cells(row: dict) -> list[str]:
    """The human-readable cells, in DISPLAY_HEADERS order."""
    if row["status"] == NOT_JUDGED:
        score = NOT_JUDGED
    else:
        score = f"{_num(row['score'], 1)} [{_num(row['ci_low'], 1)}, {_num(row['ci_high'], 1)}]"
    return [row["name"], row["description"], row["stages"], _num(row["mean_tokens"], 0),
            _num(row["median_tokens"], 0), _num(row["gap_to_target"], 0, signed=True),
            _pct(row["capped_share"]), _num(row["ru_share"], 2), _num(row["distinct2"], 2), _num(row["ref_loss"], 2),
            score,
            _num(row["lc_score"], 1), "—" if row["n"] is None else str(row["n"]),
            "—" if row["failures"] is None else str(row["failures"])]


def md_cell(text: Any) -> str:
    """A Markdown table cell: pipes and backslashes escaped, newlines as <br>, HTML-significant chars escaped."""
    import html

    value = html.escape(str(text), quote=False).replace("\\", "\\\\").replace("|", "\\|")
    return value.replace("\r\n", "\n").replace("\r", "\n").replace("\n", "<br>")


def markdown_table(rows: list[dict]) -> str:
    lines = ["| " + " | ".join(DISPLAY_HEADERS) + " |", "|" + "---|" * len(DISPLAY_HEADERS)]
    lines += ["| " + " | ".join(md_cell(c) for c in display_cells(row)) + " |" for row in rows]
    return "\n".join(lines)


JUDGE_FREE_NOTE = ("Judge-free columns: *at cap* = share of answers cut at max_new_tokens; *ru share* = "
                   "Cyrillic share of letters outside code; *distinct-2* = distinct/all word bigrams per answer "
                   "(low = loops); *ref loss* = the model's loss (nats/token) on held-out reference answers "
                   "(lower = better; comparable within one base model).")


def markdown_report(rows: list[dict], plots: dict[str, Path], notes: list[str], out_dir: Path, target: int) -> str:
    parts = ["# rualign report", "",
             f"Target mean answer length: {target} tokens. Score: the judge's preference for the model answer "
             "over the reference, 0–100 (the reference against itself is 50), with a 95% bootstrap CI over "
             "prompts. Failures are judge/parse failures, left out of the score and never counted as losses.",
             "", JUDGE_FREE_NOTE, "", markdown_table(rows), ""]
    if notes:
        parts += ["## Notes", ""] + [f"- {md_cell(note)}" for note in notes] + [""]
    if plots:
        parts += ["## Plots", ""]
        for name, path in plots.items():
            rel = os.path.relpath(path, out_dir).replace(os.sep, "/")
            parts += [f"![{name}]({rel})", ""]
    return "\n".join(parts)


_TERMINAL_HEADERS = {"mean tokens": "mean", "median tokens": "med", "gap to target": "gap", "LC score": "LC",
                     "failures": "fail", "at cap": "cap", "ru share": "ru", "distinct-2": "d2", "ref loss": "loss"}


def print_table(rows: list[dict], console: "Console | None" = None) -> None:
    """Print the results table in the terminal (also used by `rualign demo`).

    On a narrow terminal the training-data column would fold into a letter per line, so it is printed as
    a list under the table instead.
    """
    from rich import box
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    console = console or Console()
    wide = console.width >= 140
    table = Table(title="rualign results", box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True)
    # An 80-column terminal cannot hold every column: the CSV, report.md and report.html keep them all.
    narrow_drop = {"training data", "median tokens", "LC score", "n", "at cap", "ref loss"}
    shown = [i for i, h in enumerate(DISPLAY_HEADERS) if wide or h not in narrow_drop]
    all_cells = [display_cells(row) for row in rows]
    for i in shown:
        header = DISPLAY_HEADERS[i]
        numeric = header not in ("run", "training data", "stages", "score [95% CI]")
        folds = header in ("run", "training data", "stages")
        # Numbers and scores get their full width (a cropped "-170" reading "-17" would be a wrong number);
        # only the text columns fold.
        width = None if folds else max([len(c[i]) for c in all_cells] + [len(_TERMINAL_HEADERS.get(header, header))])
        table.add_column(_TERMINAL_HEADERS.get(header, header), justify="right" if numeric else "left",
                         min_width=width, overflow="fold")
    for row, cells in zip(rows, all_cells):
        # Text, not markup: a run name like "[bold]" must print as written.
        table.add_row(*[Text(cells[i]) for i in shown], style="dim" if row["status"] == NOT_JUDGED else None)
    console.print(table)
    if not wide:
        for row in rows:
            console.print(Text(f"  {row['name']}: {' '.join(row['description'].split()) or '—'}"))
