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

from rualign.records import IdList, LengthStats, Score, StageInfo
from rualign.runs import atomic_open

if TYPE_CHECKING:
    from rich.console import Console

    from rualign.report.build import Run

NOT_JUDGED = "not judged"


def score_columns() -> list[str]:
    """The Score fields results.csv shows (records.shown), in the model's order: a new statistic is a column
    as soon as its field is declared with `shown()`."""
    return [name for name, info in Score.model_fields.items() if (info.json_schema_extra or {}).get("report") == "csv"]


# Judge-free columns computed from the run folder itself (eval/metrics.py): answers stopped at max_new_tokens,
# language, loops, held-out loss; and the knowledge check (eval.knowledge) in points: 100 x accuracy.
ANSWER_COLUMNS = ["capped_share", "ru_share", "distinct2", "ref_loss", "knowledge", "knowledge_norm"]
# The joint fit over runs sharing a reference (report/joint_view.py): lc / sc with CIs. score.json's own
# `lc_score` is a per-run fit, kept as a diagnostic under its own name.
JOINT_COLUMNS = ["lc", "lc_ci_low", "lc_ci_high", "sc", "sc_ci_low", "sc_ci_high"]
# Verdict-mode win rate per criterion (Score.criteria), 0..100.
CRITERIA_COLUMNS = [f"win_{name}" for name in ("relevance", "helpfulness", "clarity", "language")]
CSV_COLUMNS = ["name", "description", "stages", "status", *score_columns(), *JOINT_COLUMNS, "judge_status",
               *CRITERIA_COLUMNS, "mean_tokens", "median_tokens", "p90_tokens", "gap_to_target", "target",
               *ANSWER_COLUMNS, "judge", "run_dir"]
# Experiments judged against several references (eval.reference a list): each row is one (experiment,
# reference); `pooled*` is the experiment's score pooled over its references (eval/pooled.py), the same on each
# of its rows. Only reports holding such a run get these columns, so single-reference results.csv is unchanged.
REFERENCE_COLUMNS = ["experiment", "reference", "pooled", "pooled_ci_low", "pooled_ci_high"]


def csv_columns(rows: list[dict]) -> list[str]:
    if not any(row.get("reference") for row in rows):
        return CSV_COLUMNS
    at = CSV_COLUMNS.index("status")
    return [*CSV_COLUMNS[:at], *REFERENCE_COLUMNS, *CSV_COLUMNS[at:]]
DISPLAY_HEADERS = ["run", "training data", "stages", "mean tokens", "median tokens", "gap to target",
                   "at cap", "ru share", "distinct-2", "ref loss", "knowledge", "score [95% CI]", "LC joint [95% CI]",
                   "SC joint", "per-run LC (diag.)", "first slot", "n", "failures"]
UNVALIDATED = "UNVALIDATED"


def stages_text(stages: list[StageInfo]) -> str:
    """'sft → simpo' from run.json stages (method, else name); the base model alone is 'base'."""
    names = [str(s.method or s.name or "?") for s in stages]
    return " → ".join(names) if names else "base"


def _answer_lengths(run: "Run", target: int) -> LengthStats:
    return LengthStats.of([a.answer_tokens for a in run.answers if a.answer_tokens is not None], target)


def _cell(value: Any) -> Any:
    # A part with a count (failures, identical_pairs) is shown as its count.
    return value.count if isinstance(value, IdList) else value


def summary_row(run: "Run", target: int) -> dict[str, Any]:
    """One results row. Lengths come from score.json when judged (the judge's own count), else answers.jsonl."""
    score = run.score
    lengths = score.lengths.model if score is not None and score.lengths is not None else None
    if lengths is None or lengths.mean is None:
        lengths = _answer_lengths(run, target)
    row: dict[str, Any] = {name: None for name in (*CSV_COLUMNS, *REFERENCE_COLUMNS)}
    if run.reference_name is not None:
        row.update({"experiment": run.experiment, "reference": run.reference_name})
        if run.pooled is not None:
            row.update({"pooled": run.pooled.score, "pooled_ci_low": run.pooled.ci_low,
                        "pooled_ci_high": run.pooled.ci_high})
    if score is not None:
        row.update({name: _cell(getattr(score, name)) for name in score_columns()})
        row["n_prompts"] = score.n_prompts if score.n_prompts is not None else len(run.answers)
        row["judge"] = (score.judge.model or score.judge.name) if score.judge else None
        # None: a score.json from before judge cards
        row["judge_status"] = score.judge_card.status if score.judge_card is not None else None
        row.update({f"win_{k}": v for k, v in (score.criteria or {}).items() if f"win_{k}" in CRITERIA_COLUMNS})
    else:
        row["n_prompts"] = len(run.answers)
    row.update({
        "name": run.name, "description": run.description, "stages": stages_text(run.stages),
        "status": "judged" if score is not None else NOT_JUDGED,
        "mean_tokens": lengths.mean, "median_tokens": lengths.median, "p90_tokens": lengths.p90,
        "gap_to_target": None if lengths.mean is None else round(lengths.mean - target, 2), "target": target,
        "run_dir": str(run.folder), **_answer_metrics(run)})
    return row


def _answer_metrics(run: "Run") -> dict[str, Any]:
    from rualign.eval.metrics import answer_metrics

    capped = [a.finish_reason == "length" for a in run.answers if a.finish_reason]
    return {"capped_share": sum(capped) / len(capped) if capped else None,
            **answer_metrics([a.answer for a in run.answers]), "ref_loss": run.ref_loss,
            "knowledge": None if run.knowledge is None else 100.0 * run.knowledge.accuracy,
            "knowledge_norm": None if run.knowledge is None else 100.0 * run.knowledge.accuracy_norm}


def write_csv(rows: list[dict], path: Path) -> None:
    """Full-precision values; empty cells for values a run does not have (e.g. not judged)."""
    columns = csv_columns(rows)
    with atomic_open(path) as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: "" if row.get(k) is None else row[k] for k in columns})


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
        if row["judge_status"] == "unvalidated":  # visible wherever the score is, never hidden
            score += f" {UNVALIDATED}"
    lc = "—" if row["lc"] is None else f"{_num(row['lc'], 1)} [{_num(row['lc_ci_low'], 1)}, {_num(row['lc_ci_high'], 1)}]"
    return [row["name"], row["description"], row["stages"], _num(row["mean_tokens"], 0),
            _num(row["median_tokens"], 0), _num(row["gap_to_target"], 0, signed=True),
            _pct(row["capped_share"]), _num(row["ru_share"], 2), _num(row["distinct2"], 2), _num(row["ref_loss"], 2),
            _num(row["knowledge"], 1), score, lc, _num(row["sc"], 1), _num(row["lc_score"], 1),
            _num(row["first_slot_win_rate"], 2),
            "—" if row["n"] is None else str(row["n"]), "—" if row["failures"] is None else str(row["failures"])]


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


CONTROL_NOTE = ("*LC joint* / *SC joint*: one logistic fit over all runs judged against the same reference, with a "
                "shared length term (and, for SC, markdown and language-fidelity terms), predicted at zero length "
                "difference and neutral answer order (`rualign leaderboard` has the coefficients). *per-run LC* is "
                "fitted on one run alone and can explain quality away as length: a diagnostic only. *first slot*: "
                "preference for whichever answer was shown first (0.50 = no position bias). A score marked "
                f"{UNVALIDATED} comes from a judge whose judge card is at chance or whose verdict mass is < 0.5.")


def _criteria_table(rows: list[dict]) -> list[str]:
    """Verdict-mode win rate per criterion (0..100, ties ½), when the judge gave criteria."""
    judged = [r for r in rows if any(r[c] is not None for c in CRITERIA_COLUMNS)]
    if not judged:
        return []
    names = [c.removeprefix("win_") for c in CRITERIA_COLUMNS]
    lines = ["## Win rate per criterion (verdict mode)", "", "| run | " + " | ".join(names) + " |",
             "|---|" + "---|" * len(names)]
    lines += ["| " + " | ".join([md_cell(r["name"]), *(_num(r[c], 1) for c in CRITERIA_COLUMNS)]) + " |"
              for r in judged]
    return lines + [""]


def pooled_rows(rows: list[dict]) -> list[dict]:
    """One entry per experiment judged against several references: its pooled score and each reference's."""
    pooled: dict[str, dict] = {}
    for row in rows:
        if row.get("reference") is None:
            continue
        entry = pooled.setdefault(row["experiment"], {"experiment": row["experiment"], "pooled": row["pooled"],
                                                      "pooled_ci_low": row["pooled_ci_low"],
                                                      "pooled_ci_high": row["pooled_ci_high"], "references": []})
        entry["references"].append((row["reference"], row["score"], row["judge_status"]))
    return list(pooled.values())


POOLED_NOTE = ("*pooled*: 100 × the mean preference over every (prompt, reference) pair, with a 95% bootstrap CI "
               "over prompts that resamples each prompt together with its judgments against all references.")


def pooled_cells(entry: dict) -> list[str]:
    """experiment, pooled [CI], and each reference's score, for report.md and report.html."""
    per_ref = "; ".join(f"{name} {_num(score, 1)}" + (f" {UNVALIDATED}" if status == "unvalidated" else "")
                        for name, score, status in entry["references"])
    return [entry["experiment"], f"{_num(entry['pooled'], 1)} [{_num(entry['pooled_ci_low'], 1)}, "
                                 f"{_num(entry['pooled_ci_high'], 1)}]", per_ref]


def _pooled_table(rows: list[dict]) -> list[str]:
    entries = pooled_rows(rows)
    if not entries:
        return []
    lines = ["## Pooled over references", "", POOLED_NOTE, "", "| experiment | pooled [95% CI] | per reference |",
             "|---|---|---|"]
    lines += ["| " + " | ".join(md_cell(c) for c in pooled_cells(e)) + " |" for e in entries]
    return lines + [""]


def markdown_report(rows: list[dict], plots: dict[str, Path], notes: list[str], out_dir: Path, target: int) -> str:
    parts = ["# rualign report", "",
             f"Target mean answer length: {target} tokens. Score: the judge's preference for the model answer "
             "over the reference, 0–100 (the reference against itself is 50), with a 95% bootstrap CI over "
             "prompts. Failures are judge/parse failures, left out of the score and never counted as losses.",
             "", JUDGE_FREE_NOTE, "", CONTROL_NOTE, "", markdown_table(rows), ""]
    parts += _pooled_table(rows)
    parts += _criteria_table(rows)
    if notes:
        parts += ["## Notes", ""] + [f"- {md_cell(note)}" for note in notes] + [""]
    if plots:
        parts += ["## Plots", ""]
        for name, path in plots.items():
            rel = os.path.relpath(path, out_dir).replace(os.sep, "/")
            parts += [f"![{name}]({rel})", ""]
    return "\n".join(parts)


_TERMINAL_HEADERS = {"mean tokens": "mean", "median tokens": "med", "gap to target": "gap",
                     "LC joint [95% CI]": "LC joint", "per-run LC (diag.)": "LC/run", "first slot": "1st",
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
    narrow_drop = {"training data", "median tokens", "LC joint [95% CI]", "per-run LC (diag.)", "SC joint",
                   "first slot", "n", "at cap", "ref loss", "knowledge"}
    shown = [i for i, h in enumerate(DISPLAY_HEADERS) if wide or h not in narrow_drop]
    all_cells = [display_cells(row) for row in rows]
    for i in shown:
        header = DISPLAY_HEADERS[i]
        numeric = header not in ("run", "training data", "stages", "score [95% CI]", "LC joint [95% CI]")
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
        joint = [(row["name"], display_cells(row)[DISPLAY_HEADERS.index("LC joint [95% CI]")]) for row in rows
                 if row["lc"] is not None]
        if joint:  # the joint length-controlled score is too wide for the table here, so it gets its own lines
            console.print(Text("  LC joint: " + "; ".join(f"{name} {cell}" for name, cell in joint)))
    for entry in pooled_rows(rows):  # experiments judged against several references
        experiment, pooled, per_ref = pooled_cells(entry)
        console.print(Text(f"  pooled over references: {experiment} {pooled} ({per_ref})"))
