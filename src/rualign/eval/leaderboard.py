"""Inputs of `rualign leaderboard`: runs judged against one reference, gathered into one JointData.

Input forms (both end up as a list of RunInput):
- run folders written by `rualign run` (answers.jsonl, judge/judgments.jsonl, run.json naming the reference);
- one YAML file:  reference: PATH  /  runs: [{name, answers, judgments} | {run: FOLDER, name?}].
Runs are grouped by reference; each group gets its own joint fit (a length slope is only shared between
runs judged against the same answers).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from pydantic import model_validator

from rualign.config import Strict, load_yaml, resolve_relative
from rualign.errors import DataError, RualignError
from rualign.eval import tokenizer_id
from rualign.eval.joint import JointData
from rualign.eval.style import STYLE_FEATURES, style_of
from rualign.records import AnswerRecord, Judgment, RunInfo, read_answers, read_judgments, read_run_info, read_score

RUN_FOLDER = "a run folder written by `rualign run` (run.json, answers.jsonl, judge/judgments.jsonl)"


class RunEntry(Strict):
    name: str | None = None
    run: str | None = None  # a run folder; or answers + judgments
    answers: str | None = None
    judgments: str | None = None

    @model_validator(mode="after")
    def _one_source(self) -> "RunEntry":
        if self.run is None and not (self.answers and self.judgments):
            raise ValueError("give either 'run: FOLDER' or both 'answers:' and 'judgments:'")
        if self.run is not None and (self.answers or self.judgments):
            raise ValueError("give 'run:' or 'answers:'/'judgments:', not both")
        if self.run is None and not self.name:
            raise ValueError("an entry with answers/judgments needs a 'name'")
        return self


class LeaderboardSpec(Strict):
    reference: str  # answers.jsonl of the reference model
    runs: list[RunEntry]

    @model_validator(mode="after")
    def _some_runs(self) -> "LeaderboardSpec":
        if not self.runs:
            raise ValueError("'runs' is empty")
        return self


@dataclass
class RunInput:
    name: str
    answers: Path
    judgments: Path
    reference: Path
    judge: str | None = None  # judge name from score.json, when there is one
    judge_status: str | None = None  # score.json judge_card status: validated / unvalidated / unchecked


def _run_folder(folder: Path, name: str | None, reference: Path | None) -> RunInput:
    lacks = [p for p in ("answers.jsonl", "judge/judgments.jsonl") if not (folder / p).is_file()]
    if not folder.is_dir() or lacks:
        raise RualignError(f"not a judged run folder (lacks {', '.join(lacks) or 'everything'})", path=folder,
                           expected=RUN_FOLDER)
    meta = read_run_info(folder / "run.json") if (folder / "run.json").is_file() else RunInfo()
    if reference is None:
        ref = meta.reference_answers
        if not ref:
            raise RualignError("run.json names no reference_answers", path=folder / "run.json",
                               expected='"reference_answers": path to the reference answers.jsonl')
        reference = Path(ref) if Path(ref).is_absolute() else folder / ref
    score = read_score(folder / "judge" / "score.json") if (folder / "judge" / "score.json").is_file() else None
    judge = score.judge.name if score is not None and score.judge is not None else None
    status = score.judge_card.status if score is not None and score.judge_card is not None else None
    return RunInput(name or meta.name or folder.name, folder / "answers.jsonl", folder / "judge" / "judgments.jsonl",
                    Path(reference), judge, status)


def resolve_inputs(paths: list[str]) -> list[RunInput]:
    """A single YAML file, or run folders."""
    if not paths:
        raise RualignError("nothing to rank", expected="a leaderboard YAML file or run folders")
    if len(paths) == 1 and Path(paths[0]).suffix in (".yaml", ".yml"):
        return _from_yaml(Path(paths[0]))
    return [run for p in paths for run in _expanded(Path(p))]


def _expanded(folder: Path) -> list[RunInput]:
    """A run folder, or one judged against several references (pooled.json): one input per reference, each
    grouped with the other runs judged against that reference (the joint fit is per reference)."""
    if not (folder / "pooled.json").is_file():
        return [_run_folder(folder, None, None)]
    from rualign.eval.pooled import read_pooled
    from rualign.paths import contained

    subs = [contained(folder, folder / "references" / ref.name, action="read")
            for ref in read_pooled(folder / "pooled.json").references]
    return [_run_folder(sub, None, None) for sub in subs]


def _from_yaml(path: Path) -> list[RunInput]:
    spec = load_yaml(path, LeaderboardSpec)
    reference = Path(resolve_relative(spec.reference, path))
    inputs = []
    for entry in spec.runs:
        if entry.run is not None:
            if (Path(resolve_relative(entry.run, path)) / "pooled.json").is_file():
                raise RualignError(f"run '{entry.run}' was judged against several references", path=path,
                                   expected="one reference per leaderboard file",
                                   hint=f"name the folder of this file's reference: {entry.run}/references/<name>")
            inputs.append(_run_folder(Path(resolve_relative(entry.run, path)), entry.name, reference))
        else:
            inputs.append(RunInput(entry.name, Path(resolve_relative(entry.answers, path)),
                                   Path(resolve_relative(entry.judgments, path)), reference))
    return inputs


def load_answers(path: Path, what: str) -> dict[str, AnswerRecord]:
    """answers.jsonl through the one reader; the leaderboard also needs every answer's length."""
    if not path.is_file():
        raise DataError(f"{what} file not found", path=path)
    records = {r.id: r for r in read_answers(path)}
    for number, record in enumerate(records.values(), start=1):
        if record.answer_tokens is None:
            raise DataError(f"{what} record {number} has no 'answer_tokens'", path=path,
                            expected="answer lengths counted by `rualign generate`")
    return records


@dataclass
class RunExtras:
    """What the leaderboard shows besides the fitted numbers."""

    mean_tokens: float
    first_slot_win_rate: float | None
    verdict_mass: float | None
    calls: int
    failed_calls: int
    tokenizer: str | None
    notes: list[str] = field(default_factory=list)


def _valid(row: Judgment) -> bool:
    p = row.preference
    return not row.error and p is not None and 0.0 <= p <= 1.0 and not math.isnan(p)


def gather(inputs: list[RunInput]) -> tuple[JointData, list[RunExtras]]:
    """One JointData over runs sharing a reference, and per-run extras; every mismatch is a named error."""
    reference_path = inputs[0].reference
    reference = load_answers(reference_path, "reference answers")
    ref_style = {pid: style_of(r.answer).vector() for pid, r in reference.items()}
    prompts = list(reference)
    prompt_pos = {pid: i for i, pid in enumerate(prompts)}
    cols: dict[str, list] = {k: [] for k in ("run", "prompt", "y", "order", "dlen", "style")}
    extras = []
    for k, run in enumerate(inputs):
        answers = load_answers(run.answers, f"{run.name} answers")
        tokenizer = tokenizer_id.check_same(run.answers, answers.values(), reference_path, reference.values())
        extras.append(_collect(k, run, answers, reference, ref_style, prompt_pos, cols, tokenizer))
    data = JointData([r.name for r in inputs], prompts, np.array(cols["run"], int), np.array(cols["prompt"], int),
                     np.array(cols["y"], float), np.array(cols["order"], float), np.array(cols["dlen"], float),
                     np.array(cols["style"], float).reshape(-1, len(STYLE_FEATURES)), STYLE_FEATURES)
    return data, extras


def _collect(k: int, run: RunInput, answers: dict, reference: dict, ref_style: dict, prompt_pos: dict,
             cols: dict, tokenizer: str | None) -> RunExtras:
    rows = read_judgments(run.judgments) if run.judgments.is_file() else None
    if rows is None:
        raise DataError("judgments file not found", path=run.judgments)
    unknown = sorted({r.id for r in rows} - set(reference))
    if unknown:
        raise DataError(f"{len(unknown)} judged id(s) are not in the reference answers {run.reference}: "
                        f"{', '.join(unknown[:5])}", path=run.judgments, expected="the same ids as the reference")
    good = [r for r in rows if _valid(r) and r.id in answers]
    slot_a, masses, styles = [], [], {}
    for row in good:
        pid = row.id
        if pid not in styles:
            styles[pid] = np.subtract(style_of(answers[pid].answer).vector(), ref_style[pid])
        first = row.order == "model_first"
        cols["run"].append(k), cols["prompt"].append(prompt_pos[pid]), cols["y"].append(row.preference)
        cols["order"].append(1.0 if first else -1.0)
        cols["dlen"].append(float(answers[pid].answer_tokens) - float(reference[pid].answer_tokens))
        cols["style"].append(styles[pid])
        if not row.identical:
            slot_a.append(row.preference if first else 1.0 - row.preference)
        if row.verdict_mass is not None:
            masses.append(row.verdict_mass)
    if not good:
        raise DataError(f"run '{run.name}' has no successful judgments", path=run.judgments,
                        expected="judgments.jsonl rows with a preference")
    judged = list(styles)
    return RunExtras(mean_tokens=float(np.mean([answers[p].answer_tokens for p in judged])),
                     first_slot_win_rate=float(np.mean(slot_a)) if slot_a else None,
                     verdict_mass=float(np.mean(masses)) if masses else None,
                     calls=len(rows), failed_calls=len(rows) - len([r for r in rows if _valid(r)]),
                     tokenizer=tokenizer)


def group_by_reference(inputs: list[RunInput]) -> dict[str, list[RunInput]]:
    groups: dict[str, list[RunInput]] = {}
    for run in inputs:
        groups.setdefault(str(run.reference.resolve()), []).append(run)
    names = [r.name for r in inputs]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise RualignError(f"run names must be unique: {', '.join(dupes)}", expected="one name per run",
                           hint="set 'name:' for each entry of the YAML file")
    return groups
