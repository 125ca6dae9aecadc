"""`rualign agreement REVIEW.json RUN_DIR`: judge–human accuracy and Cohen's kappa with bootstrap CIs."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "agreement", help="compare a human review (exported from report.html) with the judge's verdicts",
        description="Read a review exported from the answer browser of report.html (marks: model better / "
                    "reference better / tie) and the judge's per-prompt verdicts of RUN_DIR; print accuracy and "
                    "Cohen's kappa (3 classes) with 95%% bootstrap CIs and list the disagreements.")
    parser.add_argument("review", metavar="REVIEW.json")
    parser.add_argument("run_dir", metavar="RUN_DIR")
    parser.add_argument("--run", help="run name in the review (default: the run folder's name from run.json)")
    parser.add_argument("--out", help="also write agreement.json into this folder")
    parser.add_argument("--n-boot", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from rualign.eval.agreement import compare
    from rualign.paths import out_folder
    from rualign.runs import write_json

    if args.out:
        out_folder(args.out)  # before any work: an --out that is a file is refused
    result = compare(Path(args.review), Path(args.run_dir), run_name=args.run, n_boot=args.n_boot, seed=args.seed)
    acc_lo, acc_hi = result["accuracy_ci"]
    print(f"run {result['run']}: {result['n']} reviewed prompts")
    print(f"judge-human accuracy {result['accuracy']:.3f} [{acc_lo}, {acc_hi}]")
    kappa = "undefined (one class only)" if result["kappa"] is None else \
        f"{result['kappa']:.3f} [{result['kappa_ci'][0]}, {result['kappa_ci'][1]}]"
    print(f"Cohen's kappa (3 classes) {kappa}")
    if result["disagreements"]:
        print("disagreements (id: human vs judge, judge value):")
        for d in result["disagreements"]:
            print(f"  {d['id']}: {d['human']} vs {d['judge']} ({d['judge_value']:.3f})")
    if args.out:
        write_json(Path(args.out) / "agreement.json", result)
        print(f"wrote {Path(args.out) / 'agreement.json'}")
    return 0
