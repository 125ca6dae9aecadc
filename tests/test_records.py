"""Hand-off records (rualign.records, runs.Manifest): one reader and one writer per file, old files still load,
unknown keys survive, every reader takes a UTF-8 BOM, and docs/formats.md is generated from the models."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rualign.errors import DataError, RualignError
from rualign.records import (AnswerRecord, Judgment, Message, RunInfo, Score, docs_markdown, read_answers, read_judgments,
                             read_run_info, read_score, write_answers, write_judgments, write_score)
from rualign.runs import Manifest, read_jsonl, read_manifest, write_manifest

DOCS = Path(__file__).resolve().parents[1] / "docs" / "formats.md"
OLD_ANSWER = {"id": "q1", "prompt": [{"role": "user", "content": "Привет"}], "category": None, "answer": "Здравствуйте",
              "answer_tokens": 3, "tokenizer": "default", "finish_reason": "stop",
              "generator": {"backend": "hf", "model": "default", "adapter": None},
              "params": {"max_new_tokens": 8, "temperature": 0.0, "top_p": 1.0, "seed": 0}}


def test_docs_formats_md_is_generated_from_the_models():
    text = DOCS.read_text(encoding="utf-8")
    assert docs_markdown() in text, "docs/formats.md is stale: run `python -m rualign.records docs/formats.md`"


def test_old_answer_file_loads_and_round_trips_with_version(tmp_path):
    path = tmp_path / "answers.jsonl"
    path.write_text(json.dumps({**OLD_ANSWER, "user_note": "kept"}, ensure_ascii=False) + "\n", encoding="utf-8")
    [record] = read_answers(path)
    assert record.version == 1 and record.answer_tokens == 3 and record.generator.backend == "hf"
    write_answers(tmp_path / "again.jsonl", [record])
    again = json.loads((tmp_path / "again.jsonl").read_text(encoding="utf-8"))
    assert again == {**OLD_ANSWER, "user_note": "kept", "version": 1}  # same keys and values, plus version


def test_a_newer_format_version_is_refused_with_file_and_line(tmp_path):
    path = tmp_path / "answers.jsonl"
    path.write_text(json.dumps({**OLD_ANSWER, "version": 99}) + "\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"answers\.jsonl:1: .*version 99 is newer"):
        read_answers(path)


def test_every_jsonl_reader_accepts_a_utf8_bom(tmp_path):
    """runs.read_jsonl rejected a BOM while textio accepted it; now every reader goes through textio."""
    path = tmp_path / "answers.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + (json.dumps(OLD_ANSWER, ensure_ascii=False) + "\n").encode("utf-8"))
    assert read_jsonl(path)[0]["id"] == "q1"
    assert read_answers(path)[0].id == "q1"
    judgments = tmp_path / "judgments.jsonl"
    judgments.write_bytes(b"\xef\xbb\xbf" + json.dumps({"id": "q1", "order": "model_first"}).encode() + b"\n")
    assert read_judgments(judgments)[0].order == "model_first"
    score = tmp_path / "score.json"
    score.write_bytes(b"\xef\xbb\xbf" + json.dumps({"score": 50, "ci_low": 40, "ci_high": 60, "n": 1,
                                                     "per_prompt": [{"id": "q1", "value": 0.5}]}).encode())
    assert read_score(score).per_prompt[0].value == 0.5


def test_integer_ids_and_string_prompts_are_normalised(tmp_path):
    path = tmp_path / "answers.jsonl"
    path.write_text(json.dumps({"id": 7, "prompt": "Привет", "answer": "x"}, ensure_ascii=False) + "\n",
                    encoding="utf-8")
    [record] = read_answers(path)
    assert record.id == "7" and record.prompt == [Message(role="user", content="Привет")]


def test_work_file_reading_skips_bad_rows_and_later_lines_win(tmp_path):
    path = tmp_path / "a.work.jsonl"
    rows = [OLD_ANSWER, {"id": "q2", "answer": ["not a string"]}, {**OLD_ANSWER, "answer": "второй"}]
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    assert [r.answer for r in read_answers(path, strict=False)] == ["второй"]
    with pytest.raises(DataError, match=r":2: answer record lacks 'id' or a string 'answer'"):
        read_answers(path)


def test_judgments_and_score_round_trip(tmp_path):
    rows = [Judgment(id="q1", order="model_first", mode="logprob", preference=0.75, verdict="model",
                     probs={"A": 0.7, "B": 0.2, "tie": 0.1}, usage={"prompt_tokens": 5, "completion_tokens": 1})]
    write_judgments(tmp_path / "judgments.jsonl", rows)
    assert read_judgments(tmp_path / "judgments.jsonl") == rows
    score = Score(score=75.0, ci_low=75.0, ci_high=75.0, n=1, per_prompt=[{"id": "q1", "value": 0.75}],
                  first_slot_win_rate=0.75)
    write_score(tmp_path / "score.json", score)
    assert read_score(tmp_path) == score


def test_score_errors_name_the_file_and_what_is_missing(tmp_path):
    (tmp_path / "score.json").write_text('{"score": 50}', encoding="utf-8")
    with pytest.raises(RualignError, match=r"score\.json: score\.json lacks ci_low, ci_high, n, per_prompt"):
        read_score(tmp_path)
    (tmp_path / "score.json").write_text('{"score": 50, "ci_low": 1, "ci_high": 2, "n": "many", "per_prompt": []}',
                                         encoding="utf-8")
    with pytest.raises(RualignError, match=r"'n': Input should be a valid integer"):
        read_score(tmp_path)


def test_run_info_defaults_for_old_minimal_files(tmp_path):
    (tmp_path / "run.json").write_text('{"stages": [{"name": "sft", "method": "sft"}], "extra": 1}', encoding="utf-8")
    info = read_run_info(tmp_path / "run.json")
    assert info.name is None and info.description == "" and info.stages[0].method == "sft"
    assert isinstance(info, RunInfo) and info.model_extra == {"extra": 1}
    (tmp_path / "run.json").write_text('{"stages": "sft"}', encoding="utf-8")
    with pytest.raises(DataError, match="'stages'"):
        read_run_info(tmp_path / "run.json")


def test_manifest_typed_with_stage_fields_as_attributes(tmp_path):
    written = write_manifest(tmp_path, stage="train", config_hash="abc", model_path="/m", steps=3)
    read = read_manifest(tmp_path)
    assert isinstance(read, Manifest) and read == written
    assert read.stage == "train" and read.model_path == "/m" and read.steps == 3 and read.version == 1
    (tmp_path / "manifest.json").write_text("{not json", encoding="utf-8")
    assert read_manifest(tmp_path) is None  # unreadable: "not finished", never trusted


def test_answer_record_model_is_what_generate_writes():
    fields = set(AnswerRecord.model_fields)
    assert {"id", "prompt", "answer", "answer_tokens", "generator", "params", "version"} <= fields
