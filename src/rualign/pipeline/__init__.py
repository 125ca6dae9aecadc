"""`rualign run`: experiments (data → train stages → answers → judge) over a content-addressed store.

schema.py reads experiment files (includes, defaults, line numbers), plan.py hashes every stage into
nodes shared between experiments, execute.py runs the unfinished nodes and writes the run folders.
"""

from __future__ import annotations

from pathlib import Path

from rualign.errors import RualignError
from rualign.pipeline.plan import Plan, build_plan
from rualign.pipeline.schema import Experiment, load_experiments

__all__ = ["Experiment", "Plan", "build_plan", "load_experiments", "plan_files", "print_plan", "run_plan"]


def select(experiments: list[Experiment], only: list[str] | None, source: str) -> list[Experiment]:
    if not only:
        return experiments
    names = [e.name for e in experiments]
    unknown = [n for n in only if n not in names]
    if unknown:
        raise RualignError(f"no experiment named {', '.join(unknown)}", path=source,
                           expected=f"one of {', '.join(names)}")
    return [e for e in experiments if e.name in only]


def with_judge(experiments: list[Experiment], spec: str | None) -> list[Experiment]:
    """`--judge SPEC` on the command line: the same judge for every experiment (hashes change accordingly)."""
    if not spec:
        return experiments
    out = []
    for exp in experiments:
        new = exp.model_copy(update={"eval": exp.eval.model_copy(update={"judge": spec})})
        new._source = exp._source
        out.append(new)
    return out


def plan_files(files: list[str | Path], out_dir: str | Path, *, store: str | Path | None = None,
               only: list[str] | None = None, allow_missing: bool = False, judge: str | None = None) -> Plan:
    """Load and validate every experiment of every file and plan them together (shared store)."""
    experiments: list[Experiment] = []
    for file in files:
        experiments += load_experiments(file)
    experiments = with_judge(experiments, judge)
    if only:
        experiments = select(experiments, only, ", ".join(str(f) for f in files))
    names = [e.name for e in experiments]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise RualignError(f"experiment name(s) {', '.join(dupes)} appear in more than one file",
                           hint="each name is a run folder under --out; rename one")
    plan = build_plan(experiments, Path(store) if store else Path(out_dir) / "_store", allow_missing=allow_missing)
    refuse_input_overlap(plan, Path(out_dir))
    return plan


RUN_FILES = ("answers.jsonl", "run.json", "judge/score.json", "judge/judgments.jsonl", "judge/manifest.json")


def plan_inputs(plan: Plan) -> list[str]:
    """Every local file or folder a plan reads: experiment files, models, recipe sources, data folders,
    prompts and reference answers."""
    inputs: list[str] = []
    for run in plan.runs:
        exp = run.experiment
        inputs += [str(exp._source), exp.model, str(exp.eval.prompts)]
        for judged in run.named or [run]:
            if judged.reference.startswith("file:"):
                inputs.append(judged.reference[len("file:"):])
    for node in plan.nodes.values():
        if node.kind == "data":
            inputs += [s.path for s in node.spec["recipe"].sources]
        inputs += [str(node.spec[k]) for k in ("data_folder", "prompts", "model") if node.spec.get(k)]
    return inputs


def refuse_input_overlap(plan: Plan, out_dir: Path) -> None:
    """Before any work: no run folder file or report file may be an input of the plan."""
    from rualign.paths import out_folder, refuse_overlap

    out_folder(out_dir)
    out_folder(out_dir / "report")  # written last: a file there would fail after all the work
    out_folder(plan.store, flag="--store")
    files = [out_dir / run.experiment.name / name for run in plan.runs for name in RUN_FILES]
    files += [out_dir / run.experiment.name / "pooled.json" for run in plan.runs if run.named]
    trees = [out_dir / run.experiment.name / "references" for run in plan.runs if run.named]
    files += [out_dir / "report" / name for name in ("results.csv", "report.md", "report.html")]
    refuse_overlap(plan_inputs(plan), files=files, trees=[out_dir / "report" / "plots", *trees])


def print_plan(plan: Plan, console=None) -> None:
    """The dry-run table: every stage, its hash, cached or would run, and what was not checked."""
    from rich import box
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    from rualign.redact import redact_text

    console = console or Console()
    table = Table(title=f"rualign plan (store {plan.store})", box=box.SIMPLE_HEAD)
    for column in ("#", "stage", "hash", "status", "used by"):
        table.add_column(column, overflow="fold")
    for number, node in enumerate(plan.nodes.values(), start=1):
        status = "cached" if node.finished() else "would run"
        table.add_row(str(number), Text(redact_text(node.label)), node.key, status, Text(", ".join(node.used_by)))
    console.print(table)
    notes = sorted({note for node in plan.nodes.values() for note in node.notes})
    for note in notes:
        console.print(Text(f"  note: {redact_text(note)}"))
    todo = sum(1 for n in plan.nodes.values() if not n.finished())
    console.print(f"{len(plan.runs)} experiment(s), {len(plan.nodes)} stage(s): {todo} would run, "
                  f"{len(plan.nodes) - todo} cached")


def run_plan(plan: Plan, out_dir: str | Path) -> tuple[list[Path], dict[str, str]]:
    """Execute the plan and write one run folder per experiment; returns (run folders, node outcomes)."""
    from rualign.paths import exclusive_lock
    from rualign.pipeline.execute import execute, write_run_folder

    with exclusive_lock(plan.store, "the stage store"):  # a second run on the same store refuses at once
        outcome = execute(plan)
        folders = [write_run_folder(run, plan, Path(out_dir)) for run in plan.runs]
    return folders, outcome
