"""Verdict mass through the judge stage: a judge that starts in Russian is never read as voting B; below
min_verdict_mass a call is asked again with its first token constrained (or left unparsed); the run's mean
verdict mass reaches score.json and makes the score unvalidated."""

from __future__ import annotations

import contextlib
import json
import math

import pytest

from rualign.eval import judge as judge_mod
from rualign.eval.judge import run_judge
from rualign.eval.schema import JudgeConfig


class RussianJudge:
    """Starts its reply with «В» ("in"): most mass on Cyrillic words, a little on the Latin letters; the
    constrained call answers `forced`."""

    def __init__(self, top, forced, calls):
        self.top, self.forced, self.calls, self.identity = top, forced, calls, "russian"

    async def complete(self, messages, kind):
        self.calls.append(kind)
        usage = {"prompt_tokens": 10, "completion_tokens": 1}
        if kind == "constrained":
            return {"text": self.forced, "top_logprobs": None, "usage": usage, "finish_reason": "length"}
        top = [{"token": t, "logprob": math.log(p)} for t, p in self.top]
        return {"text": self.top[0][0], "top_logprobs": top, "usage": usage, "finish_reason": "length"}

    def stats(self):
        return {"requests": len(self.calls), "retries": 0}

    async def aclose(self):
        return None


@pytest.fixture
def judge_with(monkeypatch, tmp_path, write_jsonl):
    monkeypatch.setenv("RUALIGN_HOME", str(tmp_path / "home"))
    rows = lambda who: [{"id": f"p{i}", "prompt": f"Вопрос {i}", "answer": f"{who} ответ {i}", "answer_tokens": 3}
                        for i in range(4)]
    answers, reference = write_jsonl("a.jsonl", rows("Мой")), write_jsonl("r.jsonl", rows("Эталонный"))

    def run(top, forced="A", **cfg):
        calls: list[str] = []

        @contextlib.contextmanager
        def factory(config):
            yield lambda: RussianJudge(top, forced, calls)
        monkeypatch.setattr(judge_mod, "backend_factory", factory)
        config = JudgeConfig(backend="openai", base_url="http://127.0.0.1:9/v1", model="ru",
                             cache=str(tmp_path / f"{len(calls)}{id(calls)}.sqlite"), **cfg)
        out = tmp_path / f"out{id(calls)}"
        score = run_judge(answers, reference, config, out)
        judged = [json.loads(line) for line in (out / "judgments.jsonl").read_text(encoding="utf-8").splitlines()]
        return score, judged, calls
    return run


RUSSIAN_START = [("В", 0.6), (" в", 0.1), ("а", 0.08), ("С", 0.05), ("A", 0.03), ("B", 0.01)]


def test_russian_start_is_not_read_as_b_and_is_unparsed_without_a_constraint(judge_with):
    score, rows, calls = judge_with(RUSSIAN_START, constrain="off")
    assert calls == ["logprob"] * 8
    assert all(r["preference"] is None and r["verdict_mass"] == pytest.approx(0.04) for r in rows)
    assert all("carry 0.040 of the probability" in r["error"] for r in rows)
    assert score.n == 0 and score.verdict_mass == pytest.approx(0.04)
    assert score.judge_card.status == "unvalidated"


def test_low_mass_call_is_asked_again_with_the_first_token_constrained(judge_with):
    score, rows, calls = judge_with(RUSSIAN_START, forced="A", constrain="grammar")
    assert calls.count("constrained") == 8
    assert {r["mode"] for r in rows} == {"constrained"} and all(r["error"] is None for r in rows)
    raw = json.loads(rows[0]["raw"])  # one JSON object: the free call and the constrained letter
    assert raw["constrained"] == "A" and raw["top_logprobs"][0]["token"] == "В"
    # "A" is the first slot: the model in model_first order, the reference in reference_first order
    assert [r["preference"] for r in rows] == [1.0, 0.0] * 4
    assert score.score == 50.0 and score.first_slot_win_rate == 1.0
    assert score.judge_card.status == "unvalidated"
    assert any("0.04 of its probability" in reason for reason in score.judge_card.reasons)


def test_enough_mass_is_read_from_the_letters(judge_with):
    score, rows, calls = judge_with([("A", 0.5), (" B", 0.2), ("C", 0.1), ("В", 0.15)])
    assert calls == ["logprob"] * 8
    assert rows[0]["verdict_mass"] == pytest.approx(0.8) and rows[0]["probs"]["A"] == pytest.approx(0.625)
    assert score.verdict_mass == pytest.approx(0.8) and score.judge_card.status == "unchecked"
