"""`rualign report`: load experiment run folders and write results.csv, report.md, plots and report.html.

A run folder (docs/formats.md) holds run.json, answers.jsonl and judge/{score.json, judgments.jsonl}.
A folder without judge/score.json is reported as "not judged" (never dropped); a folder that is not a
run folder at all is a RualignError naming what it lacks.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rualign.errors import DataError, RualignError
from rualign.runs import file_hash, read_jsonl, stable_hash, write_manifest, write_text

RUN_FOLDER = "a run folder written by `rualign run` (run.json, answers.jsonl, judge/score.json)"
_SCORE_KEYS = ("score", "ci_low", "ci_high", "n")
_ANSWER_KEYS = ("id", "answer", "answer_tokens")


@dataclass
class Run:
    """Everything the report needs from one run folder, already validated."""

    folder: Path
    name: str
    description: str
    stages: list[dict]
    answers: list[dict]
    score: dict | None  # None: not judged
    judgments: dict[str, list[dict]] = field(default_factory=dict)  # id -> judge calls
    references: dict[str, dict] = field(default_factory=dict)  # id -> reference answer row
    reference_path: str | None = None
    notes: list[str] = field(default_factory=list)
    ref_loss: float | None = None  # ref_loss.json of the run folder (hf generation with eval.heldout)


def _read_json(path: Path, expected: str) -> Any:
    from rualign.textio import read_json

    return read_json(path, expected=expected)  # NaN/Infinity and non-UTF-8 are DataErrors naming the file


def _read_answers(path: Path, what: str) -> list[dict]:
    rows = read_jsonl(path)
    for number, row in enumerate(rows, start=1):
        missing = [k for k in _ANSWER_KEYS if not isinstance(row, dict) or k not in row]
        if missing:
            # read_jsonl skips blank lines, so the row number is the n-th record, said as such.
            raise DataError(f"{what} record {number} lacks {', '.join(missing)}", path=path,
                            expected='answers.jsonl records {"id", "answer", "answer_tokens", ...}')
        tokens = row["answer_tokens"]
        if isinstance(tokens, bool) or not isinstance(tokens, int) or tokens < 0 or not isinstance(row["answer"], str):
            raise DataError(f"{what} record {number} has answer_tokens {tokens!r} / answer of type "
                            f"{type(row['answer']).__name__}", path=path,
                            expected="answer_tokens a whole number >= 0 and answer a string")
    return rows


# score.json fields the report reads, with their allowed range (None is allowed: "not available").
_SCORE_RANGES = {"score": (0, 100), "ci_low": (0, 100), "ci_high": (0, 100), "lc_score": (0, 100),
                 "n": (0, None), "n_prompts": (0, None), "wins": (0, None), "ties": (0, None), "losses": (0, None),
                 "tie_rate": (0, 1), "order_flip_rate": (0, 1)}


def _check_score_numbers(score: dict, path: Path) -> None:
    """Every number the report shows or plots is a finite number in its range (a string score would crash
    the plots; a 2403 would be shown as if real)."""
    for key, (low, high) in _SCORE_RANGES.items():
        value = score.get(key)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not (
                low <= value and (high is None or value <= high)):
            raise DataError(f"score.json '{key}' is {value!r}", path=path,
                            expected=f"a number in [{low}, {high if high is not None else 'inf'}] or null")
    low, mid, high = score.get("ci_low"), score.get("score"), score.get("ci_high")
    if None not in (low, mid, high) and not low <= mid <= high:
        raise DataError(f"score.json has ci_low {low}, score {mid}, ci_high {high}", path=path,
                        expected="ci_low <= score <= ci_high")
    for section in ("lengths", "failures", "identical_pairs", "judge"):
        if score.get(section) is not None and not isinstance(score[section], dict):
            raise DataError(f"score.json '{section}' is not an object", path=path)
    per_prompt = score.get("per_prompt")
    if per_prompt is not None and not isinstance(per_prompt, list):
        raise DataError("score.json 'per_prompt' is not a list", path=path)
    for number, entry in enumerate(per_prompt or [], start=1):
        value = entry.get("value") if isinstance(entry, dict) else None
        if not isinstance(entry, dict) or "id" not in entry or (value is not None and (
                isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1)):
            raise DataError(f"score.json per_prompt entry {number} is {str(entry)[:80]}", path=path,
                            expected='{"id": ..., "value": a number in [0, 1] or null}')
    tie_eps = score.get("tie_eps")
    if tie_eps is not None and (isinstance(tie_eps, bool) or not isinstance(tie_eps, (int, float))
                                or not 0 <= tie_eps < 0.5):
        raise DataError(f"score.json 'tie_eps' is {tie_eps!r}", path=path, expected="a number in [0, 0.5)")
    lengths = (score.get("lengths") or {}).get("model")
    if lengths is not None and not isinstance(lengths, dict):
        raise DataError("score.json 'lengths.model' is not an object", path=path)
    for key, value in (lengths or {}).items():
        if value is not None and key in ("mean", "median", "p90") and (
                isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0):
            raise DataError(f"score.json 'lengths.model.{key}' is {value!r}", path=path,
                            expected="a number >= 0 or null")


def _check_run_folder(folder: Path) -> None:
    if not folder.exists():
        raise RualignError("run folder does not exist", path=folder, expected=RUN_FOLDER)
    if not folder.is_dir():
        raise RualignError("not a folder", path=folder, expected=RUN_FOLDER)
    lacks = [name for name in ("run.json", "answers.jsonl") if not (folder / name).is_file()]
    if lacks:
        raise RualignError(f"not a run folder: it lacks {' and '.join(lacks)}", path=folder,
                           expected=RUN_FOLDER, hint="pass the folders `rualign run` wrote, one per experiment")


def _load_score(folder: Path) -> dict | None:
    path = folder / "judge" / "score.json"
    if not path.is_file():
        return None
    score = _read_json(path, "score.json of docs/formats.md")
    missing = [k for k in _SCORE_KEYS if not isinstance(score, dict) or k not in score]
    if missing:
        raise DataError(f"score.json lacks {', '.join(missing)}", path=path, expected="score.json of docs/formats.md")
    _check_score_numbers(score, path)
    return score


def _load_judgments(folder: Path) -> dict[str, list[dict]]:
    path = folder / "judge" / "judgments.jsonl"
    grouped: dict[str, list[dict]] = {}
    if path.is_file():
        for number, row in enumerate(read_jsonl(path), start=1):
            if not isinstance(row, dict):
                raise DataError(f"judgment record {number} is not a JSON object", path=path)
            grouped.setdefault(str(row.get("id")), []).append(row)
    order = {"model_first": 0, "reference_first": 1}
    for rows in grouped.values():
        rows.sort(key=lambda r: order.get(r.get("order"), 2))
    return grouped


def _load_references(folder: Path, meta: dict, run: Run) -> None:
    ref = meta.get("reference_answers")
    if not ref:
        run.notes.append("run.json names no reference_answers: reference texts are not shown")
        return
    path = Path(ref)
    if not path.is_absolute():
        path = folder / path  # a relative path in run.json is relative to its run folder
    run.reference_path = str(path)
    if not path.is_file():
        run.notes.append(f"reference answers not found at {path}: reference texts are not shown")
        return
    run.references = {str(row["id"]): row for row in _read_answers(path, "reference answers")}


def load_run(folder: str | Path) -> Run:
    """Read and validate one run folder."""
    folder = Path(folder)
    _check_run_folder(folder)
    meta = _read_json(folder / "run.json", "run.json of docs/formats.md")
    if not isinstance(meta, dict):
        raise DataError("run.json is not a JSON object", path=folder / "run.json",
                        expected='{"name", "description", "stages", ...}')
    stages = meta.get("stages") or []
    if not isinstance(stages, list) or not all(isinstance(s, dict) for s in stages):
        raise DataError("run.json 'stages' is not a list of objects", path=folder / "run.json",
                        expected='"stages": [{"name", "method", "data"}, ...]')
    run = Run(folder=folder, name=str(meta.get("name") or folder.name),
              description=str(meta.get("description") or ""), stages=stages,
              answers=_read_answers(folder / "answers.jsonl", "answers"), score=_load_score(folder),
              judgments=_load_judgments(folder))
    if run.score is None:
        run.notes.append("not judged: judge/score.json is missing")
    if (folder / "ref_loss.json").is_file():
        run.ref_loss = _read_json(folder / "ref_loss.json", '{"ref_loss": float, "tokens": int, ...}').get("ref_loss")
    _load_references(folder, meta, run)
    return run


def load_runs(run_dirs: list[Path]) -> list[Run]:
    """Load every folder; names are made unique so filters in the answer browser stay unambiguous."""
    if not run_dirs:
        raise RualignError("no run folders given", expected="one or more run folders")
    runs = [load_run(d) for d in run_dirs]
    seen: dict[str, int] = {}
    for run in runs:
        count = seen.get(run.name, 0)
        seen[run.name] = count + 1
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


def build_report(run_dirs: list[Path], out_dir: Path, target: int = 540) -> dict:
    """Write results.csv, report.md, plots/*.png, report.html and manifest.json into `out_dir`.

    Returns {"rows": [...], "files": {"csv", "md", "html", "plots": {name: path}}, "notes": [...]}.
    """
    from rualign.report import html, plots, tables

    out_dir = Path(out_dir)
    runs = load_runs([Path(d) for d in run_dirs])
    rows = [tables.summary_row(run, target) for run in runs]
    notes = [f"{run.name}: {note}" for run in runs for note in run.notes]
    notes += [f"{row['name']}: {row['lc_warning']}" for row in rows if row.get("lc_warning")]
    notes += [f"{row['name']}: {row['identical_pairs']} of {row['n_prompts']} answers are identical to the "
              "reference: scored as ties (50) without a judge call" for row in rows if row.get("identical_pairs")]
    csv_path = out_dir / "results.csv"
    tables.write_csv(rows, csv_path)
    plot_files = plots.write_plots(runs, rows, target, out_dir / "plots")
    md_path = out_dir / "report.md"
    write_text(md_path, tables.markdown_report(rows, plot_files, notes, out_dir, target))
    html_path = out_dir / "report.html"
    write_text(html_path, html.render_report(runs, rows, plot_files, notes, target))
    _share([csv_path, md_path, html_path, *plot_files.values()])
    files = {"csv": str(csv_path), "md": str(md_path), "html": str(html_path),
             "plots": {name: str(path) for name, path in plot_files.items()}}
    inputs = [_input_record(run) for run in runs]
    write_manifest(out_dir, stage="report", config_hash=stable_hash({"inputs": inputs, "target": target}),
                   runs=inputs, target=target, files=files)
    return {"rows": rows, "files": files, "notes": notes}
