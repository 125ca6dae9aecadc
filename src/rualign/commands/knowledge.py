"""`rualign knowledge`: multiple-choice knowledge check (log-likelihood of each choice) -> DIR/knowledge.json."""

from __future__ import annotations

import argparse

EPILOG = """\
Each choice is scored by its log-likelihood as the continuation of the question ("Вопрос: ...\\nОтвет:"),
raw (summed) and length-normalised (per character); both accuracies are reported with bootstrap 95% CIs
over questions. Questions: a JSONL file of {"id", "category", "question", "choices": [...], "answer": index}
(docs/formats.md) or bundled:ru_mc (the shipped Russian set). Use it before and after tuning: style
tuning should not cost facts.
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "knowledge", help="multiple-choice knowledge check -> DIR/knowledge.json",
        description="Score a model on multiple-choice questions by the log-likelihood of each choice.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="default", help="model: default, a folder, or an HF id (default: default)")
    parser.add_argument("--questions", default="bundled:ru_mc", help="JSONL file or bundled:NAME (default: bundled:ru_mc)")
    parser.add_argument("--out", required=True, help="output folder (knowledge.json, manifest.json)")
    parser.add_argument("--style", choices=["plain", "chat"], default="plain",
                        help="plain: 'Вопрос: Q\\nОтвет: choice'; chat: the question as a user turn of the chat template")
    parser.add_argument("--chat-template", choices=["model", "chatml_no_system"], default="model",
                        help="with --style chat: which template (default: the model's own)")
    parser.add_argument("--batch-size", type=int, default=16, help="(question, choice) sequences per forward pass")
    parser.add_argument("--limit", type=int, help="only the first N questions (smoke runs)")
    parser.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    parser.add_argument("--bf16", choices=["auto", "on", "off"], default="auto",
                        help="CPU bf16 autocast: auto = when the CPU has native bf16 (faster; log-probs move slightly)")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from rualign.errors import RualignError
    from rualign.eval.knowledge import run_knowledge
    from rualign.paths import out_folder

    out_folder(args.out)  # before any work: an --out that is a file is refused
    if args.batch_size < 1 or (args.limit is not None and args.limit < 1):
        raise RualignError("--batch-size and --limit must be at least 1", path="--batch-size/--limit")
    result = run_knowledge(args.model, args.questions, args.out, style=args.style, chat_template=args.chat_template,
                           batch_size=args.batch_size, limit=args.limit, seed=args.seed, bf16=args.bf16)
    table = Table(title=f"knowledge: {args.questions} ({result['n']} questions, chance {100 * result['chance']:.1f}%)")
    for column in ("category", "n", "accuracy [95% CI]", "length-normalised"):
        table.add_column(column)

    def cells(block: dict) -> list[str]:
        return [str(block["n"]), f"{100 * block['accuracy']:.1f} [{100 * block['ci_low']:.1f}, "
                f"{100 * block['ci_high']:.1f}]", f"{100 * block['accuracy_norm']:.1f}"]

    for category, block in result["per_category"].items():
        table.add_row(category, *cells(block))
    table.add_row("all", *cells(result))
    console = Console()
    console.print(table)
    console.print(f"wrote {args.out}/knowledge.json in {result['seconds']:.1f}s", markup=False, highlight=False)
    return 0
