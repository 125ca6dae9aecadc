"""`rualign generate` and `rualign compare`: thin wrappers; heavy imports happen inside the handlers."""

from __future__ import annotations

import argparse
import math
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    _register_generate(subparsers)
    _register_compare(subparsers)


def _register_generate(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "generate", help="answer a prompt set with a model (resumable) -> answers.jsonl",
        description="Answer every prompt once and write answers.jsonl in prompt order. Finished answers are "
                    "appended to <out>.work.jsonl as they come, so an interrupted run continues where it "
                    "stopped. Prompts: alpaca_eval JSON/JSONL, ru-arena (question_id/turns) or {id, prompt}; "
                    "`bundled:eval_prompts` is the shipped Russian set.")
    parser.add_argument("--model", required=True, help="'default', a local folder, an HF id, or (openai) the "
                                                        "served model name")
    parser.add_argument("--adapter", help="a LoRA adapter folder applied on top of --model (hf, vllm)")
    parser.add_argument("--prompts", required=True, help="prompts file or bundled:NAME")
    parser.add_argument("--out", required=True, help="answers.jsonl to write")
    parser.add_argument("--backend", choices=("hf", "openai", "vllm"), default="hf")
    parser.add_argument("--max-new-tokens", type=int, default=1024)
    parser.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default)")
    parser.add_argument("--top-p", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=16,
                        help="hf: rows decoded together (continuous batching: a finished row is replaced at once); "
                             "openai: concurrent requests; default 16")
    parser.add_argument("--tokenizer", default="default",
                        help="tokenizer that counts answer_tokens (default: the embedded default's)")
    parser.add_argument("--chat-template", choices=("model", "chatml_no_system"), default="model")
    # Off by default: on a 2-core avx512_bf16 CPU it gave no speed-up for a 135M model and made batched
    # greedy output differ from one-at-a-time output (fp32 keeps them identical).
    parser.add_argument("--bf16", choices=("auto", "on", "off"), default="off",
                        help="hf on CPU: bf16 autocast (auto = only when the CPU has native bf16); default off")
    parser.add_argument("--threads", type=int, help="hf on CPU: torch threads (default: torch's choice; 1 is "
                                                        "much faster when other jobs share the cores)")
    parser.add_argument("--base-url", help="openai backend: the endpoint, e.g. http://127.0.0.1:8080/v1")
    parser.add_argument("--api-key-env", help="openai backend: NAME of the env var holding the API key")
    parser.add_argument("--limit", type=int, help="answer only the first N prompts (smoke runs)")
    parser.set_defaults(handler=run_generate)


def _register_compare(subparsers: argparse._SubParsersAction) -> None:
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


def _backend(args: argparse.Namespace):
    from rualign.errors import RualignError
    from rualign.eval import backends

    if args.backend == "hf":
        return backends.HFBackend(args.model, adapter=args.adapter, chat_template=args.chat_template,
                                  batch_size=args.batch_size, bf16=args.bf16, threads=args.threads)
    if args.backend == "vllm":
        return backends.VLLMBackend(args.model, adapter=args.adapter, chat_template=args.chat_template,
                                    batch_size=max(args.batch_size, 64), seed=args.seed)
    if not args.base_url:
        raise RualignError("the openai backend needs --base-url", path="--base-url",
                           expected="e.g. http://127.0.0.1:8080/v1")
    if args.adapter:
        raise RualignError("--adapter is not supported by the openai backend; serve the adapted model instead",
                           path="--adapter")
    return backends.OpenAIBackend(args.model, base_url=args.base_url, api_key_env=args.api_key_env,
                                  batch_size=args.batch_size)


def run_generate(args: argparse.Namespace) -> int:
    from pathlib import Path

    from rualign.eval.backends import GenParams
    from rualign.eval.generate import TokenCounter, run_with_progress, work_path
    from rualign.eval.prompts_io import load_prompts
    from rualign.paths import out_file, refuse_overlap
    from rualign.progress import console

    _check_numbers(args)
    out_file(args.out)  # before any work: a folder, or the prompts file itself, is refused
    refuse_overlap([args.prompts, args.model, args.adapter], files=[args.out, work_path(Path(args.out))])
    prompts = load_prompts(args.prompts)
    if args.limit is not None:
        prompts = prompts[: args.limit]
    params = GenParams(max_new_tokens=args.max_new_tokens, temperature=args.temperature, top_p=args.top_p,
                       seed=args.seed)
    from pathlib import Path

    from rualign.progress import stage_log

    with stage_log(Path(args.out).with_suffix(".log")):  # library output: next to the answers file
        backend = _backend(args)  # first: argument errors surface before any tokenizer is loaded
        counter = TokenCounter(args.tokenizer)
        summary = run_with_progress(prompts, backend, params, args.out, counter=counter)
    out = console()
    out.print(f"{summary.total} answers -> {summary.out} (generated {summary.generated}, reused {summary.reused}"
              f"{f', regenerated {summary.stale} made with other settings' if summary.stale else ''})", markup=False)
    if summary.generated:
        out.print(f"{summary.new_tokens} new tokens in {summary.seconds:.1f}s "
                  f"({summary.tokens_per_second:.1f} tokens/s)", markup=False)
    reasons = ", ".join(f"{k}: {v}" for k, v in sorted(summary.finish_reasons.items()))
    out.print(f"finish reasons: {reasons}", markup=False)
    if summary.finish_reasons.get("length"):
        out.print(f"note: {summary.finish_reasons['length']} answer(s) hit --max-new-tokens and are cut short",
                  markup=False)
    return 0


def _check_numbers(args: argparse.Namespace) -> None:
    """Argument ranges, checked before any model is loaded (argparse only checks the type)."""
    from rualign.errors import check_args

    check_args(("--limit", args.limit, args.limit is None or args.limit >= 1, "at least 1 (0 would write nothing)"),
               ("--threads", args.threads, args.threads is None or args.threads >= 1, "at least 1"),
               ("--max-new-tokens", args.max_new_tokens, args.max_new_tokens >= 1, "at least 1"),
               ("--batch-size", args.batch_size, args.batch_size >= 1, "at least 1"),
               ("--seed", args.seed, 0 <= args.seed < 2**32, "0 to 2**32-1"),
               ("--temperature", args.temperature, math.isfinite(args.temperature) and args.temperature >= 0,
                "a finite number >= 0"),
               ("--top-p", args.top_p, math.isfinite(args.top_p) and 0 < args.top_p <= 1, "in (0, 1]"))


def run_compare(args: argparse.Namespace) -> int:
    from rualign.eval.compare import compare_scores, render
    from rualign.records import read_score
    from rualign.runs import write_json

    from rualign.errors import check_args
    from rualign.paths import out_file, refuse_overlap

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
