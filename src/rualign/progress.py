"""One place for what reaches the terminal: rich progress bars for every long stage, `--quiet` silences them,
and everything else (trainer dicts, library progress bars, warnings, llama.cpp logs) goes to the stage's log
file unless `-v` asks to see it.

`stage_log(path)` redirects the process's stdout and stderr *file descriptors* into the stage log, so output
written by C++ code (llama.cpp, torch) and by libraries that captured `sys.stderr` at import time lands
there too; the rich console keeps a duplicate of the real terminal and draws the live display on it.
"""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path
from typing import IO, Iterator

from rich.console import Console
from rich.progress import (BarColumn, MofNCompleteColumn, Progress, ProgressColumn, TextColumn, TimeElapsedColumn,
                           TimeRemainingColumn)
from rich.text import Text

_screen: IO[str] | None = None   # the real terminal while a stage log captures fds 1 and 2
_log_path: Path | None = None    # the stage log being written, if any


def quiet() -> bool:
    return os.environ.get("RUALIGN_QUIET") == "1"


def verbose() -> bool:
    return os.environ.get("RUALIGN_VERBOSE") == "1"


def screen() -> IO[str]:
    return _screen or sys.stderr


def current_log() -> Path | None:
    return _log_path


def console() -> Console:
    return Console(file=screen(), quiet=quiet())


def results_console() -> Console:
    """The console results tables print to (stdout). Piped into a file or `tee`, rich would assume 80
    columns and drop the right-hand columns of a wide table (at-cap share, loss, score): without a terminal
    or an explicit COLUMNS it is given 160."""
    plain = Console()
    if plain.is_terminal or os.environ.get("COLUMNS"):
        return plain
    return Console(width=160)


class MetricColumn(ProgressColumn):
    """The stage's key metric (loss, tokens/s, calls/s), set with `progress.update(task, metric=...)`."""

    def render(self, task) -> Text:
        return Text(str(task.fields.get("metric", "")))


def progress() -> Progress:
    """A progress bar on the terminal; disabled when quiet or when it is not a terminal (unless
    RUALIGN_PROGRESS=1, which tests use to see the display)."""
    out = screen()
    tty = hasattr(out, "isatty") and out.isatty()
    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), TimeRemainingColumn(), MetricColumn(),
                    console=console(), disable=quiet() or not tty and os.environ.get("RUALIGN_PROGRESS") != "1")


def quiet_libraries() -> None:
    """No library progress bars or advisory warnings on screen (`-v` keeps them). Env vars first: they are
    read when the libraries are imported, which happens later, lazily, inside the stage handlers."""
    if verbose():
        return
    os.environ.setdefault("TQDM_DISABLE", "1")                 # every tqdm bar: transformers, datasets, hub
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")   # "generation flags are not valid" and friends
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")   # its fork warning
    import warnings

    default = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None):
        # Inside a stage, fd 2 is the stage log: keep the warning there. Outside, only what the user can act
        # on reaches the screen: library deprecation notices are not.
        if _log_path is not None:
            default(message, category, filename, lineno, sys.stderr, line)
        elif not issubclass(category, (FutureWarning, DeprecationWarning)):
            default(message, category, filename, lineno, file, line)

    warnings.showwarning = show


@contextlib.contextmanager
def stage_log(path: str | Path) -> Iterator[Path]:
    """Send fds 1 and 2 (and so every print, warning, tqdm bar and child process) to `path` while the block
    runs; the rich console keeps drawing on the real terminal. With `-v` nothing is redirected."""
    global _screen, _log_path
    path = Path(path)
    if verbose() or _screen is not None:  # -v, or already inside a stage log: keep the outer one
        yield path
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    saved = {fd: os.dup(fd) for fd in (1, 2)}
    log_fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    _screen = os.fdopen(os.dup(saved[2]), "w", buffering=1, encoding="utf-8", errors="replace")
    _log_path = path
    try:
        os.dup2(log_fd, 1)
        os.dup2(log_fd, 2)
        yield path
    finally:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        for fd, copy in saved.items():
            os.dup2(copy, fd)
            os.close(copy)
        os.close(log_fd)
        with contextlib.suppress(Exception):
            _screen.close()
        _screen, _log_path = None, None
