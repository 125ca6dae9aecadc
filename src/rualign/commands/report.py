"""`rualign report RUN_DIRS... --out DIR`: results table, plots and the HTML answer browser."""

from __future__ import annotations

import argparse
from pathlib import Path

from rualign.records import DEFAULT_TARGET


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "report", help="compare experiment runs: results.csv, report.md, plots, report.html",
        description="Read run folders written by `rualign run` (run.json, answers.jsonl, judge/) and write "
                    "results.csv, report.md, plots/*.png and a self-contained report.html with a side-by-side "
                    "answer browser into --out. Runs without judge/score.json are listed as 'not judged'.")
    parser.add_argument("run_dirs", nargs="+", type=Path, metavar="RUN_DIR", help="experiment run folders")
    parser.add_argument("--out", type=Path, required=True, help="folder for the report files")
    parser.add_argument("--target", type=int, default=DEFAULT_TARGET,
                        help=f"target mean answer length in tokens (default {DEFAULT_TARGET})")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from rualign.progress import results_console

    from rualign.errors import RualignError
    from rualign.paths import out_folder, refuse_overlap
    from rualign.report.build import build_report
    from rualign.report.tables import print_table

    if args.target <= 0:
        raise RualignError(f"--target must be a positive number of tokens, got {args.target}")
    out_folder(args.out)  # before any work
    refuse_overlap(args.run_dirs, files=[args.out / n for n in ("results.csv", "report.md", "report.html")],
                   trees=[args.out / "plots"])
    result = build_report(args.run_dirs, args.out, target=args.target)
    console = results_console()
    print_table(result["rows"], console)
    for note in result["notes"]:
        console.print(f"note: {note}", markup=False, highlight=False)
    files = result["files"]
    console.print(f"wrote {files['csv']}, {files['md']}, {len(files['plots'])} plots and {files['html']}",
                  markup=False, highlight=False)
    return 0
