"""`rualign judge-check --judge SPEC --gold FILE|bundled:gold_ru --out DIR`: is this judge worth listening to?"""

from __future__ import annotations

import argparse

from rualign.eval.schema import MODES
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "judge-check", help="measure a judge on gold pairs (accuracy, position and length bias) -> judge card",
        description="Judge every gold pair in both answer orders through the normal judge path (cache, retries, "
                    "logprob or verdict mode) and write DIR/judge_card.json and judge_card.md. The card is also "
                    "filed under $RUALIGN_HOME/judge_cards/, so scores from this judge show it; a judge at chance "
                    "or with verdict mass < 0.5 makes every score from it 'unvalidated'.")
    parser.add_argument("--judge", metavar="SPEC", help="llamacpp:default, local:<model>, openai:<model>@<url> or YAML")
    parser.add_argument("--judge-config", metavar="FILE", help="judge YAML (settings; --judge names the judge)")
    parser.add_argument("--mode", choices=MODES, help="override the judge's mode")
    parser.add_argument("--gold", default="bundled:gold_ru",
                        help="gold pairs in the preference format, or bundled:gold_ru (default)")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--cache", help="judge call cache (default $RUALIGN_HOME/judge_cache.sqlite)")
    parser.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from rualign.eval.judge_check import run_judge_check
    from rualign.eval.schema import parse_judge_spec

    from rualign.paths import out_folder

    out_folder(args.out)  # before any work: an --out that is a file is refused
    cfg = parse_judge_spec(args.judge, args.judge_config, args.mode)
    card = run_judge_check(args.gold, cfg, Path(args.out), seed=args.seed, cache_path=args.cache)
    status = "validated" if card.validated else "UNVALIDATED (" + "; ".join(card.reasons) + ")"
    print(f"judge {card.judge.name}: accuracy {card.accuracy} [{card.ci_low}, {card.ci_high}] on "
          f"{card.n} of {card.n_pairs} pairs, first-slot rate {card.first_slot_rate}, verdict mass "
          f"{card.verdict_mass} -> {status}")
    print(f"wrote {Path(args.out) / 'judge_card.json'} and judge_card.md")
    return 0
