"""`rualign run EXP.yaml`: data → train stages → answers → judge → run folders, with a shared stage cache."""

from __future__ import annotations

import argparse

from rualign.records import DEFAULT_TARGET, JudgeCard

EPILOG = """\
An experiment file holds one experiment or `experiments: [...]` sharing `defaults:`, and may `include:`
other YAML files (deep-merged; the including file wins). Every stage is stored by content hash under
<out>/_store/{data,train,answers,judge}/<hash>/, so experiments that share a base model, a data recipe or
a reference reuse the same outputs, and an interrupted run continues where it stopped.
--dry-run validates every file, path and schema and prints the plan without loading a model or touching
the network (hf: data and hub model ids are listed as remote, not checked).
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "run", help="run experiments (data, train stages, generation, judge) -> run folders",
        description="Run every experiment in the given files and write one run folder per experiment "
                    "(run.json, answers.jsonl, judge/), then a report over them.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("experiments", nargs="+", help="experiment YAML file(s)")
    parser.add_argument("--out", default="runs", help="folder for run folders (default: runs/)")
    parser.add_argument("--store", help="stage store (default: <out>/_store)")
    parser.add_argument("--only", action="append", metavar="NAME", help="run only this experiment (repeatable)")
    parser.add_argument("--dry-run", action="store_true", help="validate and print the plan; run nothing")
    parser.add_argument("--judge", metavar="SPEC", help="judge every experiment with this judge SPEC or judge "
                                                         "YAML instead of the files' own (e.g. configs/judge/vllm-qwen72b.yaml)")
    parser.add_argument("--allow-missing", action="store_true",
                        help="with --dry-run: a prompts file not downloaded yet is a note, not an error")
    parser.add_argument("--no-report", action="store_true", help="skip <out>/report")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from rualign.progress import results_console

    from rualign.pipeline import plan_files, print_plan, run_plan

    from rualign.errors import RualignError

    if args.allow_missing and not args.dry_run:
        raise RualignError("--allow-missing only applies to --dry-run", path="--allow-missing")
    plan = plan_files(args.experiments, args.out, store=args.store, only=args.only, allow_missing=args.allow_missing,
                      judge=args.judge)
    console = results_console()
    if args.dry_run:
        print_plan(plan, console)
        return 0
    folders, _ = run_plan(plan, args.out)
    if not args.no_report:
        from rualign.eval.judge_check import find_card

        finish_report(folders, args.out, console, target=plan.runs[0].experiment.eval.target,
                      judge_card=find_card(plan.runs[0].judge_config))
    return 0


def finish_report(folders, out, console, target: int = DEFAULT_TARGET, judge_card: JudgeCard | None = None):
    """Build <out>/report over the run folders and print the results table; returns build_report's result.
    `judge_card` (the judge's filed card, from `rualign judge-check`) goes into the report; an unvalidated
    card marks every score with '*'."""
    from pathlib import Path

    from rualign.report.build import build_report
    from rualign.report.tables import print_table

    result = build_report(folders, Path(out) / "report", target=target, judge_card=judge_card)
    print_table(result["rows"], console)
    for note in result["notes"]:
        console.print(f"  note: {note}", markup=False, highlight=False)
    console.print(f"report: {result['files']['html']}", markup=False, highlight=False, soft_wrap=True)
    return result
