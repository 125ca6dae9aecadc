"""Verdict parsers on fixture strings: logprob letters, JSON (clean, fenced, in prose, truncated), Russian wording."""

from __future__ import annotations

import math

import pytest

from rualign.eval import parse
from rualign.eval.judge_reply import TopLogprob


def lp(p: float) -> float:
    return math.log(p)


def _top(rows: list[dict]) -> list[TopLogprob]:
    return [TopLogprob(**row) for row in rows]


def test_letter_probs_sums_spellings_and_ignores_cyrillic_words():
    top = [{"token": "A", "logprob": lp(0.4)}, {"token": " A", "logprob": lp(0.1)}, {"token": "a", "logprob": lp(0.05)},
           {"token": "В", "logprob": lp(0.2)},  # Cyrillic Ve: the Russian word "in", never the verdict B
           {"token": " C", "logprob": lp(0.05)}, {"token": "Ответ", "logprob": lp(0.2)}]
    probs = parse.letter_probs(_top(top))
    assert probs == pytest.approx({"A": 0.55 / 0.6, "B": 0.0, "tie": 0.05 / 0.6})
    dist = parse.letter_distribution(_top(top))
    assert dist.mass == pytest.approx(0.6)
    assert sum(dist.probs.values()) == pytest.approx(1.0)


def test_letter_probs_none_without_verdict_letters():
    assert parse.letter_probs(_top([{"token": "Hello", "logprob": -0.1}, {"token": "AB", "logprob": -1}])) is None
    assert parse.letter_probs([]) is None
    assert parse.letter_distribution([]).mass == 0.0


def test_russian_first_tokens_are_not_verdicts():
    """The embedded judge's typical first tokens: «В» (in), «в», «а» (and), «с»/«С» (with). None is a verdict, so
    a judge that starts "В ответе A ..." is not read as B; its little Latin mass is below the threshold."""
    top = [{"token": "В", "logprob": lp(0.45)}, {"token": " в", "logprob": lp(0.1)}, {"token": "а", "logprob": lp(0.1)},
           {"token": "С", "logprob": lp(0.08)}, {"token": " с", "logprob": lp(0.05)}, {"token": "A", "logprob": lp(0.06)},
           {"token": "B", "logprob": lp(0.02)}]
    dist = parse.letter_distribution(_top(top))
    assert dist.mass == pytest.approx(0.08)
    assert dist.probs["A"] > dist.probs["B"]  # what Latin mass there is leans to A, not B
    assert parse.letter_probs(_top(top), min_mass=parse.DEFAULT_MIN_VERDICT_MASS) is None
    assert parse.letter_probs(_top([{"token": "A", "logprob": lp(0.7)}]), min_mass=0.5) == {"A": 1.0, "B": 0.0, "tie": 0.0}


@pytest.mark.parametrize("text,slot", [
    ("В ответе A больше фактов, поэтому лучший ответ — A.", "A"),
    ("Лучший ответ в целом — A", "A"),
    ("Итог: В ответе B ошибка, ответ A лучше.", "A"),
    ("Победитель: В.", "B"),
    ("Ответ А лучше", "A"),
    ("ответ b хуже", "A"),
])
def test_worded_verdicts_do_not_read_russian_words_as_letters(text, slot):
    verdict = parse.parse_verdict(text)
    assert verdict is not None and verdict.overall == slot


def test_worded_verdict_without_letter_is_unparsed():
    assert parse.parse_verdict("В ответе есть ошибки, а в другом с ними всё в порядке.") is None


@pytest.mark.parametrize("token,slot", [("A", "A"), (" B", "B"), ("**C", "tie"), ("«A»", "A"), ("(B)", "B"),
                                        ("«А»", None), ("В", None), (" в", None), ("а", None), ("с", None),
                                        ("С", None), ("a", "A"), (" b", "B"), ("Ab", None), ("D", None), ("", None)])
def test_letter_of_token(token, slot):
    assert parse.letter_of_token(token) == slot


def test_first_position_top_logprobs_shapes():
    top = [{"token": "A", "logprob": -0.1}]
    assert parse.first_position_top_logprobs({"logprobs": {"content": [{"token": "A", "logprob": -0.1,
                                                                         "top_logprobs": top}]}}) == top
    assert parse.first_position_top_logprobs({"logprobs": None}) is None
    assert parse.first_position_top_logprobs({"message": {"content": "A"}}) is None
    only_chosen = {"logprobs": {"content": [{"token": "B", "logprob": -0.2, "top_logprobs": []}]}}
    assert parse.first_position_top_logprobs(only_chosen) == [{"token": "B", "logprob": -0.2}]


def test_clean_json():
    v = parse.parse_verdict('{"relevance": "A", "helpfulness": "B", "clarity": "tie", "language": "A", '
                            '"overall": "B", "reason": "Ответ B полнее."}')
    assert (v.overall, v.method, v.reason) == ("B", "json", "Ответ B полнее.")
    assert v.criteria == {"relevance": "A", "helpfulness": "B", "clarity": "tie", "language": "A"}


def test_json_in_markdown_fence_and_prose():
    text = 'Проанализирую ответы.\n```json\n{"overall": "a", "reason": "точнее"}\n```\nИтак, {не JSON}.'
    v = parse.parse_verdict(text)
    assert (v.overall, v.method) == ("A", "json")


def test_json_values_in_russian():
    assert parse.parse_verdict('{"overall": "ничья"}').overall == "tie"
    assert parse.parse_verdict('{"overall": "Ответ B"}').overall == "B"


def test_truncated_json_uses_fields_that_arrived():
    v = parse.parse_verdict('{"relevance": "A", "helpfulness": "A", "clarity": "B", "language": "A", '
                            '"overall": "A", "reason": "Первый отв')
    assert (v.overall, v.method, v.criteria["clarity"]) == ("A", "partial-json", "B")


def test_truncated_before_overall_is_a_failure():
    assert parse.parse_verdict('{"relevance": "A", "helpfulness": "B", "cla') is None


@pytest.mark.parametrize("text,slot", [
    ("Ответ A лучше, чем ответ B.", "A"),
    ("Победитель: B", "B"),
    ("победитель — ответ А", "A"),  # Cyrillic А
    ("Итог: ничья.", "tie"),
    ("Оба одинаковы по качеству.", "tie"),
    ("Оба ответа равноценны", "tie"),
    ("Лучше ответ B: он конкретнее.", "B"),
    ("Ответ «A» явно хуже.", "B"),
    ("Winner: A", "A"),
])
def test_russian_worded_verdicts(text, slot):
    v = parse.parse_verdict(text)
    assert v is not None and (v.overall, v.method) == (slot, "text")


@pytest.mark.parametrize("text", ["", "   ", "asdf qwerty", "Ответ A лучше. Победитель: B",
                                  "<html>502</html>", '{"foo": 1}', None])
def test_garbage_or_conflicting_is_none(text):
    assert parse.parse_verdict(text) is None


def test_preference_and_sides_per_order():
    probs = {"A": 0.7, "B": 0.1, "tie": 0.2}
    assert parse.model_preference(probs, "model_first") == pytest.approx(0.8)
    assert parse.model_preference(probs, "reference_first") == pytest.approx(0.2)
    assert parse.slot_to_side("A", "model_first") == "model"
    assert parse.slot_to_side("A", "reference_first") == "reference"
    assert parse.slot_to_side("tie", "reference_first") == "tie"
    assert parse.argmax_slot({"A": 0.4, "B": 0.4, "tie": 0.2}) == "tie"
    assert parse.argmax_slot({"A": 0.2, "B": 0.5, "tie": 0.3}) == "B"
