"""`rualign sweep SWEEP.yaml`: Optuna search over an experiment file's knobs -> trials.csv, best.yaml, plots."""

from __future__ import annotations

import argparse

EPILOG = """\
A sweep file names a base experiment and a search space of dotted paths into it, each with a distribution:
  space:
    stages.sft.lr: {log_uniform: [1.0e-5, 1.0e-3]}
    data.gm.sources.gm.filters.answer_tokens.max: {int: [300, 700], step: 10}
    data.gm.sources.gm.sample.fraction: {choice: [0.1, 0.2, 0.4]}
  objective: {metric: score, direction: maximize}        # any results.csv column
  length: {target: 540, tolerance: 60, as: constraint}     # or as: objective (NSGA-II, two objectives)
Every trial is an ordinary experiment run through one content-hashed store (DIR/_store): an identical recipe
is never retrained or re-judged. The study lives in DIR/study.db; running the command again resumes it, and
--trials N grows it to N trials. Several workers (processes or machines) may run the same command against
one --storage (a PostgreSQL URL, or journal:/shared/disk/study.log) and one --store on a shared disk.
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "sweep", help="Optuna search over an experiment's recipe/stage/generation knobs",
        description="Search an experiment file's knobs with Optuna; every trial is an ordinary `rualign run` "
                    "experiment. Writes DIR/trials.csv, DIR/best.yaml, DIR/plots/, DIR/report.md, DIR/report/.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sweep", help="sweep YAML file")
    parser.add_argument("--out", required=True, help="sweep folder (study, trials, runs, store, outputs)")
    parser.add_argument("--trials", type=int, help="grow the study to N trials in all (default: the file's trials:)")
    parser.add_argument("--storage", help="Optuna storage: sqlite:///..., postgresql://..., or journal:PATH "
                                          "(default: sqlite in DIR)")
    parser.add_argument("--store", help="stage store shared by all trials (default: DIR/_store)")
    parser.add_argument("--dry-run", action="store_true", help="validate the sweep file and its experiment, "
                                                               "print the space; run nothing")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from rich.console import Console

    from rualign.errors import RualignError
    from rualign.paths import out_folder
    from rualign.sweep.schema import load_sweep

    out_folder(args.out)  # before any work: an --out that is a file is refused

    if args.trials is not None and args.trials < 1:
        raise RualignError("--trials must be at least 1", path="--trials")
    sweep = load_sweep(args.sweep)
    console = Console()
    if args.dry_run:
        return _dry_run(sweep, args, console)
    from rualign.sweep.study import run_sweep

    result = run_sweep(sweep, args.out, trials=args.trials, storage=args.storage, store=args.store)
    statuses: dict[str, int] = {}
    for row in result["rows"]:
        statuses[row["status"]] = statuses.get(row["status"], 0) + 1
    console.print(f"trials: {', '.join(f'{n} {s}' for s, n in sorted(statuses.items()))}", markup=False,
                  highlight=False)
    if result["best"] is not None:
        console.print(f"best: trial {result['best']} ({result['how']}) -> {result['files']['best']}", markup=False,
                      highlight=False)
    for note in result["notes"]:
        console.print(f"  note: {note}", markup=False, highlight=False)
    console.print(f"report: {result['files']['report']}", markup=False, highlight=False, soft_wrap=True)
    return 0


def _dry_run(sweep, args, console) -> int:
    """Validate the base experiment as a trial would see it (at the low end of every range) and plan it."""
    from rich.table import Table

    from rualign.pipeline import build_plan
    from rualign.pipeline.schema import Experiment

    table = Table(title=f"sweep {sweep.study_name}: {sweep.config.trials} trial(s), sampler {sweep.config.sampler}")
    for column in ("path", "distribution", "in the experiment"):
        table.add_column(column, overflow="fold")
    for param, dist in sweep.config.space.items():
        shown = dist.model_dump(exclude_none=True, by_alias=True, exclude_defaults=True)
        table.add_row(param, str(shown), ".".join(str(k) for k in sweep.locations[param]))
    console.print(table)
    raw = sweep.experiment_for({p: d.extremes()[0] for p, d in sweep.config.space.items()}, "dry-run")
    experiment = Experiment.model_validate(raw)
    experiment._source = sweep.base_file
    build_plan([experiment], f"{args.out}/_store", allow_missing=True)
    console.print(f"objective: {sweep.config.objective.direction} {sweep.config.objective.metric}"
                  + (f"; length {sweep.target} ± {sweep.config.length.tolerance:g} as {sweep.config.length.as_}"
                     if sweep.config.length else ""), markup=False, highlight=False)
    console.print("the experiment is valid at every end of every range; nothing was run", markup=False,
                  highlight=False)
    return 0
