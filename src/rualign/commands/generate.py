"""`rualign generate`: answer a prompt set (resumable); heavy imports happen inside the handler."""

from __future__ import annotations

import argparse
from pathlib import Path

from rualign.config import add_flags
from rualign.eval.gen_config import GENERATION_BACKENDS, Generation

# Every Generation field is a flag with the schema's default (one source: `rualign run` reads the same model).
GENERATION_FLAGS = ("backend", "max_new_tokens", "temperature", "top_p", "seed", "batch_size", "bf16", "threads",
                    "base_url", "api_key_env")


def register(subparsers: argparse._SubParsersAction) -> None:
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
    add_flags(parser, Generation, GENERATION_FLAGS, choices={"backend": list(GENERATION_BACKENDS)})
    parser.add_argument("--tokenizer", default="default",
                        help="tokenizer that counts answer_tokens (default: the embedded default's)")
    parser.add_argument("--chat-template", choices=("model", "chatml_no_system"), default="model")
    parser.add_argument("--trust-remote-code", action="store_true",
                        help="hf, vllm: run the model repository's own code (only for models you trust)")
    parser.add_argument("--limit", type=int, help="answer only the first N prompts (smoke runs)")
    parser.set_defaults(handler=run_generate)


def run_generate(args: argparse.Namespace) -> int:
    from rualign.config import from_flags
    from rualign.errors import check_args
    from rualign.eval.gen_config import make_generation_backend
    from rualign.eval.generate import TokenCounter, run_with_progress, work_path
    from rualign.eval.prompts_io import load_prompts
    from rualign.paths import out_file, refuse_overlap
    from rualign.progress import console, stage_log

    check_args(("--limit", args.limit, args.limit is None or args.limit >= 1, "at least 1 (0 would write nothing)"))
    gen = from_flags(Generation, args, GENERATION_FLAGS)  # every setting's range, before any work
    out_file(args.out)  # before any work: a folder, or the prompts file itself, is refused
    refuse_overlap([args.prompts, args.model, args.adapter], files=[args.out, work_path(Path(args.out))])
    prompts = load_prompts(args.prompts)
    if args.limit is not None:
        prompts = prompts[: args.limit]
    with stage_log(Path(args.out).with_suffix(".log")):  # library output: next to the answers file
        # First: argument errors surface before any tokenizer is loaded.
        backend = make_generation_backend(gen, args.model, adapter=args.adapter, chat_template=args.chat_template,
                                          trust_remote_code=args.trust_remote_code)
        counter = TokenCounter(args.tokenizer)
        summary = run_with_progress(prompts, backend, gen.params(), args.out, counter=counter)
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
