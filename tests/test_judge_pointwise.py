"""Pointwise judge mode: score parsing (Russian and English replies), digit distributions, and judge-check /
judge / the plan through the normal judge path with fake judges whose behaviour is known."""

from __future__ import annotations

import contextlib
import json
import math
import random
import re
from pathlib import Path

import pytest

from rualign.cli import main
from rualign.errors import RualignError
from rualign.eval import judge as judge_mod
from rualign.eval.judge import load_template, template_for
from rualign.eval.judge_check import find_card, judge_key, load_gold
from rualign.eval.judge_reply import TopLogprob
from rualign.eval.pointwise import (PointwiseTemplate, parse_score, preference, render, score_distribution)
from rualign.eval.schema import parse_judge_spec

_ANSWER = re.compile(r"\[Ответ\]\n(.*?)\n\n\[Конец ответа\]", re.DOTALL)
SPEC = "openai:fake@http://127.0.0.1:9/v1"


# ---------------------------------------------------------------- pure parsers

@pytest.mark.parametrize("text, expected", [
    ("7", 7.0), (" 8", 8.0), ("Оценка: 7", 7.0), ("**Оценка:** 6", 6.0), ("Оценка — 5", 5.0),
    ("Ответ точный и полный, но многословный.\nОценка: 8", 8.0), ("Я бы поставил 4 из 9.", 4.0),
    ("Score: 3/9", 3.0), ("Rating: 9", 9.0), ("Оценка: семь", 7.0), ("итоговый балл: 2", 2.0),
    ("Оценка: 7.5", 7.5), ("Ответ содержит ошибку в 1961 году. Оценка: 3", 3.0),
])
def test_parse_score_reads_russian_and_english_replies(text, expected):
    assert parse_score(text) == expected


@pytest.mark.parametrize("text", [
    "", "Ответ хороший.", "Оценка: 10", "Оценка: 0", "Оценка: 7, нет, оценка: 3",  # none, out of scale, conflict
    "В 1961 году и в 1957 году", "3 и 8",  # several numbers, no score word: do not guess
    "Оценка: ", "12 из 9",
])
def test_parse_score_refuses_what_it_cannot_read(text):
    assert parse_score(text) is None


def test_score_distribution_and_expected_score():
    top = [{"token": "7", "logprob": math.log(0.5)}, {"token": " 8", "logprob": math.log(0.25)},
           {"token": "Оценка", "logprob": math.log(0.2)}, {"token": "10", "logprob": math.log(0.05)}]
    dist = score_distribution([TopLogprob(**entry) for entry in top])
    assert dist.mass == pytest.approx(0.75)
    assert dist.expected == pytest.approx((7 * 0.5 + 8 * 0.25) / 0.75)
    assert score_distribution([TopLogprob(token="В", logprob=0.0)]).probs is None
    assert score_distribution([]).mass == 0.0


def test_preference_from_two_scores():
    assert preference(7.0, 3.0) == 1.0 and preference(3.0, 7.0) == 0.0 and preference(5.0, 5.0) == 0.5
    assert preference(6.2, 6.1) == 1.0


def test_template_follows_the_mode_and_a_mismatch_is_refused(tmp_path):
    cfg = parse_judge_spec("llamacpp:default", mode="pointwise")
    assert cfg.template == "judge_pointwise_v1" and isinstance(template_for(cfg), PointwiseTemplate)
    assert parse_judge_spec("llamacpp:default").template == "judge_pairwise_v1"
    assert judge_key(cfg) != judge_key(parse_judge_spec("llamacpp:default"))  # the mode is in the judge key
    yaml_file = tmp_path / "j.yaml"
    yaml_file.write_text("backend: llamacpp\nmode: logprob\n", encoding="utf-8")  # then --mode pointwise
    assert parse_judge_spec(None, yaml_file, mode="pointwise").template == "judge_pointwise_v1"
    bad = parse_judge_spec("llamacpp:default", mode="pointwise").model_copy(update={"template": "judge_pairwise_v1"})
    with pytest.raises(RualignError, match="does not fit mode"):
        template_for(bad)


def test_render_substitutes_once():
    template = load_template("judge_pointwise_v1")
    messages = render(template, "Вопрос {answer}", "Ответ {prompt}", "score")
    assert "Вопрос {answer}" in messages[-1]["content"] and "Ответ {prompt}" in messages[-1]["content"]
    assert "одной цифрой" in messages[-1]["content"]
    assert "Оценка: N" in render(template, "q", "a", "score_text")[-1]["content"]


# ---------------------------------------------------------------- through the judge path

class FakeScorer:
    """`policy(answer) -> digit probabilities {d: p}` (logprob replies) or `text(answer, messages) -> str`."""

    def __init__(self, calls, policy=None, text=None, forced=None):
        self.calls, self.policy, self.text, self.forced, self.identity = calls, policy, text, forced, "fake"

    async def complete(self, messages, kind):
        answer = _ANSWER.findall(messages[1]["content"])[0]
        self.calls.append((kind, answer))
        usage = {"prompt_tokens": 1, "completion_tokens": 1}
        if kind == "score_constrained":
            return {"text": str(self.forced(answer)), "top_logprobs": None, "usage": usage, "finish_reason": "length"}
        if self.text is not None:
            return {"text": self.text(answer, messages), "top_logprobs": None, "usage": usage, "finish_reason": "stop"}
        top = [{"token": str(d), "logprob": math.log(p)} for d, p in self.policy(answer).items() if p > 0]
        top.append({"token": "Оценка", "logprob": math.log(max(1e-9, 1 - sum(self.policy(answer).values())))})
        return {"text": top[0]["token"], "top_logprobs": top, "usage": usage, "finish_reason": "length"}

    def stats(self):
        return {"requests": len(self.calls), "retries": 0}

    async def aclose(self):
        return None


@pytest.fixture
def fake_scorer(monkeypatch, tmp_path):
    monkeypatch.setenv("RUALIGN_HOME", str(tmp_path / "home"))
    calls: list = []

    def install(**kwargs):
        @contextlib.contextmanager
        def factory(cfg):
            yield lambda: FakeScorer(calls, **kwargs)
        monkeypatch.setattr(judge_mod, "backend_factory", factory)
        return calls
    return install


def _check(tmp_path, name, *extra):
    out = tmp_path / name
    code = main(["judge-check", "--judge", SPEC, "--mode", "pointwise", "--out", str(out),
                 "--cache", str(tmp_path / f"{name}.sqlite"), *extra])
    return code, json.loads((out / "judge_card.json").read_text(encoding="utf-8")), out


def _chosen():
    return {p.chosen for p in load_gold("bundled:gold_ru")[1]}


def test_perfect_pointwise_judge_scores_each_answer_once(tmp_path, fake_scorer):
    chosen = _chosen()
    calls = fake_scorer(policy=lambda a: {8: 0.6, 9: 0.3} if a in chosen else {1: 0.5, 2: 0.4})
    code, card, out = _check(tmp_path, "perfect")
    n = card["n_pairs"]
    # Each answer scored once although both orders are written: the second order is the same two calls.
    assert code == 0 and len(calls) == 2 * n and len(set(calls)) == 2 * n
    assert card["accuracy"] == 1.0 and card["validated"] is True and card["judge"]["mode"] == "pointwise"
    assert card["first_slot_rate"] == 0.5 and card["order_flip_rate"] == 0.0 and card["tie_rate"] == 0.0
    assert card["verdict_mass"] == pytest.approx(0.9) and card["judge"]["template_version"] == "judge_pointwise_v1"
    rows = [json.loads(line) for line in (out / "judgments.jsonl").read_text(encoding="utf-8").splitlines()]
    assert {r["mode"] for r in rows} == {"pointwise"} and len(rows) == 2 * n
    first = rows[0]["scores"]
    assert first["model"] == pytest.approx((8 * 0.6 + 9 * 0.3) / 0.9, abs=1e-3)
    assert first["reference"] == pytest.approx((1 * 0.5 + 2 * 0.4) / 0.9, abs=1e-3)
    calls.clear()  # a rerun is answered from the cache: no call reaches the judge
    assert _check(tmp_path, "perfect")[0] == 0 and calls == []
    assert find_card(parse_judge_spec(SPEC, mode="pointwise")).accuracy == 1.0


def test_random_pointwise_judge_is_at_chance(tmp_path, fake_scorer):
    rng = random.Random(1)
    fake_scorer(policy=lambda a: {rng.randint(1, 9): 1.0})
    _, card, _ = _check(tmp_path, "random")
    assert abs(card["accuracy"] - 0.5) < 0.1 and card["ci_low"] < 0.5 < card["ci_high"]
    assert card["validated"] is False and card["first_slot_rate"] == 0.5
    assert 0.0 < card["tie_rate"] < 0.3  # equal digits are ties (about 1 in 9)


def test_constant_score_judge_is_all_ties(tmp_path, fake_scorer):
    fake_scorer(policy=lambda a: {7: 1.0})
    _, card, _ = _check(tmp_path, "constant")
    assert card["accuracy"] == 0.5 and card["tie_rate"] == 1.0 and card["validated"] is False


def test_low_digit_mass_asks_a_constrained_digit(tmp_path, fake_scorer):
    chosen = _chosen()
    calls = fake_scorer(policy=lambda a: {5: 0.1}, forced=lambda a: 9 if a in chosen else 2)
    settings = tmp_path / "judge.yaml"
    # constrain "auto" constrains llamacpp / local judges only; the fake is an openai one
    settings.write_text("backend: openai\nbase_url: http://127.0.0.1:9/v1\nconstrain: grammar\n", encoding="utf-8")
    _, card, out = _check(tmp_path, "forced", "--judge-config", str(settings))
    kinds = [k for k, _ in calls]
    assert kinds.count("score") == kinds.count("score_constrained") == 2 * card["n_pairs"]
    assert card["accuracy"] == 1.0 and card["verdict_mass"] == pytest.approx(0.1)
    assert card["validated"] is False  # the judge itself puts only 0.1 on the digits: still unvalidated
    raw = json.loads(json.loads((out / "judgments.jsonl").read_text(encoding="utf-8").splitlines()[0])["raw"])
    assert raw["model"]["method"] == "constrained" and raw["model"]["score"] == 9.0


def test_backend_without_logprobs_parses_russian_text_with_one_reminder(tmp_path, fake_scorer):
    chosen = _chosen()

    def text(answer, messages):
        if len(messages) == 2 and answer.startswith(tuple(sorted(chosen))[:5]):
            return "Не знаю."  # unparseable first reply for a few answers: the reminder gets the score
        return "Ответ точен.\nОценка: 8" if answer in chosen else "В ответе ошибка. Оценка: 3"
    calls = fake_scorer(text=text)
    _, card, _ = _check(tmp_path, "text")
    assert card["accuracy"] == 1.0 and card["verdict_mass"] is None
    kinds = [k for k, _ in calls]
    assert kinds.count("score") == 2 * card["n_pairs"] and kinds.count("score_text") > 2 * card["n_pairs"]


def test_rualign_judge_in_pointwise_mode(tmp_path, fake_scorer, write_jsonl):
    rows = []
    for i in range(4):
        rows.append({"id": f"p{i}", "prompt": [{"role": "user", "content": f"Вопрос {i}"}], "tokenizer": "t",
                     "answer_tokens": 3, "finish_reason": "stop", "params": {},
                     "generator": {"backend": "test", "model": "m", "adapter": None}})
    answers = write_jsonl("a.jsonl", [{**r, "answer": f"хороший {r['id']}"} for r in rows])
    reference = write_jsonl("r.jsonl", [{**r, "answer": f"плохой {r['id']}"} for r in rows])
    fake_scorer(policy=lambda a: {9: 1.0} if a.startswith("хороший") else {2: 1.0})
    out = tmp_path / "judged"
    assert main(["judge", "--answers", str(answers), "--reference", str(reference), "--judge", SPEC,
                 "--mode", "pointwise", "--out", str(out), "--cache", str(tmp_path / "c.sqlite")]) == 0
    score = json.loads((out / "score.json").read_text(encoding="utf-8"))
    assert score["judge"]["mode"] == "pointwise" and score["judge"]["template_version"] == "judge_pointwise_v1"
    assert score["score"] == 100.0


def test_experiment_judge_accepts_pointwise(tmp_path):
    from rualign.config import validate
    from rualign.eval.schema import JudgeConfig

    cfg = validate(JudgeConfig, {"backend": "llamacpp", "mode": "pointwise"}, "experiment.yaml")
    assert cfg.template == "judge_pointwise_v1" and cfg.judge_key()["mode"] == "pointwise"


def test_rualign_run_plan_switches_the_judge_mode(tmp_path):
    """The judge-mode switch in an experiment file: the demo with `judge: {backend: llamacpp, mode: pointwise}`
    plans pointwise judge stages with the pointwise template, keyed apart from the demo's logprob judge."""
    import yaml

    from rualign.pipeline import build_plan, load_experiments

    demo = Path(__file__).resolve().parents[1] / "src" / "rualign" / "configs" / "demo.yaml"
    data = yaml.safe_load(demo.read_text(encoding="utf-8"))
    data["defaults"]["eval"]["judge"] = {"backend": "llamacpp", "model": "default", "mode": "pointwise"}
    switched = tmp_path / "demo_pointwise.yaml"
    switched.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    plan = build_plan(load_experiments(switched), tmp_path / "a")
    original = build_plan(load_experiments(demo), tmp_path / "a")
    assert all(r.judge_config.mode == "pointwise" and r.judge_config.template == "judge_pointwise_v1"
               for r in plan.runs)
    judge_nodes = {n.id for n in plan.nodes.values() if n.kind == "judge"}
    assert judge_nodes and judge_nodes.isdisjoint({n.id for n in original.nodes.values() if n.kind == "judge"})
