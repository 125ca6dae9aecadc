"""Pure parsers for judge output: verdict-token probabilities and worded / JSON verdicts.

Nothing here touches the network or the disk, so every rule is tested on fixture strings.

Slots are "A" (first answer shown), "B" (second) and "tie". In logprob mode the judge answers one letter:
A, B, or C for a tie, and only those Latin letters count (in either case: " b" is a tokenizer variant of "B").
A leading space, quotes or markdown around the letter are allowed; Cyrillic look-alikes are not: «В» / «в» is
the Russian word "in", «а» is "and/but", «с» / «С» is "with", so a judge that starts its reply in Russian
("В ответе A ...") would otherwise be read as a verdict.

`verdict_mass` is the probability the judge put on those verdict tokens at all (before renormalising). When it
is below a threshold the letters are noise next to whatever else the judge meant to write, and the call is
unparsed rather than renormalised into a confident-looking verdict.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

from rualign.eval.judge_reply import TopLogprob

SLOTS = ("A", "B", "tie")
CRITERIA = ("relevance", "helpfulness", "clarity", "language")
LOGPROB_LETTERS = {"A": "A", "B": "B", "C": "tie"}
DEFAULT_MIN_VERDICT_MASS = 0.5
# Cyrillic homoglyphs of the Latin verdict letters: used only where a LONE letter is a JSON value
# ("overall": "В"), never for free-running text or first tokens.
_HOMOGLYPHS = str.maketrans({"А": "A", "В": "B", "С": "C", "а": "a", "в": "b", "с": "c"})
_TOKEN_JUNK = " \t\n\r\"'«»*`_()[]{}.:,;!"


def letter_of_token(token: str) -> str | None:
    """Map one generated token to "A" / "B" / "tie", or None when it is not a Latin verdict letter."""
    core = token.strip(_TOKEN_JUNK)
    if len(core) != 1 or not core.isascii():
        return None
    return LOGPROB_LETTERS.get(core.upper())


@dataclass(frozen=True)
class LetterDistribution:
    probs: dict[str, float] | None  # renormalised over A / B / tie; None when no verdict token was listed
    mass: float  # probability on verdict tokens before renormalising (0..1)


def letter_distribution(top_logprobs: list[TopLogprob]) -> LetterDistribution:
    """Verdict probabilities and the raw mass behind them from one position's top_logprobs (validated: text
    tokens, finite-or--inf log-probabilities <= 0).

    Every variant of a letter (" A", "A", "**A") adds to that letter; other tokens are ignored.
    """
    probs, mass = class_probabilities(top_logprobs, letter_of_token, SLOTS)
    return LetterDistribution(probs, mass)


def class_probabilities(top_logprobs: list[TopLogprob], classify: Callable[[str], Any],
                        classes: Iterable[Any]) -> tuple[dict[Any, float] | None, float]:
    """Probabilities of `classes` at one position (each token counted for the class `classify` gives it, tokens
    of no class ignored), renormalised over the classes, and the raw mass on them (capped at 1); (None, 0.0)
    when no listed token has a class. Shared by the verdict letters and the pointwise digits."""
    mass = {name: 0.0 for name in classes}
    for entry in top_logprobs:
        name = classify(entry.token)
        if name is not None:
            mass[name] += math.exp(entry.logprob)
    total = sum(mass.values())
    if total <= 0.0:
        return None, 0.0
    return {name: p / total for name, p in mass.items()}, min(1.0, total)


def letter_probs(top_logprobs: list[TopLogprob], min_mass: float = 0.0) -> dict[str, float] | None:
    """Normalised probabilities of A / B / tie, or None when the verdict mass is zero or below `min_mass`."""
    dist = letter_distribution(top_logprobs)
    if dist.probs is None or dist.mass < min_mass:
        return None
    return dist.probs


def first_position_top_logprobs(choice: dict) -> list[dict] | None:
    """The top_logprobs list of the first generated token in an OpenAI chat choice, if present."""
    logprobs = choice.get("logprobs")
    if not isinstance(logprobs, dict):
        return None
    content = logprobs.get("content")
    if not isinstance(content, list) or not content or not isinstance(content[0], dict):
        return None
    top = content[0].get("top_logprobs")
    if isinstance(top, list) and top:
        return top
    # Some servers return only the chosen token's logprob; that still carries the verdict.
    if "token" in content[0] and "logprob" in content[0]:
        return [{"token": content[0]["token"], "logprob": content[0]["logprob"]}]
    return None


@dataclass
class Verdict:
    overall: str  # "A" | "B" | "tie"
    criteria: dict[str, str | None] = field(default_factory=dict)
    reason: str | None = None
    method: str = "json"  # "json" | "partial-json" | "text"


_SLOT_WORDS = {
    "a": "A", "b": "B", "tie": "tie", "draw": "tie", "equal": "tie", "both": "tie", "c": "tie",
    "ничья": "tie", "равны": "tie", "одинаково": "tie", "одинаковы": "tie", "оба": "tie",
    "равноценны": "tie",
}


def normalise_slot(value: object) -> str | None:
    """"A" / "B" / "tie" from a JSON field value such as "A", " b ", "Ответ A", "ничья"; else None."""
    if not isinstance(value, str):
        return None
    text = re.sub(r"\s+", " ", value.strip(_TOKEN_JUNK).lower())
    text = re.sub(r"^ответ\s*", "", text).strip(_TOKEN_JUNK)
    if len(text) == 1:  # only a lone letter may be a Cyrillic look-alike; words stay as written
        text = text.translate(_HOMOGLYPHS).lower()
    return _SLOT_WORDS.get(text)


def _json_candidates(text: str):
    """Every JSON object embedded in `text` (prose, markdown fences), in order of appearance."""
    decoder = json.JSONDecoder()
    for match in re.finditer(r"\{", text):
        try:
            obj, _ = decoder.raw_decode(text, match.start())
        except json.JSONDecodeError:
            continue
        if isinstance(obj, dict):
            yield obj


def _from_mapping(obj: dict, method: str) -> Verdict | None:
    lowered = {str(k).strip().lower(): v for k, v in obj.items()}
    overall = normalise_slot(lowered.get("overall", lowered.get("winner", lowered.get("verdict"))))
    if overall is None:
        return None
    criteria = {name: normalise_slot(lowered.get(name)) for name in CRITERIA}
    reason = lowered.get("reason")
    return Verdict(overall, criteria, reason if isinstance(reason, str) else None, method)


_PAIR = re.compile(r'"(overall|winner|verdict|relevance|helpfulness|clarity|language|reason)"\s*:\s*"([^"]*)"?',
                   re.IGNORECASE)
# A verdict letter in prose is case-sensitive even inside IGNORECASE patterns: a Latin A/B (either case) or a
# Cyrillic CAPITAL look-alike. After a winner keyword the Cyrillic capital must not start a Russian phrase
# ("лучший ответ В целом — A" must not read «В» as B); after "ответ" + "лучше/хуже" the grammar already says
# it is a letter.
_LETTER = r"[\"'«*]*(?-i:([ABab]|[АВ]))(?![\w])"
_WINNER_LETTER = r"[\"'«*]*(?-i:([ABab]|[АВ](?!\s*[а-яё])))(?![\w])"
_WINNER = re.compile(r"(?:победител[ья]|вердикт|итог|winner|verdict|overall|лучший\s+ответ|лучше\s+ответ)"
                     r"(?:\s+(?:в\s+целом|в\s+итоге|здесь))?\s*[:\-—–=]?\s*(?:это\s*)?(?:ответ\s*)?"
                     + _WINNER_LETTER, re.IGNORECASE)
_BETTER = re.compile(r"ответ\s*" + _LETTER + r"[\"'»*]*\s*(?:[-—]\s*)?(?:явно\s+|заметно\s+|значительно\s+)?"
                     r"(лучше|предпочтительнее|выигрывает|побеждает|сильнее|хуже|уступает|слабее)",
                     re.IGNORECASE)
_TIE = re.compile(r"ничья|оба\s+(?:ответа\s+)?(?:одинаков\w*|равноценн\w*|равн\w*|хорош\w*\s+одинаково)|"
                  r"ответы\s+(?:одинаков\w*|равноценн\w*|равн\w*)|равноценн\w*|\btie\b|\bdraw\b", re.IGNORECASE)
_WORSE = ("хуже", "уступает", "слабее")


def _letter(raw: str) -> str:
    return raw.translate(_HOMOGLYPHS).upper()


def _from_text(text: str) -> Verdict | None:
    """Worded verdicts: "Ответ A лучше", "победитель: B", "ничья", "оба одинаковы". Conflicts give None."""
    found: set[str] = set()
    for match in _WINNER.finditer(text):
        found.add(_letter(match.group(1)))
    for match in _BETTER.finditer(text):
        letter = _letter(match.group(1))
        if match.group(2).lower() in _WORSE:
            letter = "B" if letter == "A" else "A"
        found.add(letter)
    if _TIE.search(text):
        found.add("tie")
    if len(found) != 1:
        return None  # nothing found, or the text names different winners: do not guess
    return Verdict(found.pop(), {}, None, "text")


def _from_partial_json(text: str) -> Verdict | None:
    """Truncated or malformed JSON: read the "key": "value" pairs that did arrive."""
    pairs = {key.lower(): value for key, value in _PAIR.findall(text)}
    if not pairs:
        return None
    return _from_mapping(pairs, "partial-json")


def parse_verdict(text: str) -> Verdict | None:
    """JSON first (anywhere in the text, fenced or not), then partial JSON, then Russian/English wording."""
    if not isinstance(text, str) or not text.strip():
        return None
    for obj in _json_candidates(text):
        verdict = _from_mapping(obj, "json")
        if verdict is not None:
            return verdict
    return _from_partial_json(text) or _from_text(text)


def slot_probs_from_verdict(slot: str) -> dict[str, float]:
    return {s: (1.0 if s == slot else 0.0) for s in SLOTS}


def model_preference(probs: dict[str, float], order: str) -> float:
    """Preference for the MODEL answer: its slot's probability plus half the tie probability."""
    model_slot = "A" if order == "model_first" else "B"
    return probs[model_slot] + 0.5 * probs["tie"]


def slot_to_side(slot: str, order: str) -> str:
    """"model" / "reference" / "tie" for a slot verdict given which answer sat in slot A."""
    if slot == "tie":
        return "tie"
    model_slot = "A" if order == "model_first" else "B"
    return "model" if slot == model_slot else "reference"


def argmax_slot(probs: dict[str, float]) -> str:
    if probs["A"] == probs["B"] and probs["A"] >= probs["tie"]:
        return "tie"  # an exact A/B split names no winner
    return max(SLOTS, key=lambda s: probs[s])
