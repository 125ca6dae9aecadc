"""Judge–human agreement: a reviewer's marks (exported from report.html) against the judge's per-prompt verdicts.

Three classes per prompt: "model" (model answer better), "reference", "tie". The judge's class is the outcome of
its per-prompt value (mean preference over the answer orders) with the score's tie band (stats.TIE_EPS).
- accuracy: share of reviewed prompts where judge and human agree;
- Cohen's kappa: (p_o - p_e) / (1 - p_e), p_e from the two raters' marginal class shares (None when p_e = 1:
  both raters used one class only, so agreement beyond chance is undefined);
- CIs: percentile bootstrap over reviewed prompts, vectorised (confusion tables of all resamples at once).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

from rualign.errors import DataError, RualignError
from rualign.records import RunInfo, read_judgments, read_run_info

CLASSES = ("model", "reference", "tie")
REVIEW_FORMAT = "rualign-review"


def kappa_from_table(table: np.ndarray) -> np.ndarray | float:
    """Cohen's kappa of confusion table(s) (..., k, k) with rows = human, columns = judge; NaN when undefined."""
    table = np.asarray(table, float)
    n = table.sum(axis=(-2, -1))
    p_o = np.trace(table, axis1=-2, axis2=-1) / n
    p_e = (table.sum(-1) * table.sum(-2)).sum(-1) / n ** 2
    with np.errstate(invalid="ignore", divide="ignore"):
        kappa = np.where(np.isclose(p_e, 1.0), np.nan, (p_o - p_e) / (1.0 - p_e))
    return kappa if kappa.ndim else float(kappa)


def confusion(human: np.ndarray, judge: np.ndarray, k: int = len(CLASSES)) -> np.ndarray:
    return np.bincount(human * k + judge, minlength=k * k).reshape(k, k)


def _ci(values: np.ndarray) -> tuple[float | None, float | None]:
    values = values[~np.isnan(values)]
    if values.size == 0:
        return None, None
    low, high = np.quantile(values, [0.025, 0.975])
    return round(float(low), 4), round(float(high), 4)


def agreement(human: list[str], judge: list[str], *, n_boot: int = 2000, seed: int = 0) -> dict:
    """Accuracy and kappa with bootstrap CIs for paired class labels."""
    k = len(CLASSES)
    h = np.array([CLASSES.index(x) for x in human])
    j = np.array([CLASSES.index(x) for x in judge])
    table = confusion(h, j)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, h.size, size=(n_boot, h.size))
    codes = h[idx] * k + j[idx] + (np.arange(n_boot) * k * k)[:, None]
    tables = np.bincount(codes.ravel(), minlength=n_boot * k * k).reshape(n_boot, k, k)
    acc_boot = np.trace(tables, axis1=1, axis2=2) / h.size
    kappa = kappa_from_table(table)
    return {"n": int(h.size), "accuracy": round(float(np.trace(table) / h.size), 4),
            "accuracy_ci": _ci(acc_boot), "kappa": None if math.isnan(kappa) else round(kappa, 4),
            "kappa_ci": _ci(kappa_from_table(tables)),
            "confusion": {"rows": "human", "columns": "judge", "classes": list(CLASSES), "table": table.tolist()}}


class ReviewMark(BaseModel):
    """One mark of a review exported from report.html."""

    model_config = ConfigDict(extra="allow")
    run: str
    id: str
    mark: Literal[CLASSES]  # type: ignore[valid-type]  (the tuple is the Literal's values)

    @field_validator("run", "id", mode="before")
    @classmethod
    def _text(cls, value: Any) -> Any:
        return str(value) if isinstance(value, int) and not isinstance(value, bool) else value


class Review(BaseModel):
    model_config = ConfigDict(extra="allow")
    format: Literal[REVIEW_FORMAT]  # type: ignore[valid-type]
    marks: list[Any]  # checked one by one below, so an error names the mark


def read_review(path: Path) -> list[ReviewMark]:
    """The marks of an exported review file."""
    from rualign.textio import read_json

    if not Path(path).is_file():
        raise DataError("review file not found", path=path)
    data = read_json(path, expected="a review exported from report.html")  # NaN/Infinity refused
    try:
        review = Review.model_validate(data)
    except ValidationError:
        raise DataError("not a rualign review", path=path,
                        expected='{"format": "rualign-review", "marks": [{"run", "id", "mark"}]} from report.html'
                        ) from None
    marks = []
    for number, mark in enumerate(review.marks, start=1):
        try:
            marks.append(ReviewMark.model_validate(mark))
        except ValidationError:
            raise DataError(f"mark {number} is malformed: {mark!r}", path=path,
                            expected=f'{{"run": str, "id": str, "mark": one of {list(CLASSES)}}}') from None
    return marks


def judge_classes(run_dir: Path) -> tuple[str, dict[str, tuple[str, float]]]:
    """Run name and {id: (judge class, per-prompt value)} from a run folder's judge/judgments.jsonl."""
    from rualign.eval.stats import TIE_EPS, outcome

    path = Path(run_dir) / "judge" / "judgments.jsonl"
    if not path.is_file():
        several = (Path(run_dir) / "pooled.json").is_file()  # judged against several references
        raise RualignError("run folder has no judge/judgments.jsonl", path=run_dir,
                           expected="a judged run folder written by `rualign run`",
                           hint=f"this experiment was judged against several references: pass {run_dir}/references/"
                                "<name>, the run folder of the reference the review was made against"
                           if several else None)
    meta_path = Path(run_dir) / "run.json"
    meta = read_run_info(meta_path) if meta_path.is_file() else RunInfo()
    prefs: dict[str, list[float]] = {}
    for row in read_judgments(path):
        if not row.error and row.preference is not None:
            prefs.setdefault(row.id, []).append(row.preference)
    side = {"win": "model", "loss": "reference", "tie": "tie"}
    classes = {pid: (side[outcome(float(np.mean(v)), TIE_EPS)], float(np.mean(v))) for pid, v in prefs.items()}
    return meta.name or Path(run_dir).name, classes


def compare(review: Path, run_dir: Path, *, run_name: str | None = None, n_boot: int = 2000, seed: int = 0) -> dict:
    marks = read_review(review)
    name, judged = judge_classes(run_dir)
    name = run_name or name
    mine = [m for m in marks if m.run == name]
    if not mine:
        found = sorted({m.run for m in marks})
        raise RualignError(f"the review has no marks for run '{name}'", path=review,
                           expected=f"marks for that run (the review has runs: {', '.join(found) or 'none'})",
                           hint="pass --run NAME to pick one of them")
    paired = [(m.id, m.mark) for m in mine if m.id in judged]
    if not paired:
        raise RualignError(f"none of the {len(mine)} reviewed prompts of '{name}' has a judge verdict", path=run_dir)
    result = agreement([h for _, h in paired], [judged[pid][0] for pid, _ in paired], n_boot=n_boot, seed=seed)
    result["run"], result["unjudged_marks"] = name, len(mine) - len(paired)
    result["disagreements"] = [{"id": pid, "human": h, "judge": judged[pid][0], "judge_value": round(judged[pid][1], 4)}
                               for pid, h in paired if judged[pid][0] != h]
    return result
