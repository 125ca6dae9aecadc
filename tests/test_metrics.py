"""Judge-free metrics on fixture texts: exact values for Russian, English, code, mixed and repetition."""

from __future__ import annotations

import pytest

from rualign.eval.metrics import answer_metrics, distinct2, ru_share, strip_code, word_tokens

RUSSIAN = "Самая высокая гора в Европе — Эльбрус."
ENGLISH = "The highest mountain in Europe is Elbrus."
CODE_ANSWER = ("Вот функция:\n```python\ndef count_vowels(s):\n    return sum(c in 'aeiou' for c in s)\n```\n"
               "Вызовите `count_vowels(text)` и получите число.")
LOOP = "галерии, галерии, галерии, галерии"


def test_ru_share_pure_russian_and_english():
    assert ru_share(RUSSIAN) == 1.0
    assert ru_share(ENGLISH) == 0.0


def test_ru_share_mixed_counts_letters_only():
    # "Привет" 6 Cyrillic letters, "world" 5 Latin letters; punctuation and digits are not letters.
    assert ru_share("Привет, world! 123") == pytest.approx(6 / 11)


def test_ru_share_ignores_fenced_and_inline_code():
    # Outside code only "Вот функция" + "Вызовите и получите число" remain: all Cyrillic.
    assert ru_share(CODE_ANSWER) == 1.0
    assert "count_vowels" not in strip_code(CODE_ANSWER)
    # An unclosed fence runs to the end (a cut-off answer is still code to its end).
    assert ru_share("Ответ:\n```python\nprint('hello world')") == 1.0


def test_ru_share_none_without_letters():
    assert ru_share("```\nx = 1\n```") is None
    assert ru_share("123 + 456 = 579") is None
    assert ru_share("") is None


def test_distinct2_exact_values():
    assert distinct2("один два три четыре") == 1.0
    # tokens: галерии , галерии , галерии , галерии -> 6 bigrams, 2 distinct
    assert word_tokens(LOOP) == ["галерии", ",", "галерии", ",", "галерии", ",", "галерии"]
    assert distinct2(LOOP) == pytest.approx(2 / 6)
    assert distinct2("да да да да") == pytest.approx(1 / 3)
    # case-insensitive: "Да да" is one repeated word
    assert distinct2("Да да да") == pytest.approx(1 / 2)


def test_distinct2_none_for_single_token():
    assert distinct2("Эльбрус") is None
    assert distinct2("") is None


def test_answer_metrics_means_over_qualifying_answers():
    metrics = answer_metrics([RUSSIAN, ENGLISH, "```\ncode\n```", LOOP])
    # ru_share: (1 + 0 + 1) / 3 (the code-only answer has no letters outside code)
    assert metrics["ru_share"] == pytest.approx(2 / 3)
    # distinct2 counts every token (code included): "```\ncode\n```" is 7 tokens, 6 bigrams, 3 distinct.
    assert distinct2("```\ncode\n```") == 0.5
    assert metrics["distinct2"] == pytest.approx((1.0 + 1.0 + 0.5 + 2 / 6) / 4)


def test_answer_metrics_empty_run():
    assert answer_metrics([]) == {"ru_share": None, "distinct2": None}
