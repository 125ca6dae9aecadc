"""`rualign report`: load experiment run folders and write results.csv, report.md, plots and report.html.

A run folder (docs/formats.md) holds run.json, answers.jsonl and judge/{score.json, judgments.jsonl}.
A folder without judge/score.json is reported as "not judged" (never dropped); a folder that is not a
run folder at all is a RualignError naming what it lacks.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from rualign.errors import RualignError
from rualign.paths import contained
from rualign.records import (DEFAULT_TARGET, ORDERS, AnswerRecord, JudgeCard, Judgment, KnowledgeResult, RunInfo,
                             Score, StageInfo, read_answers, read_judgments, read_ref_loss, read_run_info, read_score)
from rualign.runs import file_hash, stable_hash, write_manifest, write_text

if TYPE_CHECKING:
    from rualign.eval.pooled import PooledScore

RUN_FOLDER = "a run folder written by `rualign run` (run.json, answers.jsonl, judge/score.json)"


@dataclass
class Run:
    """Everything the report needs from one run folder, already validated."""

    folder: Path
    name: str
    description: str
    stages: list[StageInfo]
    answers: list[AnswerRecord]
    score: Score | None  # None: not judged
    judgments: dict[str, list[Judgment]] = field(default_factory=dict)  # id -> judge calls
    references: dict[str, AnswerRecord] = field(default_factory=dict)  # id -> reference answer
    reference_path: str | None = None
    notes: list[str] = field(default_factory=list)
    ref_loss: float | None = None  # ref_loss.json of the run folder (hf generation with eval.heldout)
    knowledge: KnowledgeResult | None = None  # knowledge.json of the run folder (eval.knowledge), predictions dropped
    reference_name: str | None = None  # several references: this run's reference (run folder references/<name>/)
    pooled: PooledScore | None = None  # several references: the experiment's pooled.json (eval/pooled.py)
    experiment: str | None = None  # several references: the experiment's name (the folder holding pooled.json)


def _check_run_folder(folder: Path) -> None:
    if not folder.exists():
        raise RualignError("run folder does not exist", path=folder, expected=RUN_FOLDER)
    if not folder.is_dir():
        raise RualignError("not a folder", path=folder, expected=RUN_FOLDER)
    lacks = [name for name in ("run.json", "answers.jsonl") if not (folder / name).is_file()]
    if lacks:
        raise RualignError(f"not a run folder: it lacks {' and '.join(lacks)}", path=folder,
                           expected=RUN_FOLDER, hint="pass the folders `rualign run` wrote, one per experiment")


def _load_score(folder: Path) -> Score | None:
    path = folder / "judge" / "score.json"
    return read_score(path) if path.is_file() else None


def _load_judgments(folder: Path) -> dict[str, list[Judgment]]:
    path = folder / "judge" / "judgments.jsonl"
    grouped: dict[str, list[Judgment]] = {}
    if path.is_file():
        for row in read_judgments(path):
            grouped.setdefault(row.id, []).append(row)
    for rows in grouped.values():
        rows.sort(key=lambda r: ORDERS.index(r.order))
    return grouped


def _load_references(folder: Path, meta: RunInfo, run: Run) -> None:
    if not meta.reference_answers:
        run.notes.append("run.json names no reference_answers: reference texts are not shown")
        return
    path = Path(meta.reference_answers)
    if not path.is_absolute():
        path = folder / path  # a relative path in run.json is relative to its run folder
    run.reference_path = str(path)
    if not path.is_file():
        run.notes.append(f"reference answers not found at {path}: reference texts are not shown")
        return
    run.references = {row.id: row for row in read_answers(path, require_prompt=False)}


def load_run(folder: str | Path) -> Run:
    """Read and validate one run folder."""
    folder = Path(folder)
    _check_run_folder(folder)
    meta = read_run_info(folder / "run.json")
    run = Run(folder=folder, name=meta.name or folder.name, description=meta.description, stages=meta.stages,
              answers=read_answers(folder / "answers.jsonl", require_prompt=False), score=_load_score(folder),
              judgments=_load_judgments(folder))
    if run.score is None:
        run.notes.append("not judged: judge/score.json is missing")
    if (folder / "ref_loss.json").is_file():
        run.ref_loss = read_ref_loss(folder / "ref_loss.json").ref_loss
    if (folder / "knowledge.json").is_file():
        from rualign.records import read_knowledge

        # The per-question predictions are not shown: not kept for every run in memory.
        run.knowledge = read_knowledge(folder / "knowledge.json").model_copy(update={"predictions": []})
    _load_references(folder, meta, run)
    return run


def load_multi(folder: Path) -> list[Run]:
    """A run folder judged against several references (pooled.json): one Run per reference, in config order,
    each carrying the pooled score."""
    from rualign.eval.pooled import read_pooled

    _check_run_folder(folder)
    pooled = read_pooled(folder / "pooled.json")
    runs = []
    for ref in pooled.references:
        sub = folder / "references" / ref.name
        contained(folder, sub, action="read")  # a name edited into pooled.json cannot lead outside the folder
        run = load_run(sub)
        run.reference_name, run.pooled, run.experiment = ref.name, pooled, folder.name
        runs.append(run)
    if not runs:
        raise RualignError("pooled.json lists no references", path=folder / "pooled.json",
                           expected="the pooled.json `rualign run` writes for an experiment with several references")
    return runs


def load_runs(run_dirs: list[Path]) -> list[Run]:
    """Load every folder; names are made unique so filters in the answer browser stay unambiguous. A folder
    judged against several references gives one run per reference."""
    if not run_dirs:
        raise RualignError("no run folders given", expected="one or more run folders")
    runs = [run for d in run_dirs for run in
            (load_multi(Path(d)) if (Path(d) / "pooled.json").is_file() else [load_run(d)])]
    seen: Counter[str] = Counter()
    for run in runs:
        count = seen[run.name]
        seen[run.name] += 1
        if count:
            run.notes.append(f"name '{run.name}' is used by an earlier run folder; shown as '{run.name} ({count + 1})'")
            run.name = f"{run.name} ({count + 1})"
    return runs


def _share(paths: list[Path]) -> None:
    """Atomic writes create private (0600) files; a report is meant to be read by others, so use the umask."""
    import os

    umask = os.umask(0)
    os.umask(umask)
    for path in paths:
        os.chmod(path, 0o666 & ~umask)


def _input_record(run: Run) -> dict:
    score = run.folder / "judge" / "score.json"
    return {"dir": str(run.folder), "answers": file_hash(run.folder / "answers.jsonl"),
            "score": file_hash(score) if score.is_file() else None}


def judge_card_note(card: JudgeCard) -> str:
    """One line about the judge behind the scores, from its judge card."""
    head = "validated" if card.validated else "UNVALIDATED (scores marked so): " + "; ".join(card.reasons)
    return (f"judge card ({card.n} of {card.n_pairs} gold pairs from {card.gold.name or '?'}): accuracy "
            f"{card.accuracy} [{card.ci_low}, {card.ci_high}], first-slot rate "
            f"{card.first_slot_rate}, verdict mass {card.verdict_mass} -> {head}")


def _joint_and_judge(runs: list[Run], rows: list[dict], judge_notes: bool = True) -> list[str]:
    """Joint lc / sc into the rows (runs sharing a reference); notes on joint coefficients and, from each
    score.json's judge_card (unless a card for the whole report was given), on judges not validated."""
    from rualign.report.joint_view import joint_by_folder

    joint, notes = joint_by_folder([run.folder for run in runs])
    for run, row in zip(runs, rows):
        row.update(joint.get(str(run.folder), {}))
    judges: dict[tuple, list[str]] = {}
    for run, row in zip(runs, rows):
        status = run.score.judge_card if run.score is not None else None
        if judge_notes and row["judge_status"] in ("unvalidated", "unchecked"):
            key = (row["judge"], row["judge_status"], tuple(status.reasons if status is not None else ()))
            judges.setdefault(key, []).append(run.name)
    for (judge, status, reasons), names in judges.items():
        why = "; ".join(reasons) or "no judge card: run `rualign judge-check` for this judge"
        label = "UNVALIDATED" if status == "unvalidated" else status
        notes.append(f"judge {judge} ({', '.join(names)}): {label}: {why}")
    return notes


def build_report(run_dirs: list[Path], out_dir: Path, target: int = DEFAULT_TARGET,
                 judge_card: JudgeCard | None = None) -> dict:
    """Write results.csv, report.md, plots/*.png, report.html and manifest.json into `out_dir`.

    Returns {"rows": [...], "files": {"csv", "md", "html", "plots": {name: path}}, "notes": [...]}.
    """
    from rualign.report import html, plots, tables

    out_dir = Path(out_dir)
    runs = load_runs([Path(d) for d in run_dirs])
    rows = [tables.summary_row(run, target) for run in runs]
    if judge_card is not None:
        for row in rows:
            if row["status"] != tables.NOT_JUDGED:
                row["judge_status"] = "validated" if judge_card.validated else "unvalidated"
    notes = ([judge_card_note(judge_card)] if judge_card is not None else [])
    notes += [f"{run.name}: {note}" for run in runs for note in run.notes]
    notes += _joint_and_judge(runs, rows, judge_notes=judge_card is None)
    notes += [f"{row['name']}: {row['lc_warning']}" for row in rows if row["lc_warning"]]
    notes += [f"{row['name']}: {row['identical_pairs']} of {row['n_prompts']} answers are identical to the "
              "reference: scored as ties (50) without a judge call" for row in rows if row["identical_pairs"]]
    csv_path = out_dir / "results.csv"
    tables.write_csv(rows, csv_path)
    plot_files = plots.write_plots(runs, rows, target, out_dir / "plots")
    md_path = out_dir / "report.md"
    md = tables.markdown_report(rows, plot_files, notes, out_dir, target)
    if judge_card is not None:
        from rualign.eval.judge_card import markdown as card_markdown

        md += "\n" + card_markdown(judge_card).replace("# Judge card", "## Judge card", 1) + "\n"
    write_text(md_path, md)
    html_path = out_dir / "report.html"
    write_text(html_path, html.render_report(runs, rows, plot_files, notes, target))
    _share([csv_path, md_path, html_path, *plot_files.values()])
    files = {"csv": str(csv_path), "md": str(md_path), "html": str(html_path),
             "plots": {name: str(path) for name, path in plot_files.items()}}
    inputs = [_input_record(run) for run in runs]
    write_manifest(out_dir, stage="report", config_hash=stable_hash({"inputs": inputs, "target": target}),
                   runs=inputs, target=target, files=files)
    return {"rows": rows, "files": files, "notes": notes}
