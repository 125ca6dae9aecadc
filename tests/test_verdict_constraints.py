"""The first-token verdict constraint for OpenAI-compatible judges (vLLM guided choice / structured outputs,
SGLang regex, logit_bias with the letters' token ids): the request carries it, and the reply is read.

The server here behaves like a judge that starts its reply in Russian («В ответе A…»): almost no probability on
the letters in the free call, and in the constrained call it answers a letter ONLY when the request carries the
constraint it honours (as a real server would); without it, it writes «В» again, which is no verdict."""

from __future__ import annotations

import json
import math
import threading

import pytest
from pydantic import ValidationError
from fault_server import FaultServer, winner_of

from rualign.errors import ConfigError
from rualign.eval.judge import run_judge
from rualign.eval.schema import JudgeConfig, parse_judge_spec

IDS = {"A": 32, "B": 33, "C": 34}
RUSSIAN_TOP = [{"token": "В", "logprob": math.log(0.9)}, {"token": " в", "logprob": math.log(0.05)},
               {"token": "A", "logprob": math.log(0.01)}]


def honoured(body: dict, method: str) -> bool:
    """Whether the request carries the constraint a server of this kind would apply."""
    if method == "guided_choice":
        return body.get("guided_choice") == ["A", "B", "C"]
    if method == "structured_outputs":
        return body.get("structured_outputs") == {"choice": ["A", "B", "C"]}
    if method == "regex":
        return body.get("regex") == "[ABC]"
    if method == "logit_bias":
        return body.get("logit_bias") == {str(i): 100 for i in IDS.values()}
    return "grammar" in body


class ConstrainingServer(FaultServer):
    def __init__(self, method: str):
        super().__init__(fault_rate=0.0)
        self.method, self.bodies, self._body_lock = method, [], threading.Lock()

    def completion(self, body: dict) -> dict:
        with self._body_lock:
            self.bodies.append(body)
        letter = {"A": "A", "B": "B", "tie": "C"}[winner_of(body.get("messages") or [])]
        if body.get("logprobs"):  # the free call: a Russian first word
            choice = {"message": {"role": "assistant", "content": "В"},
                      "logprobs": {"content": [{"token": "В", "logprob": RUSSIAN_TOP[0]["logprob"],
                                                "top_logprobs": RUSSIAN_TOP}]}}
        else:
            text = letter if honoured(body, self.method) else "В"
            choice = {"message": {"role": "assistant", "content": text}}
        return {"id": "x", "object": "chat.completion", "model": body.get("model"),
                "choices": [{"index": 0, "finish_reason": "length", **choice}],
                "usage": {"prompt_tokens": 10, "completion_tokens": 1}}


def _pairs(write_jsonl):
    rows = []
    for i in range(4):
        prompt = [{"role": "user", "content": f"Вопрос {i}"}]
        long, short = f"Длинный подробный ответ {i}. " * 3, f"Кратко {i}."
        rows.append((prompt, long if i % 2 else short, short if i % 2 else long, f"p{i}"))
    common = {"answer_tokens": 3, "tokenizer": "t", "finish_reason": "stop"}
    model = write_jsonl("answers.jsonl", [{"id": i, "prompt": p, "answer": m, **common} for p, m, _, i in rows])
    reference = write_jsonl("reference.jsonl", [{"id": i, "prompt": p, "answer": r, **common} for p, _, r, i in rows])
    return model, reference


@pytest.mark.parametrize("constrain, extra", [
    ("guided_choice", {}), ("structured_outputs", {}), ("regex", {}),
    ("logit_bias", {"verdict_token_ids": IDS}),   # explicit
    ("auto", {"verdict_token_ids": IDS}),         # auto: an openai judge with the letters' ids uses logit_bias
])
def test_openai_judge_sends_the_constraint_and_reads_the_letter(tmp_path, write_jsonl, constrain, extra):
    method = "logit_bias" if constrain == "auto" else constrain
    model, reference = _pairs(write_jsonl)
    with ConstrainingServer(method) as server:
        cfg = JudgeConfig(backend="openai", base_url=server.base_url, model="judge", constrain=constrain,
                          cache=str(tmp_path / "cache.sqlite"), backoff_base_s=0.01, **extra)
        score = run_judge(model, reference, cfg, tmp_path / "out")
        bodies = list(server.bodies)
    forced = [b for b in bodies if not b.get("logprobs")]
    assert len(forced) == 8 and all(honoured(b, method) and b["max_tokens"] == 1 for b in forced)
    assert all(not honoured(b, method) for b in bodies if b.get("logprobs"))  # the free call stays free
    rows = [json.loads(line) for line in (tmp_path / "out" / "judgments.jsonl").read_text("utf-8").splitlines()]
    assert all(r["mode"] == "constrained" and r["error"] is None for r in rows)
    # the longer answer wins (the model's for odd i): parsed from the constrained letter, both orders
    assert [r["verdict"] for r in rows] == ["reference", "reference", "model", "model"] * 2
    assert score.score == 50.0 and score.verdict_mass == pytest.approx(0.01, abs=1e-3)


def test_without_a_constraint_the_russian_start_stays_unparsed(tmp_path, write_jsonl):
    model, reference = _pairs(write_jsonl)
    with ConstrainingServer("guided_choice") as server:
        cfg = JudgeConfig(backend="openai", base_url=server.base_url, model="judge",  # auto, no token ids: off
                          cache=str(tmp_path / "cache.sqlite"), backoff_base_s=0.01)
        run_judge(model, reference, cfg, tmp_path / "out")
        assert all(b.get("logprobs") for b in server.bodies)  # no constrained call was made
    rows = [json.loads(line) for line in (tmp_path / "out" / "judgments.jsonl").read_text("utf-8").splitlines()]
    assert all(r["error"].startswith("parse: the verdict letters") for r in rows)


def test_constraint_settings_are_checked(tmp_path):
    path = tmp_path / "judge.yaml"
    path.write_text("backend: openai\nbase_url: http://127.0.0.1:9/v1\nconstrain: logit_bias\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="logit_bias needs verdict_token_ids") as caught:
        parse_judge_spec(str(path))
    assert "judge.yaml" in str(caught.value)
    with pytest.raises(ValidationError, match="one for each of A, B and C"):
        JudgeConfig(backend="openai", base_url="http://x/v1", verdict_token_ids={"A": 1, "B": 1, "C": 2})
    with pytest.raises(ValidationError):
        JudgeConfig(backend="openai", base_url="http://x/v1", constrain="guided")


def test_judge_hash_is_unchanged_without_the_new_keys():
    cfg = JudgeConfig(backend="openai", base_url="http://x/v1")
    assert "verdict_token_ids" not in cfg.judge_key()
    assert JudgeConfig(backend="openai", base_url="http://x/v1", verdict_token_ids=IDS).judge_key()[
        "verdict_token_ids"] == IDS


def test_pointwise_digits_are_constrained_the_same_way_and_logit_bias_is_refused():
    from rualign.eval.judge_backends import request_params
    from rualign.eval.pointwise import DIGITS

    def cfg(constrain, **extra):
        return JudgeConfig(backend="openai", base_url="http://x/v1", mode="pointwise", constrain=constrain, **extra)

    assert request_params(cfg("guided_choice"), "score_constrained")["guided_choice"] == list(DIGITS)
    assert request_params(cfg("structured_outputs"), "score_constrained")["structured_outputs"] == {
        "choice": list(DIGITS)}
    assert request_params(cfg("regex"), "score_constrained")["regex"] == f"[{DIGITS}]"
    assert cfg("auto", verdict_token_ids=IDS).constraint() is None  # the letters' ids say nothing about digits
    with pytest.raises(ValidationError, match="pointwise mode scores digits"):
        cfg("logit_bias", verdict_token_ids=IDS)
    # the llama.cpp grammars (and so the cache keys) of both kinds are what they were
    llama = JudgeConfig(backend="llamacpp", model="default")
    assert request_params(llama, "constrained") == {"temperature": 0.0, "max_tokens": 1, "grammar": "root ::= [ABC]"}
