"""`rualign knowledge`: log-likelihood multiple choice on tiny random models, the bundled ru_mc set, bad input."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from rualign.cli import main
from rualign.errors import DataError
from rualign.eval import knowledge
from rualign.eval.knowledge import Question, load_questions

QUESTIONS = [
    {"id": "q1", "category": "geo", "question": "Столица Франции?", "choices": ["Париж", "Лион", "Марсель"], "answer": 0},
    {"id": "q2", "category": "geo", "question": "Самая длинная река Европы?", "choices": ["Дунай", "Волга"], "answer": 1},
    {"id": "q3", "category": "math", "question": "Сколько будет 2 + 2?", "choices": ["3", "4", "5", "22"], "answer": 1},
    {"id": "q4", "category": "math", "question": "Сколько сторон у треугольника?",
     "choices": ["три стороны", "четыре", "пять сторон у него"], "answer": 0},
    {"id": "q5", "category": "lit", "question": "Кто написал «Войну и мир»?",
     "choices": ["Лев Николаевич Толстой", "Чехов"], "answer": 0},
    {"id": "q6", "category": "lit", "question": "Кто написал «Ревизора»?", "choices": ["Гоголь", "Пушкин", "Блок"],
     "answer": 0},
]


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    import torch

    from rualign.models import load_model

    torch.manual_seed(0)
    return load_model(str(tiny_model_dir)).eval(), knowledge._plain_tokenizer(str(tiny_model_dir), False)


def _questions() -> list[Question]:
    return [Question(**q) for q in QUESTIONS]


def test_batching_equals_one_at_a_time(tiny):
    model, tokenizer = tiny
    pairs = knowledge.encode_pairs(tokenizer, _questions(), "plain")
    assert len(pairs) == sum(len(q["choices"]) for q in QUESTIONS)
    lengths = {len(c) + len(x) for c, x in pairs}
    assert len(lengths) > 3  # the batches really mix lengths, so padding is exercised
    single = knowledge.sequence_logprobs(model, pairs, batch_size=1)
    batched = knowledge.sequence_logprobs(model, pairs, batch_size=7)
    assert batched == pytest.approx(single, abs=1e-4)
    assert all(v < 0 for v in single)
    one = knowledge.predict(_questions(), single)
    many = knowledge.predict(_questions(), batched)
    assert [(r["pred"], r["pred_norm"]) for r in one] == [(r["pred"], r["pred_norm"]) for r in many]


def test_logprob_matches_the_models_own_loss(tiny):
    """The summed continuation log-probability equals -(mean CE over the continuation) x its length."""
    import torch

    model, tokenizer = tiny
    context, cont = knowledge.encode_pairs(tokenizer, _questions()[:1], "plain")[0]
    ids = torch.tensor([context + cont])
    labels = torch.tensor([[-100] * len(context) + cont])
    with torch.inference_mode():
        loss = model(input_ids=ids, labels=labels).loss.item()
    (value,) = knowledge.sequence_logprobs(model, [(context, cont)])
    assert value == pytest.approx(-loss * len(cont), rel=1e-4)


def _plant(tiny_model_dir, question: Question, choice: int, steps: int = 25):
    """Train a fresh copy of the tiny model on `question` + one choice until it prefers that choice."""
    import torch

    from rualign.models import load_model

    model = load_model(str(tiny_model_dir)).train()
    tokenizer = knowledge._plain_tokenizer(str(tiny_model_dir), False)
    pairs = knowledge.encode_pairs(tokenizer, [question], "plain")
    context, cont = pairs[choice]
    ids = torch.tensor([context + cont])
    labels = torch.tensor([[-100] * len(context) + cont])
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(steps):
        optimizer.zero_grad()
        model(input_ids=ids, labels=labels).loss.backward()
        optimizer.step()
    return model.eval(), tokenizer


@pytest.mark.parametrize("planted", [0, 2])
def test_a_planted_answer_is_chosen(tiny_model_dir, planted):
    """Two plantings of different choices of the same question: each is chosen, so it is not chance."""
    question = Question(id="p", category="planted", question="Какой цвет у неба в ясный день?",
                        choices=["голубой", "зелёный", "красный"], answer=planted)
    model, tokenizer = _plant(tiny_model_dir, question, planted)
    result = knowledge.score_model(model, tokenizer, [question, *_questions()], batch_size=4)
    row = result["predictions"][0]
    assert row["id"] == "p" and row["pred"] == planted and row["pred_norm"] == planted and row["correct"]
    others = [v for i, v in enumerate(row["logprobs"]) if i != planted]
    assert row["logprobs"][planted] > max(others) + 1.0  # by a margin, not a coin flip


def test_summary_accuracy_ci_and_categories():
    predictions = [{"id": str(i), "category": "a" if i < 6 else "b", "correct": i % 2 == 0, "correct_norm": i < 6,
                    "logprobs": [-1.0, -2.0]} for i in range(10)]
    summary = knowledge.summarize(predictions, seed=1)
    assert summary["accuracy"] == pytest.approx(0.5) and summary["accuracy_norm"] == pytest.approx(0.6)
    assert summary["n"] == 10 and summary["chance"] == pytest.approx(0.5)
    assert 0 <= summary["ci_low"] < 0.5 < summary["ci_high"] <= 1
    assert summary["per_category"]["a"]["n"] == 6 and summary["per_category"]["a"]["accuracy_norm"] == 1.0
    assert summary["per_category"]["b"]["accuracy"] == pytest.approx(0.5)
    assert summary["per_category"]["b"]["ci_low_norm"] == 0.0 == summary["per_category"]["b"]["ci_high_norm"]


def test_cli_writes_knowledge_json(tmp_path, tiny_model_dir, write_jsonl):
    path = write_jsonl("q.jsonl", QUESTIONS)
    out = tmp_path / "k"
    assert main(["knowledge", "--model", str(tiny_model_dir), "--questions", str(path), "--out", str(out),
                 "--batch-size", "3"]) == 0
    result = json.loads((out / "knowledge.json").read_text(encoding="utf-8"))
    for key in ("accuracy", "ci_low", "ci_high", "accuracy_norm", "n", "per_category", "predictions", "model"):
        assert key in result
    assert result["n"] == len(QUESTIONS) and set(result["per_category"]) == {"geo", "math", "lit"}
    assert [p["id"] for p in result["predictions"]] == [q["id"] for q in QUESTIONS]
    correct = sum(p["correct"] for p in result["predictions"])
    assert result["accuracy"] == pytest.approx(correct / len(QUESTIONS))
    assert (out / "manifest.json").is_file()


# ------------------------------------------------------------------------------------------- bad input

def _bad(write_jsonl, rows) -> DataError:
    path = write_jsonl("bad.jsonl", rows)
    with pytest.raises(DataError) as info:
        load_questions(path)
    assert info.value.path == str(path)
    return info.value


def test_answer_out_of_range_names_file_and_line(write_jsonl):
    err = _bad(write_jsonl, [QUESTIONS[0], {**QUESTIONS[1], "answer": 2}])
    assert err.line == 2 and "'answer' 2 is out of range for 2 choices" in err.message
    err = _bad(write_jsonl, [{**QUESTIONS[0], "answer": -1}])
    assert err.line == 1 and "out of range" in err.message
    err = _bad(write_jsonl, [{**QUESTIONS[0], "answer": "0"}])
    assert "'answer' must be an integer" in err.message


def test_fewer_than_two_choices(write_jsonl):
    err = _bad(write_jsonl, [QUESTIONS[0], QUESTIONS[1], {**QUESTIONS[2], "choices": ["4"], "answer": 0}])
    assert err.line == 3 and "at least 2" in err.message


def test_duplicate_ids_name_both_lines(write_jsonl):
    err = _bad(write_jsonl, [QUESTIONS[0], QUESTIONS[1], {**QUESTIONS[2], "id": "q1"}])
    assert err.line == 3 and "duplicate id 'q1' (first on line 1)" in err.message


def test_other_bad_records(write_jsonl, tmp_path):
    assert "missing answer" in _bad(write_jsonl, [{k: v for k, v in QUESTIONS[0].items() if k != "answer"}]).message
    assert "unknown key(s) answr" in _bad(write_jsonl, [{**QUESTIONS[0], "answr": 1}]).message
    assert "same text twice" in _bad(write_jsonl, [{**QUESTIONS[0], "choices": ["a", "a"]}]).message
    err = _bad(write_jsonl, [QUESTIONS[0], "{not json"])
    assert err.line == 2 and "malformed JSON" in err.message
    with pytest.raises(DataError, match="questions file does not exist"):
        load_questions(tmp_path / "nope.jsonl")
    with pytest.raises(DataError, match="no bundled question set named 'nope'"):
        load_questions("bundled:nope")
    with pytest.raises(DataError, match="no bundled question set"):
        load_questions("bundled:../samples/ru_mc")


def test_cli_bad_input_exits_2_without_traceback(tmp_path, write_jsonl, capsys):
    path = write_jsonl("bad.jsonl", [{**QUESTIONS[0], "answer": 5}])
    assert main(["knowledge", "--questions", str(path), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert f"{path}:1" in err and "out of range" in err and "Traceback" not in err


# ------------------------------------------------------------------------------------------- bundled set

def test_bundled_ru_mc_is_valid_and_its_readme_counts_match():
    questions = load_questions("bundled:ru_mc")  # validates every record (answer index, choices, ids)
    assert len(questions) >= 200
    counts: dict[str, int] = {}
    for q in questions:
        counts[q.category] = counts.get(q.category, 0) + 1
    assert set(counts) == {"geography", "history", "literature", "science", "maths", "grammar", "spelling"}
    readme = (Path(knowledge.__file__).parent.parent / "data" / "samples" / "ru_mc.README.md").read_text("utf-8")
    table = dict(re.findall(r"^\| (\w+) \| (\d+) \|", readme, flags=re.M))
    assert {k: int(v) for k, v in table.items()} == counts
    assert f"**{len(questions)}**" in readme and f"{len(questions)} questions" in readme
    positions = [q.answer for q in questions]
    assert max(positions.count(i) for i in range(4)) < 0.4 * len(questions)  # keys are not all "A"
    assert len({q.question + "|".join(q.choices) for q in questions}) == len(questions)


# ------------------------------------------------------------------------------------------- eval.knowledge

def test_experiment_knowledge_key_adds_a_column_and_a_shared_node(tmp_path, tiny_model_dir, write_jsonl):
    import csv

    from rualign.pipeline import plan_files, run_plan
    from rualign.pipeline import execute

    questions = write_jsonl("q.jsonl", QUESTIONS)
    (tmp_path / "prompts.jsonl").write_text(json.dumps({"id": "p1", "prompt": "Привет"}, ensure_ascii=False) + "\n",
                                            encoding="utf-8")
    path = tmp_path / "exp.yaml"
    path.write_text(f"""\
defaults:
  model: {tiny_model_dir}
  eval:
    prompts: prompts.jsonl
    generation: {{max_new_tokens: 3, batch_size: 2}}
    reference: {{model: {tiny_model_dir}, generation: {{max_new_tokens: 2}}}}
    judge: local:{tiny_model_dir}
    knowledge: {questions.name}
    knowledge_limit: 5
experiments:
  - name: base
  - name: base-short
    eval: {{generation: {{max_new_tokens: 2}}}}
""", encoding="utf-8")
    out = tmp_path / "runs"
    plan = plan_files([path], out)
    knowledge_nodes = [n for n in plan.nodes.values() if n.kind == "knowledge"]
    assert len(knowledge_nodes) == 1 and knowledge_nodes[0].used_by == ["base", "base-short"]  # one model, once
    folders, outcome = run_plan(plan, out)
    assert outcome[knowledge_nodes[0].id] == "ran"
    for folder in folders:
        result = json.loads((folder / "knowledge.json").read_text(encoding="utf-8"))
        assert result["n"] == 5 and len(result["predictions"]) == 5
    assert main(["report", *map(str, folders), "--out", str(tmp_path / "report")]) == 0
    with open(tmp_path / "report" / "results.csv", encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle))
    expected = 100 * json.loads((folders[0] / "knowledge.json").read_text())["accuracy"]
    assert float(rows[0]["knowledge"]) == pytest.approx(expected) and rows[0]["knowledge_norm"] != ""
    assert "knowledge" in (tmp_path / "report" / "report.md").read_text(encoding="utf-8")

    # More questions: only the knowledge node is redone (answers and judgments stay cached).
    path.write_text(path.read_text(encoding="utf-8").replace("knowledge_limit: 5", "knowledge_limit: 6"),
                    encoding="utf-8")
    _, outcome = run_plan(plan_files([path], out), out)
    assert sorted(k.split("/")[0] for k, v in outcome.items() if v == "ran") == ["knowledge"]
    assert execute.RUNNERS["knowledge"]  # a node kind of its own


def test_missing_knowledge_file_is_a_plan_error(tmp_path, tiny_model_dir):
    from rualign.pipeline import plan_files

    (tmp_path / "prompts.jsonl").write_text('{"id": "p1", "prompt": "x"}\n', encoding="utf-8")
    path = tmp_path / "exp.yaml"
    path.write_text(f"name: a\nmodel: {tiny_model_dir}\neval: {{prompts: prompts.jsonl, reference: "
                    f"{{model: {tiny_model_dir}}}, judge: local:{tiny_model_dir}, knowledge: nowhere.jsonl}}\n",
                    encoding="utf-8")
    with pytest.raises(DataError, match="questions file does not exist"):
        plan_files([path], tmp_path / "runs")
