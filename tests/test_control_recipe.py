"""The control recipe (`control: shuffle_answers`): every prompt keeps its own text, no answer stays with
its prompt, and the answers as a multiset are exactly the real data's."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from rualign.config import validate
from rualign.data.recipe import run_recipe, shuffle_answers
from rualign.data.schema import Recipe
from rualign.errors import ConfigError


def _rows(n: int) -> list[dict]:
    return [{"id": f"r{i}", "kind": "chat", "answer_tokens": 10 + i,
             "messages": [{"role": "user", "content": f"вопрос {i}"},
                          {"role": "assistant", "content": f"ответ {i}"}]} for i in range(n)]


def test_shuffle_answers_is_a_derangement_keeping_the_answers():
    rows = _rows(9)
    out = shuffle_answers(rows, seed=3)
    assert [r["messages"][0]["content"] for r in out] == [f"вопрос {i}" for i in range(9)]
    for row in out:
        own = row["id"][1:]
        assert row["messages"][1]["content"] != f"ответ {own}"
        # the token count travels with the answer text
        assert row["answer_tokens"] == 10 + int(row["messages"][1]["content"].split()[1])
    assert Counter(r["messages"][1]["content"] for r in out) == Counter(f"ответ {i}" for i in range(9))
    assert rows[0]["messages"][1]["content"] == "ответ 0"  # the input is not mutated
    assert shuffle_answers(rows, seed=3) == out  # seeded
    assert shuffle_answers(rows, seed=4) != out


def test_shuffle_answers_keeps_earlier_turns():
    row = {"id": "m", "kind": "chat", "answer_tokens": 5, "messages": [
        {"role": "user", "content": "u1"}, {"role": "assistant", "content": "a1"},
        {"role": "user", "content": "u2"}, {"role": "assistant", "content": "a2"}]}
    other = _rows(1)[0]
    out = shuffle_answers([row, other], seed=0)
    assert [m["content"] for m in out[0]["messages"]] == ["u1", "a1", "u2", "ответ 0"]
    assert out[1]["messages"][1]["content"] == "a2"


def test_control_recipe_writes_shuffled_train_file(tmp_path):
    base = {"seed": 5, "tokenizer": "column", "val_fraction": 0.0,
            "sources": [{"name": "gm", "format": "grandmaster", "path": "bundled:grandmaster",
                         "filters": {"answer_tokens": {"max": 150}}}]}
    real = run_recipe(validate(Recipe, base, "test"), tmp_path / "real")
    control = run_recipe(validate(Recipe, {**base, "control": "shuffle_answers"}, "test"), tmp_path / "control")
    assert control["config_hash"] != real["config_hash"]
    read = lambda name: {r["id"]: r for r in map(json.loads, (tmp_path / name / "train.jsonl").open())}
    a, b = read("real"), read("control")
    assert a.keys() == b.keys() and len(a) == 36
    assert all(a[i]["messages"][0] == b[i]["messages"][0] for i in a)
    assert all(a[i]["messages"][-1]["content"] != b[i]["messages"][-1]["content"] for i in a)
    assert Counter(r["messages"][-1]["content"] for r in a.values()) == Counter(
        r["messages"][-1]["content"] for r in b.values())


def test_control_needs_chat_records():
    with pytest.raises(ConfigError):
        validate(Recipe, {"control": "shuffle_answers", "sources": [
            {"name": "p", "format": "saiga_preferences", "path": "bundled:saiga_preferences"}]}, "test")
