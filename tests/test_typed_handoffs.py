"""Typed hand-off records must not move what is already on disk: judge cache keys, answers.jsonl bytes,
judge cards and score.json files written before the records existed."""

from __future__ import annotations

import json

import pytest

from rualign.eval.judge import _prompt_key, build_jobs, call_key, load_template, render
from rualign.eval.schema import parse_judge_spec
from rualign.records import (AnswerRecord, JudgeCard, Message, read_answers, read_judge_card, read_score,
                             write_answers)

_TWO_TURNS = [{"role": "system", "content": "Будь краток."}, {"role": "user", "content": "Что такое {prompt}?"}]
# Judge call keys computed by rualign before prompts were typed Messages (commit 7b1b043): a changed key
# would make every cached verdict a miss, so they are pinned here.
PINNED = {("a", "model_first", "logprob"): "18652fd26b468ee1d4dfa84438e8d1baab7a5dcd3391044a62be7324696359b8",
          ("a", "model_first", "verdict"): "c1e27e324f91ebae9e2e30029c58206ac34c998b05b83dad9ce528a428523160",
          ("a", "reference_first", "logprob"): "71dae168474141bab56faa13e67695356eecb80819066030003bde83e1167a3a",
          ("a", "reference_first", "verdict"): "24003bf5eff9d7a656cb7c971f8477e724af5ddc25b7053aec535ed53edd530e",
          ("b", "model_first", "logprob"): "00ec25f182012d23733e9de00c6d2209dce898a7b253bdec6e97dc8f2cb90b37",
          ("b", "model_first", "verdict"): "70b4ce8cbeda8fdbcb9946b3987ffc54eafd396af592501c35f62b3aaf35af98",
          ("b", "reference_first", "logprob"): "04fed9df8879bffc0c0a81eb84dbf2527710f8e5a722ab09d6079b3f48fe8647",
          ("b", "reference_first", "verdict"): "234ac02b5a6e62fff436b2593ffbfc34185e20615fdd060404a920ec6c7fcdbc"}


def _records(answer_b: str, second: str) -> dict[str, AnswerRecord]:
    return {"a": AnswerRecord(id="a", prompt="Привет {answer_a}", answer=answer_b),
            "b": AnswerRecord(id="b", prompt=_TWO_TURNS, answer=second)}


def test_judge_call_keys_are_unchanged():
    cfg = parse_judge_spec("openai:fake@http://127.0.0.1:9/v1")
    template = load_template(cfg.template)
    jobs = build_jobs(_records("Ответ A", " Да "), _records("Ответ B", "Нет"))
    keys = {(job.id, job.order, kind): call_key("openai:fake@http://127.0.0.1:9/v1", cfg, template, job, kind,
                                                render(template, job.prompt, job.answer_a, job.answer_b, kind))
            for job in jobs for kind in ("logprob", "verdict")}
    assert keys == PINNED
    assert json.loads(_prompt_key(_records("x", "y")["b"])) == [["system", "Будь краток."],
                                                                ["user", "Что такое {prompt}?"]]


def test_answers_file_round_trips_byte_for_byte(tmp_path):
    row = {"id": "b", "prompt": _TWO_TURNS + [{"role": "assistant", "content": "Нет.", "name": "bot"}],
           "category": None, "answer": "Да"}
    written = tmp_path / "written.jsonl"
    write_answers(written, [AnswerRecord.model_validate(row)])
    [record] = read_answers(written)
    assert record.prompt[0] == Message(role="system", content="Будь краток.")
    assert record.prompt[2].model_dump() == {"role": "assistant", "content": "Нет.", "name": "bot"}  # extras kept
    again = tmp_path / "again.jsonl"
    write_answers(again, [record])
    assert again.read_bytes() == written.read_bytes()
    assert json.loads(written.read_text(encoding="utf-8"))["prompt"][0] == {"role": "system",
                                                                             "content": "Будь краток."}


OLD_CARD = {"accuracy": 0.5, "ci_low": 0.38, "ci_high": 0.62, "n": 16, "n_pairs": 16, "failed_pairs": 0,
            "first_slot_rate": 0.93, "order_flip_rate": 0.9, "tie_rate": 0.0, "verdict_mass": 0.18,
            "length_bias": {"chosen_shorter": {"accuracy": 0.5, "ci_low": 0.2, "ci_high": 0.8, "n": 8},
                            "chosen_longer": {"accuracy": 0.5, "ci_low": 0.2, "ci_high": 0.8, "n": 8}, "gap": 0.0},
            "per_category": {"style": {"accuracy": 0.5, "ci_low": 0.2, "ci_high": 0.8, "n": 8}},
            "validated": False, "reasons": ["accuracy 0.50 [0.38, 0.62] is not above chance"],
            "judge": {"name": "llamacpp:default", "mode": "logprob", "template_version": "v1", "key": "abc",
                      "config": {"backend": "llamacpp"}},
            "gold": {"name": "bundled:gold_ru", "path": "/x/gold_ru.jsonl", "hash": "h"}}


def test_judge_card_written_before_the_record_loads(tmp_path):
    path = tmp_path / "judge_card.json"
    path.write_text(json.dumps(OLD_CARD), encoding="utf-8")  # no "version": written before the record
    card = read_judge_card(path)
    assert card.version == 1 and card.validated is False and card.judge.key == "abc"
    assert card.length_bias.chosen_longer.n == 8 and card.per_category["style"].accuracy == 0.5
    assert {k: v for k, v in card.dump().items() if k != "version"} == OLD_CARD


def test_judge_card_out_of_range_is_a_data_error(tmp_path):
    from rualign.errors import DataError

    path = tmp_path / "judge_card.json"
    path.write_text(json.dumps({**OLD_CARD, "accuracy": 1.5}), encoding="utf-8")
    with pytest.raises(DataError, match="accuracy"):
        read_judge_card(path)
    assert JudgeCard().validated is False  # an empty card vouches for nothing


def test_score_with_an_old_judge_card_summary_loads(tmp_path):
    summary = {"status": "unvalidated", "reasons": ["at chance"], "accuracy": 0.5, "ci_low": 0.38, "ci_high": 0.62,
               "verdict_mass": 0.18, "first_slot_rate": 0.93, "gold": "bundled:gold_ru", "key": "abc"}
    score = {"score": 50.0, "ci_low": 40.0, "ci_high": 60.0, "n": 1, "per_prompt": [{"id": "a", "value": 0.5}],
             "judge_card": summary}
    path = tmp_path / "score.json"
    path.write_text(json.dumps(score), encoding="utf-8")
    loaded = read_score(path)
    assert loaded.judge_card.status == "unvalidated" and loaded.judge_card.reasons == ["at chance"]
    assert loaded.dump()["judge_card"] == summary


# A judge cache row as rualign wrote it before JudgeReply (json.dumps of the backend's dict): -Infinity and a
# key the server added included.
OLD_CACHE_VALUE = ('{"text": "A", "top_logprobs": [{"token": "A", "logprob": -0.1, "bytes": [65]}, '
                   '{"token": "В", "logprob": -Infinity}], "finish_reason": "length", '
                   '"usage": {"prompt_tokens": 12, "completion_tokens": 1}}')


def test_judge_cache_entries_written_before_the_reply_record_load(tmp_path):
    import asyncio
    import math
    import sqlite3

    from rualign.eval.cache import JudgeCache
    from rualign.eval.judge import Job, _Run, call_key

    cfg = parse_judge_spec("openai:fake@http://127.0.0.1:9/v1")
    template = load_template(cfg.template)
    job = Job(0, "a", "model_first", [Message(role="user", content="q")], "x", "y")
    messages = render(template, job.prompt, job.answer_a, job.answer_b, "logprob")
    key = call_key("fake", cfg, template, job, "logprob", messages)
    path = tmp_path / "cache.sqlite"
    JudgeCache(path).close()
    with sqlite3.connect(path) as db:
        db.execute("INSERT INTO calls (key, created, value) VALUES (?, 0, ?)", (key, OLD_CACHE_VALUE))

    class NoCalls:
        identity = "fake"

        async def complete(self, messages, kind):
            raise AssertionError("a cached call reached the backend")

    with JudgeCache(path) as cache:
        reply, hit = asyncio.run(_Run(cfg, template, NoCalls(), cache).call(job, "logprob", messages))
        assert hit and reply.text == "A" and reply.usage.prompt_tokens == 12
        assert reply.top_logprobs[0].model_dump() == {"token": "A", "logprob": -0.1, "bytes": [65]}
        assert reply.top_logprobs[1].logprob == -math.inf
        cache.put("again", reply.dump())  # what a fresh call stores: the same JSON object
        assert cache.get("again") == cache.get(key) == json.loads(OLD_CACHE_VALUE)


def test_a_malformed_reply_is_a_call_failure():
    from rualign.eval.client import CallFailed
    from rualign.eval.judge_reply import checked_value

    good = json.loads(OLD_CACHE_VALUE)
    with pytest.raises(CallFailed, match="usage.completion_tokens"):
        checked_value({**good, "usage": {"prompt_tokens": 1, "completion_tokens": True}})
    with pytest.raises(CallFailed, match="finish_reason"):
        checked_value({**good, "finish_reason": 3})
    with pytest.raises(CallFailed, match="top_logprobs.0.logprob"):
        checked_value({**good, "top_logprobs": [{"token": "A", "logprob": 0.5}]})
