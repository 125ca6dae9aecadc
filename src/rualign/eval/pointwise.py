"""Pointwise judging (`mode: pointwise`): each answer is scored alone on a 1–9 scale, the preference comes from
the two scores.

Why 1–9 and not 1–10: every score is then one digit, i.e. one token in the tokenizers we use (SmolLM2 and Gemma
split numbers into digits), so the judge's first-token distribution over "1".."9" is the whole score
distribution; with 10 the token "1" would mean 1 or the start of 10.

One score call per answer, with the prompt and that answer only (never the other answer, never an order). Its
cache key therefore has no order and no opponent: the same answer to the same prompt is scored once, whichever
side or run it appears in (the reference answers of a sweep are scored once for all runs).

- Backends that give top logprobs: the score is the **expected score** Σ d·p(d) over the digit tokens 1–9 of the
  first generated token, renormalised over those digits; the probability they carry is the call's
  `verdict_mass`. Below `min_verdict_mass` the digits are noise next to what the judge meant to write: the
  call is asked again with its first token constrained to a digit (llama.cpp grammar, or the local backend's
  logits) and scored by that digit, as pairwise logprob mode does with its letters; with `constrain: off` it
  is a parse failure.
- Backends without logprobs: the judge writes its answer (`text_instruction`) and the score is parsed from it
  (`parse_score`: «Оценка: 7», "Score: 7/9", «8 из 9», «Оценка: семь»), with one reminder on failure.

Preference for the model answer: 1 when its score is higher, 0 when lower, ½ when the two scores are equal
(parsed integers tie often, expected scores almost never). Both answer orders are still written (the score and
the card expect two rows per prompt), but they are the same two cached calls, so the rows are equal: the
first-slot rate is 0.5 and the order-flip rate 0 by construction — a pointwise judge has no slot to prefer.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass

from rualign.eval.cache import cache_key
from rualign.eval.client import CallFailed
from rualign.eval.judge_reply import JudgeReply, TopLogprob
from rualign.eval.parse import class_probabilities
from rualign.records import Usage

DIGITS = "123456789"
SCORE_GRAMMAR = "root ::= [1-9]"  # GBNF for llama.cpp's server: one score digit
POINTWISE_KEYS = ("version", "system", "body", "score_instruction", "text_instruction", "reminder")
_TOKEN_JUNK = " \t\n\r\"'«»*`_()[]{}.:,;!"


@dataclass(frozen=True)
class PointwiseTemplate:
    version: str
    system: str
    body: str  # placeholders {prompt} and {answer}
    score_instruction: str  # logprob path: answer one digit
    text_instruction: str  # no logprobs: write a line «Оценка: N»
    reminder: str


def render(template: PointwiseTemplate, prompt: str, answer: str, kind: str) -> list[dict]:
    values = {"prompt": prompt, "answer": answer}
    # One pass, so braces or placeholders inside the answer are never substituted again.
    body = re.sub(r"\{(prompt|answer)\}", lambda m: values[m.group(1)], template.body)
    instruction = template.text_instruction if kind == "score_text" else template.score_instruction
    return [{"role": "system", "content": template.system}, {"role": "user", "content": f"{body}\n\n{instruction}"}]


# ---------------------------------------------------------------- pure parsers

def digit_of_token(token: str) -> int | None:
    core = token.strip(_TOKEN_JUNK)
    return int(core) if len(core) == 1 and core in DIGITS else None


@dataclass(frozen=True)
class ScoreDistribution:
    probs: dict[int, float] | None  # renormalised over 1..9; None when no digit token was listed
    mass: float  # probability on the digit tokens before renormalising

    @property
    def expected(self) -> float | None:
        return None if self.probs is None else sum(d * p for d, p in self.probs.items())


def score_distribution(top_logprobs: list[TopLogprob]) -> ScoreDistribution:
    """Digit probabilities of one position ("7", " 7", "**7" all count for 7; other tokens are ignored), from a
    validated JudgeReply's top logprobs."""
    probs, mass = class_probabilities(top_logprobs, digit_of_token, range(1, 10))
    return ScoreDistribution(probs, mass)


_WORDS = {"один": 1, "одна": 1, "два": 2, "две": 2, "три": 3, "четыре": 4, "пять": 5, "шесть": 6, "семь": 7,
          "восемь": 8, "девять": 9, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7,
          "eight": 8, "nine": 9}
_NUMBER = r"(\d+(?:[.,]\d+)?|" + "|".join(_WORDS) + r")"
_KEYWORD = re.compile(r"(?:оценк[аиуе]|балл\w*|итог\w*|score|rating|grade)\s*[:\-—–=]?\s*(?:[*_]{0,2}\s*)?(?:—\s*)?"
                      + _NUMBER + r"(?![\d])", re.IGNORECASE)
_OUT_OF = re.compile(_NUMBER + r"\s*(?:/|из|out\s+of)\s*9\b", re.IGNORECASE)
_ANY = re.compile(r"(?<![\d.,])(\d+(?:[.,]\d+)?)(?![\d])")


def _value(raw: str) -> float | None:
    raw = raw.lower()
    value = float(_WORDS[raw]) if raw in _WORDS else float(raw.replace(",", "."))
    return value if 1.0 <= value <= 9.0 else None


def parse_score(text: str) -> float | None:
    """A 1–9 score from a written reply, or None. A number after a score word («Оценка: 7», "Score — 8") or
    in "N/9", «N из 9» wins; else the reply's only number. Conflicting or out-of-scale numbers give None."""
    if not isinstance(text, str) or not text.strip():
        return None
    for pattern in (_KEYWORD, _OUT_OF):
        found = {_value(m.group(1)) for m in pattern.finditer(text)}
        if found:
            return found.pop() if len(found) == 1 and None not in found else None
    numbers = {m.group(1) for m in _ANY.finditer(text)}
    return _value(numbers.pop()) if len(numbers) == 1 else None


def preference(model_score: float, reference_score: float) -> float:
    """Preference for the model answer from the two scores: 1 higher, 0 lower, ½ equal."""
    if math.isclose(model_score, reference_score, abs_tol=1e-9):
        return 0.5
    return 1.0 if model_score > reference_score else 0.0


# ---------------------------------------------------------------- judging one job

@dataclass
class Scored:
    score: float | None
    method: str  # "logprob" | "constrained" | "text"
    mass: float | None = None
    text: str = ""
    error: str | None = None


def score_key(run, kind: str, messages: list[dict], answer: str) -> str:
    """The cache key of one score call: no order and no opponent (see the module doc)."""
    from rualign.eval.judge_backends import request_params

    return cache_key(model=run.backend.identity, params={"kind": kind, **request_params(run.cfg, kind)},
                     template_version=run.template.version, messages=messages, answer_a=answer, answer_b="",
                     order="pointwise")


async def _call(run, kind: str, messages: list[dict], answer: str, usage: Usage, cached: list[bool]
                ) -> JudgeReply:
    value, hit = await run.call(None, kind, messages, key=score_key(run, kind, messages, answer))
    cached.append(hit)
    usage.prompt_tokens += value.usage.prompt_tokens
    usage.completion_tokens += value.usage.completion_tokens
    return value


async def score_answer(run, prompt: str, answer: str, usage: Usage, cached: list[bool]) -> Scored:
    messages = render(run.template, prompt, answer, "score")
    value = await _call(run, "score", messages, answer, usage, cached)
    if value.top_logprobs is None:
        return await _score_text(run, prompt, answer, usage, cached)
    dist = score_distribution(value.top_logprobs)
    if dist.probs is not None and dist.mass >= run.cfg.min_verdict_mass:
        return Scored(round(dist.expected, 4), "logprob", round(dist.mass, 4), value.text)
    low = (f"the score digits 1-9 carry {dist.mass:.3f} of the probability "
           f"(< min_verdict_mass {run.cfg.min_verdict_mass:g})")
    if not run.constrain:
        return Scored(None, "logprob", round(dist.mass, 4), value.text, error=low)
    forced = await _call(run, "score_constrained", messages, answer, usage, cached)
    digit = digit_of_token(forced.text)
    if digit is None:
        return Scored(None, "constrained", round(dist.mass, 4), forced.text,
                      error=low + "; the constrained call gave no digit either")
    return Scored(float(digit), "constrained", round(dist.mass, 4), forced.text)


async def _score_text(run, prompt: str, answer: str, usage: Usage, cached: list[bool]) -> Scored:
    messages = render(run.template, prompt, answer, "score_text")
    value = await _call(run, "score_text", messages, answer, usage, cached)
    texts = [value.text]
    score = parse_score(value.text)
    if score is None:  # one retry with a stricter reminder, the failed answer kept in the conversation
        retry = messages + [{"role": "assistant", "content": value.text},
                            {"role": "user", "content": run.template.reminder}]
        value = await _call(run, "score_text", retry, answer, usage, cached)
        texts.append(value.text)
        score = parse_score(value.text)
    text = "\n--- retry after reminder ---\n".join(texts)
    if score is None:
        return Scored(None, "text", None, text, error="no 1-9 score found in the judge's answer (after one reminder)")
    return Scored(score, "text", None, text)


async def judge_pointwise(run, job):
    """The row of one job: the model answer and the reference answer scored alone, the preference from both."""
    from rualign.eval.judge import _row, prompt_text

    model_answer, reference_answer = ((job.answer_a, job.answer_b) if job.order == "model_first"
                                      else (job.answer_b, job.answer_a))
    usage = Usage()
    cached: list[bool] = []
    prompt = prompt_text(job.prompt)
    try:
        mine = await score_answer(run, prompt, model_answer, usage, cached)
        theirs = await score_answer(run, prompt, reference_answer, usage, cached)
    except CallFailed as exc:
        return _row(job, "pointwise", error=f"api: {exc}", usage=usage, cached=bool(cached) and all(cached))
    raw = json.dumps({side: {"score": s.score, "method": s.method, "mass": s.mass, "text": s.text}
                      for side, s in (("model", mine), ("reference", theirs))}, ensure_ascii=False)
    masses = [s.mass for s in (mine, theirs) if s.mass is not None]
    mass = round(sum(masses) / len(masses), 4) if masses else None
    common = dict(raw=raw, usage=usage, cached=all(cached), verdict_mass=mass)
    errors = [f"{side} answer: {s.error}" for side, s in (("model", mine), ("reference", theirs)) if s.error]
    if errors:
        return _row(job, "pointwise", error="parse: " + "; ".join(errors), **common)
    pref = preference(mine.score, theirs.score)
    verdict = "tie" if pref == 0.5 else "model" if pref == 1.0 else "reference"
    return _row(job, "pointwise", preference=pref, verdict=verdict,
                scores={"model": mine.score, "reference": theirs.score}, **common)
