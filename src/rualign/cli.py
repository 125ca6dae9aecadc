"""The `rualign` command line: thin. Parse arguments, call a stage function, print a summary.

Each area registers its own subcommands (`register(subparsers)`) so this file stays small; handlers import
heavy libraries (torch, transformers, trl) lazily so `rualign --help` is instant.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys

from rualign import __version__
from rualign.errors import RualignError

def command_modules() -> list[str]:
    """Every module in rualign.commands is one subcommand (it defines `register(subparsers)`), so adding a
    subcommand is adding a file: no central list to edit."""
    import pkgutil

    import rualign.commands as package

    found = sorted(f"rualign.commands.{info.name}" for info in pkgutil.iter_modules(package.__path__)
                   if not info.name.startswith("_"))
    return found

DESCRIPTION = """\
rualign: instruction-tune LLMs for Russian and measure the result honestly.

  data recipe -> train (sft, dpo, simpo, kto, orpo, rm, rlhf) -> generate -> judge -> report

Every stage writes into its own folder with a manifest and is skipped when a finished output with the
same content hash exists. Start with `rualign demo` (runs offline on a laptop CPU).
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rualign", description=DESCRIPTION,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"rualign {__version__}")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks for errors")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bars, warnings only")
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="show library output on screen (trainer logs, tqdm bars, warnings, llama.cpp logs) "
                             "instead of only in each stage's stage.log")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in command_modules():
        importlib.import_module(name).register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.quiet:
        os.environ["RUALIGN_QUIET"] = "1"
    if args.verbose:
        os.environ["RUALIGN_VERBOSE"] = "1"
    from rualign.progress import quiet_libraries

    quiet_libraries()
    logging.basicConfig(level=logging.DEBUG if args.debug else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    if not getattr(args, "handler", None):
        parser.print_help()
        return 2
    try:
        return int(args.handler(args) or 0)
    except RualignError as exc:
        if args.debug:
            raise
        from rualign.redact import redact_text

        print(f"error: {redact_text(exc.render())}", file=sys.stderr)  # a URL with a token stays hidden
        return 2
    except KeyboardInterrupt:
        print("interrupted: finished work is kept and reused on the next run", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
