"""Several references per experiment: a judge node per reference, per-reference run folders and rows, and a
pooled score (eval/pooled.py) that equals a hand computation; bad reference lists are refused clearly."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from fault_server import LETTER_PROBS, FaultServer

from rualign.cli import main
from rualign.errors import ConfigError, RualignError
from rualign.eval.pooled import pooled_score
from rualign.pipeline import plan_files, run_plan
from rualign.records import PromptValue, Score

PROMPTS = [{"id": f"p{i}", "prompt": f"Вопрос {i}: назови город на букву {c}."} for i, c in enumerate("АБВГДЕ")]


def _answers(texts: list[str]) -> list[dict]:
    return [{"id": p["id"], "prompt": [{"role": "user", "content": p["prompt"]}], "answer": text,
             "answer_tokens": len(text), "tokenizer": "default", "finish_reason": "stop"}
            for p, text in zip(PROMPTS, texts)]


def _write(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def _setup(tmp_path: Path, tiny: Path, judge: str, references: str) -> Path:
    """Two references as answer files: `short` (one letter: the model is longer on almost every prompt) and
    `long` (the model is shorter); a multi-reference experiment and a single-reference one against `short`."""
    _write(tmp_path / "prompts.jsonl", [{"id": p["id"], "prompt": p["prompt"]} for p in PROMPTS])
    _write(tmp_path / "short.jsonl", _answers(["Я"] * len(PROMPTS)))
    _write(tmp_path / "long.jsonl", _answers(["Очень длинный и подробный ответ про город. " * 8] * len(PROMPTS)))
    path = tmp_path / "exp.yaml"
    path.write_text(f"""\
defaults:
  model: {tiny}
  eval:
    prompts: prompts.jsonl
    generation: {{max_new_tokens: 8, batch_size: 3}}
    judge: {judge}
experiments:
  - name: multi
    eval:
      reference: {references}
  - name: single
    eval:
      reference: {{answers: short.jsonl}}
""", encoding="utf-8")
    return path


TWO = "[{name: short, answers: short.jsonl}, {name: long, answers: long.jsonl}]"


def _judge_value(model: str, reference: str) -> float:
    """The fake judge (fault_server): the longer answer wins with these letter probabilities; per prompt the
    mean of both orders is the winner's probability plus half the tie's, renormalised over the letters."""
    mass = LETTER_PROBS["win"] + LETTER_PROBS["win_space"] + LETTER_PROBS["other"] + LETTER_PROBS["tie"]
    win = (LETTER_PROBS["win"] + LETTER_PROBS["win_space"] + LETTER_PROBS["tie"] / 2) / mass
    if model.strip() == reference.strip():
        return 0.5
    return win if len(model) > len(reference) else 1 - win if len(model) < len(reference) else 0.5


def test_two_references_give_rows_per_reference_and_the_pooled_score(tmp_path, tiny_model_dir, capsys):
    with FaultServer(fault_rate=0.0) as server:
        judge = (f"{{backend: openai, base_url: '{server.base_url}', model: fake, concurrency: 4, "
                 f"cache: '{tmp_path / 'cache.sqlite'}'}}")
        path = _setup(tmp_path, tiny_model_dir, judge, TWO)
        out = tmp_path / "runs"
        plan = plan_files([path], out)
        judges = [n for n in plan.nodes.values() if n.kind == "judge"]
        # multi vs short and single are one node (the reference's name is not hashed), multi vs long another
        assert sorted(n.label for n in judges) == ["judge multi vs long", "judge multi vs short"]
        assert sorted(judges[0].used_by + judges[1].used_by) == ["multi", "multi", "single"]
        assert main(["run", str(path), "--out", str(out)]) == 0
    folder = out / "multi"
    assert not (folder / "judge").exists() and (folder / "run.json").is_file()
    model = [json.loads(line)["answer"] for line in (folder / "answers.jsonl").read_text("utf-8").splitlines()]
    refs = {"short": ["Я"] * len(PROMPTS), "long": ["Очень длинный и подробный ответ про город. " * 8] * len(PROMPTS)}
    hand = {name: [_judge_value(m, r) for m, r in zip(model, texts)] for name, texts in refs.items()}
    expected_pooled = 100 * np.mean(hand["short"] + hand["long"])
    pooled = json.loads((folder / "pooled.json").read_text("utf-8"))
    assert pooled["score"] == pytest.approx(expected_pooled, abs=0.01)
    assert pooled["ci_low"] <= pooled["score"] <= pooled["ci_high"]
    assert pooled["n_prompts"] == len(PROMPTS) and pooled["n_pairs"] == 2 * len(PROMPTS)
    assert [r["name"] for r in pooled["references"]] == ["short", "long"]
    for name in ("short", "long"):
        sub = folder / "references" / name
        score = json.loads((sub / "judge" / "score.json").read_text("utf-8"))
        assert score["score"] == pytest.approx(100 * np.mean(hand[name]), abs=0.01)
        assert json.loads((sub / "run.json").read_text("utf-8"))["name"] == f"multi vs {name}"
    # The single-reference experiment keeps today's layout and shares the judge node with "multi vs short".
    assert (out / "single" / "judge" / "score.json").is_file() and not (out / "single" / "pooled.json").exists()
    single = json.loads((out / "single" / "judge" / "score.json").read_text("utf-8"))
    assert single["score"] == pytest.approx(100 * np.mean(hand["short"]), abs=0.01)

    rows = list(csv.DictReader((out / "report" / "results.csv").open(encoding="utf-8")))
    by_name = {r["name"]: r for r in rows}
    assert set(by_name) == {"multi vs short", "multi vs long", "single"}
    for name in ("short", "long"):
        row = by_name[f"multi vs {name}"]
        assert row["reference"] == name and row["experiment"] == "multi"
        assert float(row["score"]) == pytest.approx(100 * np.mean(hand[name]), abs=0.01)
        assert float(row["pooled"]) == pytest.approx(expected_pooled, abs=0.01)
    assert by_name["single"]["reference"] == "" and by_name["single"]["pooled"] == ""
    # The joint lc fit is per reference: "multi vs short" and "single" share short.jsonl (one fit of two runs);
    # "multi vs long" is alone against long.jsonl, so it has no joint lc.
    assert by_name["multi vs short"]["lc"] != "" and by_name["single"]["lc"] != ""
    assert by_name["multi vs long"]["lc"] == ""
    md = (out / "report" / "report.md").read_text("utf-8")
    assert "## Pooled over references" in md and f"{pooled['score']:.1f} [" in md
    assert 'id="pooled-table"' in (out / "report" / "report.html").read_text("utf-8")
    assert "pooled over references: multi" in capsys.readouterr().out

    # The leaderboard takes the multi-reference folder too: one group (one joint fit) per reference.
    assert main(["leaderboard", str(folder), str(out / "single"), "--out", str(tmp_path / "board"),
                 "--n-boot", "100"]) == 0
    groups = json.loads((tmp_path / "board" / "coefficients.json").read_text("utf-8"))
    assert sorted(Path(g["reference"]).name for g in groups) == ["long.jsonl", "short.jsonl"]

    from rualign.eval.agreement import judge_classes

    with pytest.raises(RualignError, match="several references"):  # agreement needs one reference's folder
        judge_classes(folder)
    assert judge_classes(folder / "references" / "short")[0] == "multi vs short"

    # A reference name edited into pooled.json cannot make the report read outside the run folder.
    pooled["references"][1]["name"] = "../../single"
    (folder / "pooled.json").write_text(json.dumps(pooled), encoding="utf-8")
    with pytest.raises(RualignError, match="outside the folder"):
        from rualign.report.build import load_runs

        load_runs([folder])


def test_single_reference_results_csv_keeps_its_columns(tmp_path):
    from rualign.report.tables import CSV_COLUMNS, csv_columns

    assert csv_columns([{"reference": None}]) == CSV_COLUMNS
    assert "pooled" in csv_columns([{"reference": "a"}]) and "pooled" not in CSV_COLUMNS


def test_dry_run_shows_a_judge_stage_per_reference(tmp_path, tiny_model_dir, capsys):
    path = _setup(tmp_path, tiny_model_dir, "llamacpp:default", TWO)
    assert main(["run", str(path), "--out", str(tmp_path / "runs"), "--dry-run"]) == 0
    printed = capsys.readouterr().out
    assert "judge multi vs short" in printed and "judge multi vs long" in printed


@pytest.mark.parametrize("references, message", [
    ("[{name: a, answers: short.jsonl}, {name: a, answers: long.jsonl}]", "duplicate reference name(s) a"),
    ("[{name: ../evil, answers: short.jsonl}, {name: b, answers: long.jsonl}]", "reference[0].name"),
    ("[{name: a/b, answers: short.jsonl}]", "cannot be a folder name"),
    ("[{answers: short.jsonl}]", "missing required key 'reference[0].name'"),
    ("[]", "reference list is empty"),
])
def test_bad_reference_lists_are_refused_with_file_and_line(tmp_path, tiny_model_dir, references, message):
    path = _setup(tmp_path, tiny_model_dir, "llamacpp:default", references)
    with pytest.raises(ConfigError) as caught:
        plan_files([path], tmp_path / "runs")
    text = str(caught.value)
    assert message in text and "exp.yaml" in text and "exp.yaml:10:" in text


def _score(values: list[float | None]) -> Score:
    per_prompt = [PromptValue(id=f"p{i}", value=v, orders=2) for i, v in enumerate(values)]
    return Score(score=50.0, ci_low=0.0, ci_high=100.0, n=len(values), per_prompt=per_prompt)


def test_pooled_score_is_the_mean_over_prompt_reference_pairs_with_a_prompt_bootstrap():
    a = _score([1.0, 0.0, 1.0, None])
    b = _score([0.5, 0.5, None, 0.25])
    pooled = pooled_score({"a": a, "b": b}, n_boot=4000)
    values = [1.0, 0.0, 1.0, 0.5, 0.5, 0.25]  # every (prompt, reference) pair with a value
    assert pooled.score == pytest.approx(100 * np.mean(values), abs=0.01)
    assert pooled.n_prompts == 4 and pooled.n_pairs == 6
    # By hand: prompt sums S = (1.5, 0.5, 1.0, 0.25), counts N = (2, 2, 1, 1), resampled together.
    rng = np.random.default_rng(0)
    draws = rng.integers(0, 4, size=(4000, 4))
    s, n = np.array([1.5, 0.5, 1.0, 0.25]), np.array([2, 2, 1, 1])
    low, high = np.quantile(s[draws].sum(1) / n[draws].sum(1), [0.025, 0.975])
    assert pooled.ci_low == pytest.approx(100 * low, abs=0.01) and pooled.ci_high == pytest.approx(100 * high, abs=0.01)
    with pytest.raises(RualignError, match="at least two references"):
        pooled_score({"a": a})
