"""`rualign judge`: pairwise LLM-as-a-judge of model answers against reference answers."""

from __future__ import annotations

import argparse

from rualign.eval.schema import MODES

from rualign.records import DEFAULT_TARGET

EPILOG = """\
judge SPEC forms:
  llamacpp:default            the embedded SmolLM2 GGUF under llama.cpp, in this process (`slots` copies)
  llamacpp:/path/model.gguf   another GGUF the same way (llamacpp:gemma3-270m: the opt-in embedded Gemma)
  local:<model>               transformers in-process ('default', a folder, an HF id); logprob mode
  openai:<model>@<base_url>   any OpenAI-compatible endpoint (key from the env var named by api_key_env)
  judge.yaml                  keys: base_url, model, api_key_env, concurrency, requests_per_minute,
                              timeout_s, max_retries, mode, temperature, max_tokens, ...

Every prompt is judged twice (model answer as A, then as B). Finished calls are cached in SQLite
($RUALIGN_HOME/judge_cache.sqlite unless --cache), so an interrupted run resumes where it stopped.
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "judge", help="pairwise judge: model answers vs reference answers -> score.json",
        description="Judge model answers against reference answers with an LLM judge, in both orders, and "
                    "write judgments.jsonl, score.json and manifest.json into --out.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--answers", required=True, help="the model's answers.jsonl")
    parser.add_argument("--reference", required=True, help="the reference answers.jsonl (same ids and prompts)")
    parser.add_argument("--judge", help="judge SPEC or judge YAML (see below)")
    parser.add_argument("--judge-config", help="judge YAML with settings; the --judge SPEC, if given, names the model")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--mode", choices=MODES, help="override the judge config's mode")
    parser.add_argument("--target", type=int, default=DEFAULT_TARGET,
                        help=f"target mean answer length in tokens ({DEFAULT_TARGET})")
    parser.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    parser.add_argument("--cache", help="SQLite cache file (default $RUALIGN_HOME/judge_cache.sqlite)")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from rich.console import Console

    from rualign.errors import RualignError, check_args
    from rualign.paths import out_folder, refuse_overlap

    from rualign.eval.judge import run_judge
    from rualign.eval.schema import parse_judge_spec

    check_args(("--seed", args.seed, 0 <= args.seed < 2**32, "0 to 2**32-1"),
               ("--target", args.target, args.target >= 1, "a positive number of tokens"))
    out = out_folder(args.out)  # before any work: outputs never replace inputs
    refuse_overlap([args.answers, args.reference, args.judge_config],
                   files=[out / n for n in ("judgments.jsonl", "score.json", "manifest.json")] +
                   ([args.cache] if args.cache else []))
    cfg = parse_judge_spec(args.judge, args.judge_config, args.mode)
    from pathlib import Path

    from rualign.progress import stage_log

    with stage_log(Path(args.out) / "stage.log"):  # llama.cpp and library output go to the log
        score = run_judge(args.answers, args.reference, cfg, args.out, target=args.target, seed=args.seed,
                          cache_path=args.cache)
    console = Console(stderr=False)
    failures = score.failures.count
    if not score.n:
        first = next(iter(score.failures.reasons.values()), "unknown")
        raise RualignError(f"no prompt could be judged: all {failures} failed; first reason: {first}",
                           path=f"{args.out}/judgments.jsonl",
                           hint="check the judge endpoint; a rerun retries only the failed calls")
    ci = f"[{score.ci_low}, {score.ci_high}]" if score.ci_low is not None else "[n/a]"
    console.print(f"score {score.score} {ci} (95% CI) over {score.n}/{score.n_prompts} prompts; "
                  f"wins {score.wins}, ties {score.ties}, losses {score.losses}; "
                  f"failures {failures}; judge {score.judge.name} ({score.judge.mode})")
    identical = score.identical_pairs.count if score.identical_pairs else None  # absent in older score.json
    if identical:
        console.print(f"{identical} prompt(s) with the same answer as the reference: ties, not sent to the judge")
    if score.lc_warning:
        console.print(f"[yellow]warning:[/yellow] {score.lc_warning}")
    console.print(f"wrote {args.out}/judgments.jsonl, score.json, manifest.json")
    return 0
