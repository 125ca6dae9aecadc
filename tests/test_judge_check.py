"""`rualign judge-check` through the normal judge path with fake judges whose behaviour is known."""

from __future__ import annotations

import contextlib
import json
import math
import random
import re

import pytest

from rualign.cli import main
from rualign.eval import judge as judge_mod
from rualign.eval import judge_card
from rualign.eval.judge_check import GoldPair, find_card, load_gold
from rualign.records import Judgment

_ANSWER = re.compile(r"\[Ответ ([AB])\]\n(.*?)\n\n\[Конец ответа \1\]", re.DOTALL)


class FakeJudge:
    """A logprob judge: `policy(slot_a_text, slot_b_text) -> (pA, pB, pTie)`."""

    def __init__(self, policy, calls):
        self.policy, self.calls, self.identity = policy, calls, "fake"

    async def complete(self, messages, kind):
        self.calls.append(kind)
        answers = dict(_ANSWER.findall(messages[-1]["content"]))
        probs = self.policy(answers["A"], answers["B"])
        top = [{"token": t, "logprob": math.log(max(p, 1e-9))} for t, p in zip("ABC", probs)]
        return {"text": "A", "top_logprobs": top, "usage": {"prompt_tokens": 1, "completion_tokens": 1},
                "finish_reason": "length"}

    def stats(self):
        return {"requests": len(self.calls), "retries": 0}

    async def aclose(self):
        return None


@pytest.fixture
def fake_judge(monkeypatch, tmp_path):
    monkeypatch.setenv("RUALIGN_HOME", str(tmp_path / "home"))
    calls: list[str] = []

    def install(policy):
        @contextlib.contextmanager
        def factory(cfg):
            yield lambda: FakeJudge(policy, calls)
        monkeypatch.setattr(judge_mod, "backend_factory", factory)
        return calls
    return install


def _run(tmp_path, name, *extra):
    out = tmp_path / name
    code = main(["judge-check", "--judge", "openai:fake@http://127.0.0.1:9/v1", "--out", str(out),
                 "--cache", str(tmp_path / f"{name}.sqlite"), *extra])
    return code, json.loads((out / "judge_card.json").read_text(encoding="utf-8")), out


def test_bundled_gold_set_is_balanced_and_documented():
    _, pairs = load_gold("bundled:gold_ru")
    assert len(pairs) >= 120
    kinds = {p.category for p in pairs}
    assert len(kinds) >= 6
    shorter = sum(len(p.chosen) < len(p.rejected) for p in pairs) / len(pairs)
    assert 0.4 <= shorter <= 0.6, shorter
    assert len({p.prompt[0].content for p in pairs}) == len(pairs)
    readme = (judge_mod.Path(judge_mod.__file__).parent.parent / "data" / "samples" / "README.md").read_text()
    for kind in kinds:
        assert f"`{kind}`" in readme


def test_perfect_judge(tmp_path, fake_judge):
    _, pairs = load_gold("bundled:gold_ru")
    chosen = {p.chosen for p in pairs}
    calls = fake_judge(lambda a, b: (1.0, 0.0, 0.0) if a in chosen else (0.0, 1.0, 0.0))
    code, card, out = _run(tmp_path, "perfect")
    assert code == 0 and len(calls) == 2 * len(pairs)
    assert card["accuracy"] == 1.0 and card["ci_low"] == 1.0 and card["validated"] is True
    assert card["first_slot_rate"] == 0.5 and card["order_flip_rate"] == 0.0 and card["tie_rate"] == 0.0
    assert card["verdict_mass"] == 1.0
    assert all(c["accuracy"] == 1.0 for c in card["per_category"].values())
    assert "validated" in (out / "judge_card.md").read_text()
    calls.clear()  # a rerun is answered from the judge cache: no call reaches the judge
    assert _run(tmp_path, "perfect")[0] == 0 and calls == []


def test_random_judge_is_at_chance_and_unvalidated(tmp_path, fake_judge):
    rng = random.Random(0)

    def policy(a, b):
        x = rng.random()
        return (x, 1 - x, 0.0)
    fake_judge(policy)
    _, card, out = _run(tmp_path, "random")
    assert abs(card["accuracy"] - 0.5) < 0.08
    assert card["ci_low"] < 0.5 < card["ci_high"]
    assert card["validated"] is False and "chance" in card["reasons"][0]
    assert "UNVALIDATED" in (out / "judge_card.md").read_text()


def test_always_first_judge(tmp_path, fake_judge, capsys):
    fake_judge(lambda a, b: (1.0, 0.0, 0.0))
    _, card, _ = _run(tmp_path, "first")
    assert card["accuracy"] == 0.5 and card["first_slot_rate"] == 1.0 and card["order_flip_rate"] == 1.0
    assert card["validated"] is False
    assert "UNVALIDATED" in capsys.readouterr().out


def test_length_loving_judge_shows_length_bias(tmp_path, fake_judge):
    fake_judge(lambda a, b: (1.0, 0.0, 0.0) if len(a) > len(b) else (0.0, 1.0, 0.0))
    _, card, _ = _run(tmp_path, "length")
    lb = card["length_bias"]
    assert lb["chosen_longer"]["accuracy"] == 1.0 and lb["chosen_shorter"]["accuracy"] == 0.0
    assert lb["gap"] == 1.0
    assert 0.4 <= card["accuracy"] <= 0.6 and card["validated"] is False


def test_card_on_handmade_rows():
    pairs = [GoldPair(id="a", prompt="q", chosen="x", rejected="yyyy", category="k"),
             GoldPair(id="b", prompt="q", chosen="xxxx", rejected="y", category="k")]
    rows = [{"id": "a", "order": "model_first", "preference": 1.0}, {"id": "a", "order": "reference_first",
                                                                   "preference": 0.5},
            {"id": "b", "order": "model_first", "preference": 0.0, "error": None},
            {"id": "b", "order": "reference_first", "preference": None, "error": "api: down"}]
    card = judge_card.build_card([Judgment(**row) for row in rows], pairs)
    # b lost one order: a failed pair, not a pair scored from one order; its call still counts per call.
    assert card.accuracy == pytest.approx(0.75) and card.n == 1 and card.failed_pairs == 1
    assert card.first_slot_rate == pytest.approx((1.0 + 0.5 + 0.0) / 3, abs=1e-4)
    assert card.tie_rate == pytest.approx(1 / 3, abs=1e-4) and card.order_flip_rate == 0.0
    assert card.length_bias.chosen_shorter.accuracy == 0.75 and card.length_bias.chosen_longer.n == 0


def test_a_pair_judged_in_one_order_does_not_carry_the_position_bias_into_accuracy():
    """A judge that always picks slot A is at exactly 0.5 on pairs judged both ways; a pair whose
    reference-first call failed would score 1.0 from its model-first call alone and lift the card to 0.75."""
    pairs = [GoldPair(id=i, prompt="q", chosen="x", rejected="y", category="k") for i in ("a", "b")]
    rows = [{"id": "a", "order": "model_first", "preference": 1.0},
            {"id": "a", "order": "reference_first", "preference": 0.0},
            {"id": "b", "order": "model_first", "preference": 1.0},
            {"id": "b", "order": "reference_first", "preference": None, "error": "api: timeout"}]
    card = judge_card.build_card([Judgment(**row) for row in rows], pairs)
    assert card.accuracy == 0.5 and card.n == 1 and card.failed_pairs == 1 and card.first_slot_rate == 1.0


def test_low_verdict_mass_calls_are_unparsed_and_the_card_unvalidated(tmp_path, fake_judge):
    """Right answers but only 0.32 of the probability on the letters: with the default min_verdict_mass 0.5
    every call is unparsed (never renormalised), and the filed card says why."""
    _, pairs = load_gold("bundled:gold_ru")
    chosen = {p.chosen for p in pairs}
    fake_judge(lambda a, b: (0.3, 0.02, 0.0) if a in chosen else (0.02, 0.3, 0.0))
    _, card, _ = _run(tmp_path, "mass")
    assert card["accuracy"] is None and card["failed_pairs"] == len(pairs)
    assert card["verdict_mass"] == pytest.approx(0.32, abs=0.01)
    assert card["validated"] is False and any("verdict letters" in r for r in card["reasons"])
    from rualign.eval.schema import parse_judge_spec
    assert find_card(parse_judge_spec("openai:fake@http://127.0.0.1:9/v1")).verdict_mass == card["verdict_mass"]


def test_low_mass_threshold_is_configurable(tmp_path, fake_judge):
    _, pairs = load_gold("bundled:gold_ru")
    chosen = {p.chosen for p in pairs}
    fake_judge(lambda a, b: (0.3, 0.02, 0.0) if a in chosen else (0.02, 0.3, 0.0))
    config = tmp_path / "judge.yaml"
    config.write_text("backend: openai\nmodel: fake\nbase_url: http://127.0.0.1:9/v1\nmin_verdict_mass: 0.2\n",
                      encoding="utf-8")
    _, card, _ = _run(tmp_path, "mass02", "--judge-config", str(config))
    assert card["accuracy"] > 0.9 and card["verdict_mass"] == pytest.approx(0.32, abs=0.01)
    assert card["validated"] is False and "verdict letters" in card["reasons"][-1]
