"""`rualign run`: experiment files, the shared content-hashed store, caching and resume, on tiny models."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rualign.cli import main
from rualign.errors import ConfigError, RualignError
from rualign.pipeline import build_plan, load_experiments, plan_files, run_plan

PROMPTS = [{"id": "p1", "prompt": "Назови столицу Франции.", "category": "qa"},
           {"id": "p2", "prompt": "Напиши одно слово.", "category": "writing"}]


def _experiment_file(tmp_path: Path, tiny: Path, body: str) -> Path:
    (tmp_path / "prompts.jsonl").write_text("\n".join(json.dumps(p, ensure_ascii=False) for p in PROMPTS) + "\n",
                                            encoding="utf-8")
    head = f"""\
defaults:
  model: {tiny}
  data:
    ss:
      tokenizer: default
      val_fraction: 0
      sources:
        - {{name: ss, format: saiga_scored, path: bundled:saiga_scored, sample: {{count: 6}}}}
  stage_defaults: {{max_steps: 1, batch_size: 2, max_length: 256, samples: 0, lora: {{r: 4, alpha: 8}}}}
  eval:
    prompts: prompts.jsonl
    generation: {{max_new_tokens: 6, batch_size: 2}}
    reference: {{model: {tiny}, generation: {{max_new_tokens: 4}}}}
    judge: local:{tiny}
"""
    path = tmp_path / "exp.yaml"
    path.write_text(head + body, encoding="utf-8")
    return path


THREE = """\
experiments:
  - name: base
  - name: sft
    stages: [{name: sft, method: sft, data: ss}]
  - name: sft-longer
    stages: [{name: sft, method: sft, data: ss}]
    eval: {generation: {max_new_tokens: 5}}
"""


@pytest.fixture
def counted_generations(monkeypatch):
    """Count prompts answered by the hf backend (the reference must be answered once, not per experiment)."""
    from rualign.eval import backends

    calls: list[int] = []
    original = backends.HFBackend.stream

    # stream() is the hf backend's one way in (continuous batching; generate() goes through it too).
    def stream(self, conversations, params):
        calls.append(len(conversations))
        return original(self, conversations, params)

    monkeypatch.setattr(backends.HFBackend, "stream", stream)
    return calls


def test_three_experiments_share_reference_and_stage_then_reuse_everything(tmp_path, tiny_model_dir,
                                                                           counted_generations):
    path = _experiment_file(tmp_path, tiny_model_dir, THREE)
    out = tmp_path / "runs"
    plan = plan_files([path], out)
    kinds = [n.kind for n in plan.nodes.values()]
    # 1 data, 1 train (shared by sft and sft-longer), 4 answer sets (reference + 3), 3 judges
    assert kinds.count("data") == 1 and kinds.count("train") == 1
    assert kinds.count("answers") == 4 and kinds.count("judge") == 3
    folders, outcome = run_plan(plan, out)
    assert sum(counted_generations) == 4 * len(PROMPTS)
    assert set(outcome.values()) == {"ran"}
    runs = {f.name: json.loads((f / "run.json").read_text()) for f in folders}
    assert sorted(runs) == ["base", "sft", "sft-longer"]
    references = {r["reference_answers"] for r in runs.values()}
    assert len(references) == 1 and Path(references.pop()).is_file()
    assert runs["sft"]["stages"] == [{"name": "sft", "method": "sft", "data": "ss"}]
    assert runs["base"]["stages"] == [] and runs["base"]["description"] == "base model"
    for folder in folders:
        assert len((folder / "answers.jsonl").read_text().splitlines()) == len(PROMPTS)
        score = json.loads((folder / "judge" / "score.json").read_text())
        assert score["n_prompts"] == len(PROMPTS)
    answers_max = {f.name: json.loads((f / "answers.jsonl").read_text().splitlines()[0])["params"]["max_new_tokens"]
                   for f in folders}
    assert answers_max == {"base": 6, "sft": 6, "sft-longer": 5}

    # A rerun (a new process would build the same plan) reuses every stage: no generation, no training.
    counted_generations.clear()
    again = plan_files([path], out)
    assert [n.id for n in again.nodes.values()] == [n.id for n in plan.nodes.values()]
    _, outcome = run_plan(again, out)
    assert set(outcome.values()) == {"cached"} and counted_generations == []

    # Resume: a lost judge output (e.g. killed mid-stage) is redone alone.
    judge = again.nodes[again.runs[1].judge]
    for file in judge.folder.iterdir():
        file.unlink()
    _, outcome = run_plan(plan_files([path], out), out)
    assert [k for k, v in outcome.items() if v == "ran"] == [judge.id]
    assert counted_generations == []


def test_dry_run_prints_plan_without_loading_models(tmp_path, tiny_model_dir, monkeypatch, capsys):
    import rualign.models

    def refuse(*args, **kwargs):
        raise AssertionError("a dry run must not load a model")

    monkeypatch.setattr(rualign.models, "load_model", refuse)
    monkeypatch.setattr(rualign.models, "load_tokenizer", refuse)
    path = _experiment_file(tmp_path, tiny_model_dir, THREE)
    assert main(["run", str(path), "--out", str(tmp_path / "runs"), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert out.count("would run") == 9 + 1  # nine stage rows and the summary line
    assert "3 experiment(s), 9 stage(s): 9 would run, 0 cached" in " ".join(out.split())
    assert not (tmp_path / "runs").exists()  # nothing written


def test_only_selects_experiments_and_rejects_unknown_names(tmp_path, tiny_model_dir):
    path = _experiment_file(tmp_path, tiny_model_dir, THREE)
    plan = plan_files([path], tmp_path / "runs", only=["sft"])
    assert [r.experiment.name for r in plan.runs] == ["sft"]
    with pytest.raises(RualignError, match="no experiment named nope"):
        plan_files([path], tmp_path / "runs", only=["nope"])


def _line_of(path: Path, text: str) -> int:
    return next(i for i, line in enumerate(path.read_text().splitlines(), start=1) if text in line)


def _error(tmp_path, tiny, body) -> ConfigError:
    path = _experiment_file(tmp_path, tiny, body)
    with pytest.raises(RualignError) as info:
        build_plan(load_experiments(path), tmp_path / "store")
    return info.value


def test_unknown_key_names_file_and_line(tmp_path, tiny_model_dir):
    err = _error(tmp_path, tiny_model_dir, "experiments:\n  - name: a\n    stagez: []\n")
    path = tmp_path / "exp.yaml"
    assert "unknown key 'stagez'" in err.message and err.line == _line_of(path, "stagez") and err.path == str(path)
    err = _error(tmp_path, tiny_model_dir, "experiments:\n  - name: a\n    stages:\n"
                                           "      - {name: s, method: sft, data: ss, epochz: 2}\n")
    assert "epochz" in err.message and err.line == _line_of(path, "epochz")
    err = _error(tmp_path, tiny_model_dir, "experiments:\n  - name: a\n    stage_defaults: {warmupz: 1}\n"
                                           "    stages: [{name: s, method: sft, data: ss}]\n")
    assert "warmupz" in err.message and err.line == _line_of(path, "warmupz")


def test_unknown_key_in_an_included_file_names_that_file(tmp_path, tiny_model_dir):
    (tmp_path / "common.yaml").write_text("model: default\nevalx: 1\n", encoding="utf-8")
    path = tmp_path / "row.yaml"
    path.write_text("include: common.yaml\nname: a\neval: {prompts: bundled:eval_prompts, "
                    "reference: {model: default}, judge: llamacpp:default}\n", encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_experiments(path)
    assert "unknown key 'evalx'" in info.value.message
    assert info.value.path.endswith("common.yaml") and info.value.line == 2


def test_missing_recipe_file_and_missing_data_name(tmp_path, tiny_model_dir):
    err = _error(tmp_path, tiny_model_dir, "experiments:\n  - name: a\n    stages: [{name: s, method: sft, "
                                           "data: nowhere/recipe.yaml}]\n")
    assert "recipe file 'nowhere/recipe.yaml' not found" in err.message
    err = _error(tmp_path, tiny_model_dir, "experiments:\n  - name: a\n    stages: [{name: s, method: sft, "
                                           "data: gm}]\n")
    assert "neither a name under `data:` (ss)" in err.message


def test_circular_and_missing_parents(tmp_path, tiny_model_dir):
    err = _error(tmp_path, tiny_model_dir, """experiments:
  - name: a
    stages:
      - {name: one, method: sft, data: ss, parent: two}
      - {name: two, method: sft, data: ss, parent: one}
""")
    assert "cycle" in err.message and err.line == _line_of(tmp_path / "exp.yaml", "- name: a")
    err = _error(tmp_path, tiny_model_dir, "experiments:\n  - name: a\n    stages: "
                                           "[{name: one, method: sft, data: ss, parent: zero}]\n")
    assert "parent 'zero' is not a stage" in err.message


def test_missing_prompts_circular_include_and_duplicate_names(tmp_path, tiny_model_dir):
    path = _experiment_file(tmp_path, tiny_model_dir, "experiments:\n  - name: a\n")
    (tmp_path / "prompts.jsonl").unlink()
    with pytest.raises(RualignError, match="prompts file does not exist"):
        build_plan(load_experiments(path), tmp_path / "store")
    plan = build_plan(load_experiments(path), tmp_path / "store", allow_missing=True)  # dry runs of study configs
    assert any("MISSING prompts file" in note for n in plan.nodes.values() for note in n.notes)
    (tmp_path / "a.yaml").write_text("include: b.yaml\n", encoding="utf-8")
    (tmp_path / "b.yaml").write_text("include: a.yaml\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="circular include"):
        load_experiments(tmp_path / "a.yaml")
    err = _error(tmp_path, tiny_model_dir, "experiments:\n  - name: a\n  - name: a\n")
    assert "duplicate experiment name" in err.message


def test_cli_prints_errors_without_traceback(tmp_path, tiny_model_dir, capsys):
    path = _experiment_file(tmp_path, tiny_model_dir, "experiments:\n  - name: a\n    stagez: []\n")
    assert main(["run", str(path), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert f"{path}:{_line_of(path, 'stagez')}: unknown key" in err and "Traceback" not in err
