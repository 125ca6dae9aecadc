"""`rualign compare A B`: paired comparison of two score.json files (difference, 95% CI, p-value)."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "compare", help="paired comparison of two judged runs (difference, 95%% CI, p-value)",
        description="Pair the per-prompt values of two score.json files by prompt id and report the score "
                    "difference A - B with a paired bootstrap 95%% CI and a sign-flip permutation p-value.")
    parser.add_argument("a", help="score folder (or score.json) A")
    parser.add_argument("b", help="score folder (or score.json) B")
    parser.add_argument("--out", help="write the comparison as JSON here")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--n-boot", type=int, default=2000)
    parser.set_defaults(handler=run_compare)


def run_compare(args: argparse.Namespace) -> int:
    from rualign.errors import check_args
    from rualign.eval.compare import compare_scores, render
    from rualign.paths import out_file, refuse_overlap
    from rualign.records import read_score
    from rualign.runs import write_json

    check_args(("--seed", args.seed, 0 <= args.seed < 2**32, "0 to 2**32-1"),
               ("--n-boot", args.n_boot, 1 <= args.n_boot <= 1_000_000, "1 to 1000000"))
    if args.out:  # before any work
        out_file(args.out)
        refuse_overlap([args.a, args.b, Path(args.a) / "score.json", Path(args.b) / "score.json"], files=[args.out])
    path_a, path_b = (Path(p) / "score.json" if Path(p).is_dir() else Path(p) for p in (args.a, args.b))
    result = compare_scores(read_score(path_a), read_score(path_b), path_a=path_a, path_b=path_b, seed=args.seed,
                            n_boot=args.n_boot)
    render(result)
    if args.out:
        write_json(args.out, result)
    return 0
