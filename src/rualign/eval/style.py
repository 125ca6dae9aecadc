"""Style features of one answer, the covariates of the style-controlled (sc) joint fit.

In the manner of arena-hard v2's style control (markdown header / list / bold counts as Bradley–Terry
covariates), with two changes:
- densities (per 100 words) rather than raw counts, so markdown is not a second length term;
- `latin_share`, the share of letters outside code that are not Cyrillic: a Russian answer drifting into
  English (or transliteration) is a language-fidelity fault the judge may or may not punish.
Code (fenced blocks, inline spans) and URLs are stripped first: a Python snippet is neither a list nor English
prose, and `#include` is not a header.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

STYLE_FEATURES = ("header_density", "list_density", "bold_density", "latin_share")

_FENCE = re.compile(r"(^|\n)[ \t]*(```|~~~)[^\n]*\n.*?(\n[ \t]*\2[ \t]*(?=\n|$)|$)", re.DOTALL)
_INLINE_CODE = re.compile(r"`[^`\n]+`")
_URL = re.compile(r"(?:https?://|www\.)\S+")
_HEADER = re.compile(r"^[ \t]{0,3}#{1,6}[ \t]+\S", re.MULTILINE)
_LIST = re.compile(r"^[ \t]*(?:[-*+•]|\d{1,3}[.)])[ \t]+\S", re.MULTILINE)
_BOLD = re.compile(r"\*\*(?=\S)[^*\n]+?\*\*|__(?=\S)[^_\n]+?__")
_WORD = re.compile(r"\w+")


def strip_code(text: str) -> str:
    """The answer without fenced code blocks, inline code spans and URLs."""
    text = _FENCE.sub(r"\1", text)
    text = _INLINE_CODE.sub(" ", text)
    return _URL.sub(" ", text)


def _is_cyrillic(ch: str) -> bool:
    return "\u0400" <= ch <= "\u04ff" or "\u0500" <= ch <= "\u052f"


@dataclass(frozen=True)
class Style:
    header_density: float  # markdown headers per 100 words
    list_density: float  # list items per 100 words
    bold_density: float  # bold spans per 100 words
    latin_share: float  # non-Cyrillic letters / all letters, outside code (0 for an all-Russian answer)

    def vector(self) -> tuple[float, ...]:
        return tuple(getattr(self, name) for name in STYLE_FEATURES)


def style_of(text: str) -> Style:
    prose = strip_code(text or "")
    words = max(1, len(_WORD.findall(prose)))
    per100 = 100.0 / words
    letters = [ch for ch in prose if ch.isalpha()]
    foreign = sum(1 for ch in letters if not _is_cyrillic(ch))
    return Style(header_density=len(_HEADER.findall(prose)) * per100,
                 list_density=len(_LIST.findall(prose)) * per100,
                 bold_density=len(_BOLD.findall(prose)) * per100,
                 latin_share=foreign / len(letters) if letters else 0.0)
