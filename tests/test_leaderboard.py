"""`rualign leaderboard` end to end on simulated files; style features on Russian markdown; tokenizer identity."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import numpy as np
import pytest
import yaml

from joint_sim import simulate, write_runs
from rualign.cli import main
from rualign.eval import tokenizer_id
from rualign.eval.style import strip_code, style_of

MARKDOWN_RU = """## Как сварить борщ

Вот **главное**, что нужно знать:

- свёкла и капуста;
- **мясной** бульон;
1. Сварите бульон.
2. Добавьте овощи.

```python
# это не заголовок
- и это не список
print("hello world, this is English code")
```
Подробнее: https://example.com/borscht-recipe и `len(x)`."""


def test_style_features_on_russian_markdown():
    st = style_of(MARKDOWN_RU)
    words = 21  # prose words (list numbers included) once code, inline code and the URL are removed
    prose = strip_code(MARKDOWN_RU)
    assert "print" not in prose and "example.com" not in prose and "len(x)" not in prose
    assert len(re.findall(r"\w+", prose)) == words
    assert st.header_density == pytest.approx(100 / words)
    assert st.list_density == pytest.approx(400 / words)
    assert st.bold_density == pytest.approx(200 / words)
    assert st.latin_share == 0.0  # the English is all inside code


def test_latin_share_counts_language_drift_outside_code():
    assert style_of("Это полностью русский ответ.").latin_share == 0.0
    mixed = style_of("Ответ: the model is good")  # 5 Cyrillic letters, 14 Latin
    assert mixed.latin_share == pytest.approx(14 / 19)
    assert style_of("").latin_share == 0.0 and style_of("").header_density == 0.0
    assert style_of("```\nonly code\n```").latin_share == 0.0


def _yaml(folder: Path, reference: Path, runs: list[dict]) -> Path:
    path = folder / "board.yaml"
    path.write_text(yaml.safe_dump({"reference": reference.name, "runs": runs}), encoding="utf-8")
    return path


def test_leaderboard_from_yaml_writes_every_output(tmp_path, capsys):
    data, truth = simulate(n_runs=3, n_prompts=150, theta=np.array([0.8, 0.0, -0.8]),
                           mean_tokens=np.array([300, 300, 300]), seed=7)
    reference, runs = write_runs(tmp_path / "in", data, markdown_runs=("run0",))
    config = _yaml(tmp_path / "in", reference, runs)
    out = tmp_path / "board"
    assert main(["leaderboard", str(config), "--out", str(out), "--n-boot", "200"]) == 0
    rows = list(csv.DictReader((out / "leaderboard.csv").open(encoding="utf-8")))
    for column in ("name", "n", "score", "ci_low", "ci_high", "lc", "lc_ci_low", "lc_ci_high", "sc", "sc_ci_low",
                   "sc_ci_high", "mean_tokens"):
        assert column in rows[0]
    by_name = {r["name"]: r for r in rows}
    assert float(by_name["run0"]["lc"]) > float(by_name["run1"]["lc"]) > float(by_name["run2"]["lc"])
    for r in rows:
        assert int(r["n"]) == 150
        assert float(r["lc_ci_low"]) <= float(r["lc"]) <= float(r["lc_ci_high"])
    fitted = json.loads((out / "coefficients.json").read_text())[0]
    assert {c["name"] for c in fitted["coefficients"]["sc"]} >= {"length", "order", "header_density"}
    assert fitted["not_estimated"] == ["latin_share"]  # no answer has any Latin: nothing to fit
    assert (out / "leaderboard.png").stat().st_size > 1000
    md = (out / "leaderboard.md").read_text()
    assert "| 1 | run0 |" in md and "Not estimated" in md and "latin_share" in md
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["stage"] == "leaderboard" and len(manifest["inputs"]) == 3
    assert "run0" in capsys.readouterr().out


def test_leaderboard_from_run_folders(tmp_path):
    data, _ = simulate(n_runs=2, n_prompts=60, seed=8)
    reference, runs = write_runs(tmp_path / "in", data)
    folders = []
    for run in runs:
        folder = tmp_path / run["name"]
        (folder / "judge").mkdir(parents=True)
        (folder / "answers.jsonl").write_bytes((tmp_path / "in" / run["answers"]).read_bytes())
        (folder / "judge" / "judgments.jsonl").write_bytes((tmp_path / "in" / run["judgments"]).read_bytes())
        (folder / "run.json").write_text(json.dumps({"name": f"exp-{run['name']}",
                                                     "reference_answers": str(reference)}))
        folders.append(str(folder))
    score = {"score": 50.0, "ci_low": 40.0, "ci_high": 60.0, "n": 60, "per_prompt": [],
             "judge": {"name": "tiny-judge"}, "judge_card": {"status": "unvalidated", "reasons": ["at chance"]}}
    (Path(folders[0]) / "judge" / "score.json").write_text(json.dumps(score), encoding="utf-8")
    assert main(["leaderboard", *folders, "--out", str(tmp_path / "out"), "--n-boot", "100"]) == 0
    rows = {r["name"]: r for r in csv.DictReader((tmp_path / "out" / "leaderboard.csv").open())}
    assert sorted(rows) == ["exp-run0", "exp-run1"]
    assert rows["exp-run0"]["judge_status"] == "unvalidated" and rows["exp-run0"]["judge"] == "tiny-judge"
    assert "UNVALIDATED" in (tmp_path / "out" / "leaderboard.md").read_text()


def test_tokenizer_mismatch_is_refused_naming_both(tmp_path, capsys):
    data, _ = simulate(n_runs=2, n_prompts=20, seed=9)
    reference, runs = write_runs(tmp_path, data, tokenizer="default@sha256:1111",
                                 reference_tokenizer="default@sha256:2222")
    config = _yaml(tmp_path, reference, runs)
    assert main(["leaderboard", str(config), "--out", str(tmp_path / "o"), "--n-boot", "100"]) == 2
    err = capsys.readouterr().err
    assert "default@sha256:1111" in err and "default@sha256:2222" in err
    assert "run0.answers.jsonl" in err and "reference.jsonl" in err


def test_tokenizer_identity_rules():
    assert tokenizer_id.same("default@sha256:aa", "default@sha256:aa")
    assert not tokenizer_id.same("default@sha256:aa", "default@sha256:bb")
    assert tokenizer_id.same("default", "default@sha256:bb")  # an old file carries only the name
    assert not tokenizer_id.same("default", "Qwen/Qwen2.5-7B")
    with pytest.raises(Exception, match="Qwen"):
        tokenizer_id.check_same("a.jsonl", [_answer(tokenizer="default")], "b.jsonl",
                                [_answer(tokenizer="Qwen/Qwen2.5-7B")])
    assert tokenizer_id.check_same("a", [_answer()], "b", [_answer()]) is None


def test_yaml_entry_needs_answers_and_judgments(tmp_path, capsys):
    path = tmp_path / "bad.yaml"
    path.write_text("reference: ref.jsonl\nruns:\n  - name: x\n    answers: a.jsonl\n", encoding="utf-8")
    assert main(["leaderboard", str(path), "--out", str(tmp_path / "o")]) == 2
    assert "judgments" in capsys.readouterr().err


def _answer(**fields):
    from rualign.records import AnswerRecord

    return AnswerRecord(id="q", prompt="x", answer="y", **fields)


def test_judge_refuses_answers_counted_in_different_tokenizers(tmp_path, write_jsonl):
    from rualign.errors import DataError
    from rualign.eval.judge import pair_answers

    def rows(tok):
        return [{"id": "p1", "prompt": "Вопрос", "answer": "Ответ", "answer_tokens": 2, "tokenizer": tok}]
    answers = write_jsonl("answers.jsonl", rows("default@sha256:aaaa"))
    reference = write_jsonl("reference.jsonl", rows("default@sha256:bbbb"))
    with pytest.raises(DataError) as err:
        pair_answers(answers, reference)
    text = str(err.value)
    assert "answers.jsonl" in text and "reference.jsonl" in text and "aaaa" in text and "bbbb" in text
    old = write_jsonl("old.jsonl", rows("default"))  # an older file: only a name, compared by name
    assert pair_answers(answers, old)
