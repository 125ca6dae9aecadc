"""User-facing errors: what went wrong, where (file and line or row), what was expected.

The CLI prints these without a traceback (unless --debug); anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

from pathlib import Path


class RualignError(Exception):
    """An error caused by the user's input or environment, with an actionable message."""

    def __init__(self, message: str, *, path: str | Path | None = None, line: int | None = None,
                 expected: str | None = None, hint: str | None = None):
        self.message = message
        self.path = str(path) if path is not None else None
        self.line = line
        self.expected = expected
        self.hint = hint
        super().__init__(self.render())

    def render(self) -> str:
        where = ""
        if self.path:
            where = self.path + (f":{self.line}" if self.line is not None else "") + ": "
        text = where + self.message
        if self.expected:
            text += f" (expected {self.expected})"
        if self.hint:
            text += f"\n  hint: {self.hint}"
        return text


class ConfigError(RualignError):
    """A YAML recipe, stage or experiment file is invalid."""


class DataError(RualignError):
    """A data file is malformed or lacks what its format needs."""


class MissingExtraError(RualignError):
    """An optional dependency is not installed; the message names the extra."""

    def __init__(self, package: str, extra: str, purpose: str):
        super().__init__(f"{purpose} needs the package '{package}', which is not installed",
                         hint=f"pip install 'rualign[{extra}]'")


def require(module: str, extra: str, purpose: str):
    """Import an optional heavy dependency inside the backend that needs it (DESIGN style rule 4)."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:  # only a missing package becomes a user error
        raise MissingExtraError(module.split(".")[0], extra, purpose) from exc


def check_args(*checks: tuple[str, object, bool, str]) -> None:
    """(flag, value, ok, expected) for each command-line number argparse cannot range-check: the first
    failing one is a RualignError naming the flag, raised before any work."""
    for flag, value, ok, expected in checks:
        if not ok:
            raise RualignError(f"{flag} {value} is out of range", path=flag, expected=expected)
