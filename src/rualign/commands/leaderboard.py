"""`rualign leaderboard FILE.yaml | RUN_DIR... --out DIR`: rank runs with one joint length/style-controlled fit."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "leaderboard", help="rank runs judged against one reference with joint length/style control",
        description="Fit ONE logistic model over every run judged against the same reference (per-run strength, "
                    "shared length and answer-order terms; sc adds style covariates) and write leaderboard.csv, "
                    "leaderboard.md, coefficients.json, leaderboard.png and manifest.json. Input: a YAML file "
                    "(reference: PATH, runs: [{name, answers, judgments} | {run: FOLDER}]) or run folders.")
    parser.add_argument("inputs", nargs="+", metavar="FILE.yaml|RUN_DIR")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--n-boot", type=int, default=1000, help="bootstrap resamples over prompts (default 1000)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--difficulty", nargs="?", const="auto", default=None, metavar="PENALTY",
                        help="add a per-prompt difficulty offset (a ridge-penalised log-odds intercept per prompt; "
                             "the penalty is estimated from the data unless given, e.g. 1.0 = a N(0, 1) prior); lc "
                             "and sc are then averaged over the prompts")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from rualign.errors import RualignError
    from rualign.eval.leaderboard import resolve_inputs
    from rualign.paths import out_folder
    from rualign.report.leaderboard import build_leaderboard

    out_folder(args.out)  # before any work: an --out that is a file is refused

    if args.n_boot < 100:
        raise RualignError(f"--n-boot {args.n_boot} is too few for a 95% CI", expected="at least 100 (default 1000)")
    if args.difficulty not in (None, "auto"):
        try:
            args.difficulty = float(args.difficulty)
        except ValueError:
            args.difficulty = -1.0
        if not 0 < args.difficulty < 1e6:
            raise RualignError("--difficulty needs no value (estimate the penalty) or a positive number",
                               path="--difficulty", expected="e.g. --difficulty or --difficulty 1.0")
    result = build_leaderboard(resolve_inputs(args.inputs), Path(args.out), n_boot=args.n_boot, seed=args.seed,
                               difficulty=args.difficulty)
    print(f"{'run':<24} {'n':>5} {'score':>18} {'lc':>18} {'sc':>18} {'tokens':>7}")
    for row in sorted(result["rows"], key=lambda r: -r.lc):
        cells = [f"{e.value:5.1f} [{e.ci_low:4.1f},{e.ci_high:5.1f}]" for e in row.estimates().values()]
        flag = "  UNVALIDATED judge" if row.judge_status == "unvalidated" else ""
        print(f"{row.name[:24]:<24} {row.n:>5} {cells[0]:>18} {cells[1]:>18} {cells[2]:>18} "
              f"{row.mean_tokens:>7.0f}{flag}")
    print(f"wrote {Path(args.out) / 'leaderboard.csv'} (+ .md, coefficients.json, leaderboard.png, manifest.json)")
    return 0
