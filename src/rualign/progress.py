"""One place for rich progress bars, so every long stage looks the same and `--quiet` silences all."""

from __future__ import annotations

import os
import sys

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn


def quiet() -> bool:
    return os.environ.get("RUALIGN_QUIET") == "1"


def console() -> Console:
    return Console(stderr=True, quiet=quiet())


def progress() -> Progress:
    """A progress bar on stderr; disabled when quiet or when stderr is not a terminal under tests."""
    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), TimeRemainingColumn(), console=console(),
                    disable=quiet() or not sys.stderr.isatty() and os.environ.get("RUALIGN_PROGRESS") != "1")
