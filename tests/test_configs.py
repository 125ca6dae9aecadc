"""Every shipped YAML validates (torchtune's tests/recipes/test_configs.py idea): experiment files dry-run
without models or network; judge YAMLs parse; accelerate configs are covered by test_train_schema.py.
The demo experiment is package data (src/rualign/configs/demo.yaml); tests/test_package_data.py checks
that it ships in the wheel."""

from __future__ import annotations

from pathlib import Path

import pytest

from rualign.cli import main
from rualign.pipeline import build_plan, load_experiments, plan_files

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs"
DEMO = ROOT / "src" / "rualign" / "configs" / "demo.yaml"
ALL_YAML = sorted(p.relative_to(CONFIGS).as_posix() for p in CONFIGS.rglob("*.yaml"))
EXPERIMENT_FILES = [p for p in ALL_YAML if p.startswith("study/") and not Path(p).name.startswith("_")]
JUDGE_FILES = [p for p in ALL_YAML if p.startswith("judge/")]
INCLUDES = [p for p in ALL_YAML if Path(p).name.startswith("_")]
ACCELERATE = [p for p in ALL_YAML if p.startswith("accelerate/")]  # tests/test_train_schema.py
SWEEP_FILES = [p for p in ALL_YAML if p.startswith("sweep/")]


def test_every_shipped_yaml_is_checked_somewhere():
    assert sorted(EXPERIMENT_FILES + JUDGE_FILES + INCLUDES + ACCELERATE + SWEEP_FILES) == ALL_YAML
    assert len(EXPERIMENT_FILES) == 9
    # One demo file only, inside the package: a second copy under configs/ could drift from what ships.
    assert DEMO.is_file() and not (CONFIGS / "demo.yaml").exists()


def _experiment_path(name: str) -> Path:
    return DEMO if name == "demo.yaml" else CONFIGS / name


@pytest.mark.parametrize("name", ["demo.yaml", *EXPERIMENT_FILES])
def test_experiment_file_dry_runs_offline(name, tmp_path, monkeypatch, capsys):
    import rualign.models

    def refuse(*args, **kwargs):
        raise AssertionError("a dry run must not load a model")

    monkeypatch.setattr(rualign.models, "load_model", refuse)
    monkeypatch.setattr(rualign.models, "load_tokenizer", refuse)
    monkeypatch.chdir(ROOT)  # the study's prompts path is relative to the checkout, as a user runs it
    assert main(["run", str(_experiment_path(name)), "--dry-run", "--allow-missing", "--out", str(tmp_path)]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "would run" in out and "0 cached" in out
    if name.startswith("study/"):
        for note in ("model hf:Qwen/Qwen2.5-3B-Instruct: remote, not checked",
                     "judge endpoint http://localhost:8000/v1: not contacted in a dry run",
                     "MISSING prompts file data/ru_arena_hard/question.jsonl"):
            assert note in out
        if "base" not in name:
            assert ("saiga_scored: remote, not checked" in out) or ("GrandMaster-PRO-MAX: remote, not checked" in out)


def test_study_rows_share_the_reference_and_the_sequential_first_stages(tmp_path):
    files = [CONFIGS / p for p in EXPERIMENT_FILES if p.startswith("study/")]
    plan = plan_files(files, tmp_path, allow_missing=True)
    reference = {run.reference for run in plan.runs}
    assert len(reference) == 1  # Qwen2.5-3B-Instruct answers: generated once for all nine rows
    ref_node = plan.nodes[reference.pop()]
    assert sorted(ref_node.used_by) == sorted(r.experiment.name for r in plan.runs)
    assert ref_node.id == plan.runs[0].answers  # the base row's answers are the reference itself
    trains = {n.label: n for n in plan.nodes.values() if n.kind == "train"}
    assert sorted(trains["train sft-gm10-le610 (sft)"].used_by) == ["gm10-le610", "gm10-le610+ss-opus9"]
    assert sorted(trains["train sft-gm20-le610 (sft)"].used_by) == ["gm20-le610", "gm20-le610+ss-opus8"]
    second = trains["train sft-ss-opus9-after-gm10 (sft)"]
    assert trains["train sft-gm10-le610 (sft)"].id in second.deps
    assert len(trains) == 8  # six single-stage rows + two second stages; the first stages are shared
    for run in plan.runs:
        exp = run.experiment
        assert exp.model == "hf:Qwen/Qwen2.5-3B-Instruct" and exp.chat_template == "chatml_no_system"
        assert exp.eval.target == 540 and run.judge_config.mode == "logprob"
        assert run.judge_config.api_key_env == "JUDGE_API_KEY"
        assert run.judge_config.base_url == "http://localhost:8000/v1"
        for stage in exp.stages:
            assert (stage.lora.r, stage.lora.alpha, stage.lora.dropout, stage.lora.target_modules) == (
                16, 32, 0.05, "all-linear")


def test_study_data_windows_match_table_4(tmp_path):
    experiments = {e.name: e for p in EXPERIMENT_FILES if p.startswith("study/")
                   for e in load_experiments(CONFIGS / p)}
    recipes = experiments["base"].data
    def window(name):
        source = recipes[name]["sources"][0]
        return (source.get("filters", {}).get("answer_tokens"), source["sample"]["count"])
    assert window("gm10") == (None, 15158)
    assert window("gm10_470_610") == ({"min": 470, "max": 610}, 15158)
    assert window("gm10_le610") == ({"max": 610}, 15158)
    assert window("gm20_le610") == ({"max": 610}, 30316)
    assert window("gm40_le610") == ({"max": 610}, 60632)
    assert recipes["ss_opus9"]["sources"][0]["filters"] == {"min_score": 9}
    assert recipes["ss_opus8"]["sources"][0]["filters"] == {"min_score": 8}
    assert all(recipes[n]["tokenizer"] == "column" for n in recipes if n.startswith("gm"))
    assert experiments["base"].stages == []


def test_demo_plan_shape(tmp_path):
    plan = build_plan(load_experiments(DEMO), tmp_path)
    names = [r.experiment.name for r in plan.runs]
    assert names == ["base", "sft-short", "sft-long", "control"]
    methods = {r.experiment.name: [s.method for s in r.experiment.stages] for r in plan.runs}
    assert methods["sft-long"] == ["sft"] and methods["base"] == []
    reference = plan.nodes[plan.runs[0].reference]
    assert len(reference.used_by) == 4 and reference.id == plan.runs[0].answers
    control = [n for n in plan.nodes.values() if n.kind == "data" and "control" in n.used_by]
    assert len(control) == 1 and control[0].spec["recipe"].control == "shuffle_answers"
    assert all(r.experiment.eval.target == 150 and r.experiment.eval.heldout for r in plan.runs)
    assert all(r.judge_config.backend == "llamacpp" for r in plan.runs)


@pytest.mark.parametrize("name", JUDGE_FILES)
def test_judge_yaml_parses(name):
    from rualign.eval.schema import parse_judge_spec

    cfg = parse_judge_spec(str(CONFIGS / name))
    assert cfg.api_key_env and cfg.backend == "openai"


@pytest.mark.parametrize("name", SWEEP_FILES)
def test_sweep_file_dry_runs_offline(name, tmp_path, monkeypatch, capsys):
    """Every path of the search space resolves, every range is valid at both ends, the plan builds offline."""
    import rualign.models

    def refuse(*args, **kwargs):
        raise AssertionError("a dry run must not load a model")

    monkeypatch.setattr(rualign.models, "load_model", refuse)
    monkeypatch.setattr(rualign.models, "load_tokenizer", refuse)
    monkeypatch.chdir(ROOT)
    assert main(["sweep", str(CONFIGS / name), "--dry-run", "--out", str(tmp_path / "out")]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "nothing was run" in out and not (tmp_path / "out").exists()


def test_every_subcommand_is_one_module_in_commands_named_like_it():
    """One naming scheme: rualign.commands.<name> registers exactly the subcommand <name> (with - for _), and
    nothing outside rualign.commands registers a subcommand."""
    import argparse
    import importlib
    from pathlib import Path

    from rualign.cli import command_modules

    src = Path(__file__).resolve().parents[1] / "src" / "rualign"
    outside = [p for p in src.rglob("*.py") if "def register(subparsers" in p.read_text(encoding="utf-8")
               and p.parent.name != "commands"]
    assert outside == []
    for module in command_modules():
        parser = argparse.ArgumentParser()
        subparsers = parser.add_subparsers()
        importlib.import_module(module).register(subparsers)
        assert list(subparsers.choices) == [module.rsplit(".", 1)[1].replace("_", "-")], module
