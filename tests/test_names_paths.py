"""Names that become paths never escape their folder; outputs never overwrite inputs (issue 16, data loss).

Every name-bearing key (experiment, stage, source, data key) is tried with hostile values, listed and
generated; the CLI must exit 2 and leave every byte outside the folder it owns as it was.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rualign.cli import main
from rualign.errors import RualignError
from rualign.paths import check_name, contained, name_problem, overlapping, remove_tree

HOSTILE = ["..", ".", "/x", "a/../..", "", "report", "_store", "_data", "REPORT", "../sibling", "a/b", "~",
           "-rf", ".hidden", "x" * 101, "con", "nul.txt", "a\\..\\b", "a\x00b", "é", "sft.log"]


def snapshot(root: Path) -> dict[str, str]:
    """Every file (and folder) under root with a hash of its bytes."""
    out = {}
    for path in sorted(root.rglob("*")):
        rel = str(path.relative_to(root))
        out[rel] = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else "<dir>"
    return out


@pytest.mark.parametrize("value", HOSTILE)
def test_hostile_names_rejected(value):
    assert name_problem(value) is not None
    with pytest.raises(ValueError):
        check_name(value)


@pytest.mark.parametrize("value", ["sft", "exp-1", "a.b", "Qwen2.5-3B+lora", "0", "dpo_beta0.1"])
def test_ordinary_names_accepted(value):
    assert check_name(value) == value


@settings(max_examples=300, deadline=None, derandomize=True, database=None)
@given(st.text(max_size=40))
def test_any_accepted_name_stays_strictly_inside(value):
    """Property: whatever text is accepted is one path component strictly inside any root."""
    if name_problem(value) is not None:
        return
    root = Path("/tmp/rualign-root")
    joined = (root / value).resolve()
    assert joined.parent == root.resolve() and joined != root.resolve()
    assert value.lower() not in {"report", "_store", "_data"}


def test_contained_and_remove_tree_refuse_outside(tmp_path):
    root = tmp_path / "owned"
    (root / "inside").mkdir(parents=True)
    (tmp_path / "sibling.txt").write_text("keep")
    for target in (root, tmp_path, root / "..", root / "inside" / ".." / ".."):
        with pytest.raises(RualignError):
            contained(root, target)
        with pytest.raises(RualignError):
            remove_tree(root, target)
    # A symlink out of the owned folder is unlinked, never followed.
    (root / "link").symlink_to(tmp_path, target_is_directory=True)
    remove_tree(root, root / "link")
    assert not (root / "link").exists() and (tmp_path / "sibling.txt").read_text() == "keep"
    remove_tree(root, root / "inside")
    assert not (root / "inside").exists()


def test_overlap_detects_equal_files_and_held_inputs(tmp_path):
    src = tmp_path / "train.jsonl"
    src.write_text("{}\n")
    assert overlapping([src], files=[tmp_path / "." / "train.jsonl"]) is not None
    assert overlapping([src], trees=[tmp_path]) is not None
    assert overlapping([src], files=[tmp_path / "val.jsonl"]) is None
    assert overlapping(["bundled:x", "hf:a/b", None, tmp_path / "missing"], trees=[tmp_path]) is None


# ------------------------------------------------------------------ every name-bearing key, through the CLI

RECIPE_SOURCE = {"name": "ss", "format": "saiga_scored", "path": "bundled:saiga_scored", "sample": {"count": 4}}


def _experiment(name="e", stage="s1", data_key="ss", source="ss") -> dict:
    recipe = {"val_fraction": 0, "sources": [{**RECIPE_SOURCE, "name": source}]}
    return {"name": name, "model": "default", "data": {data_key: recipe},
            "stages": [{"name": stage, "method": "sft", "data": data_key, "max_steps": 1}],
            "eval": {"prompts": "bundled:eval_prompts", "reference": {"model": "default"}, "judge": "llamacpp:default"}}


def _train_config(stage="s1", source="ss") -> dict:
    return {"model": "default", "stages": [{"name": stage, "method": "sft", "max_steps": 1, "data": {
        "val_fraction": 0, "sources": [{**RECIPE_SOURCE, "name": source}]}}]}


def _recipe(source="ss") -> dict:
    return {"val_fraction": 0, "sources": [{**RECIPE_SOURCE, "name": source}]}


KEYS = {
    "experiment.name": lambda v: ("run", _experiment(name=v)),
    "experiment.stage.name": lambda v: ("run", _experiment(stage=v)),
    "experiment.data key": lambda v: ("run", _experiment(data_key=v)),
    "experiment.source.name": lambda v: ("run", _experiment(source=v)),
    "train.stage.name": lambda v: ("train", _train_config(stage=v)),
    "train.source.name": lambda v: ("train", _train_config(source=v)),
    "data.source.name": lambda v: ("data", _recipe(source=v)),
}


def _run_cli(tmp_path: Path, command: str, config: dict, capsys) -> int:
    root = tmp_path / "root"
    root.mkdir(exist_ok=True)
    cfg = root / "cfg.yaml"
    cfg.write_text(json.dumps(config, ensure_ascii=False), encoding="utf-8")  # JSON is YAML
    out = root / "out" / "inner"
    argv = {"run": ["run", str(cfg), "--out", str(out)], "train": ["train", str(cfg), "--out", str(out)],
            "data": ["data", str(cfg), "--out", str(out)]}[command]
    code = main(argv)
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return code


def _outside(tmp_path: Path) -> Path:
    outside = tmp_path / "outside"
    (outside / "model").mkdir(parents=True, exist_ok=True)
    (outside / "model" / "weights.bin").write_bytes(b"precious")
    (outside / "beside.txt").write_text("precious")
    return outside


@pytest.mark.parametrize("key", sorted(KEYS))
@pytest.mark.parametrize("value", ["..", ".", "/x", "a/../..", "", "report", "_store"])
def test_every_name_key_refuses_hostile_values(tmp_path, capsys, key, value):
    outside = _outside(tmp_path)
    before = snapshot(outside)
    command, config = KEYS[key](value)
    assert _run_cli(tmp_path, command, config, capsys) == 2
    assert snapshot(outside) == before
    assert not (tmp_path / "root" / "out").exists()  # refused at validation: nothing written at all


@settings(max_examples=40, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(key=st.sampled_from(sorted(KEYS)),
       value=st.one_of(st.text(max_size=12), st.sampled_from(["..", "../..", "./x", "x/..", "/", "a/./b"])))
def test_generated_names_never_touch_outside(tmp_path, capsys, key, value):
    """Only names that check_name rejects are tried (an accepted one would start real work)."""
    if name_problem(value) is None:
        return
    outside = _outside(tmp_path)
    before = snapshot(outside)
    command, config = KEYS[key](value)
    assert _run_cli(tmp_path, command, config, capsys) == 2
    assert snapshot(outside) == before


def test_train_stage_folder_outside_out_is_refused_even_past_the_schema(tmp_path):
    """The writer checks containment itself: a stage named '..' built without validation deletes nothing."""
    from rualign.train.run import run_stage
    from rualign.train.schema import StageConfig, TrainConfig

    outside = _outside(tmp_path)
    before = snapshot(tmp_path)
    stage = StageConfig.model_construct(name="..", method="sft", data="x", params={})
    config = TrainConfig.model_construct(model="default", stages=[stage], chat_template="model", seed=1)
    with pytest.raises(RualignError, match="outside the folder"):
        run_stage(config, stage, outside / "model")
    assert snapshot(tmp_path) == before


# ------------------------------------------------------------------ outputs that would overwrite inputs

def test_data_out_next_to_a_source_named_train_jsonl_is_refused(tmp_path, capsys, monkeypatch):
    rows = [{"messages": [{"role": "user", "content": "Привет"}, {"role": "assistant", "content": "Здравствуйте"}],
             "opus_score": 9}]
    (tmp_path / "train.jsonl").write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n")
    (tmp_path / "recipe.yaml").write_text("sources:\n  - {name: a, format: saiga_scored, path: train.jsonl}\n")
    before = snapshot(tmp_path)
    monkeypatch.chdir(tmp_path)
    assert main(["data", "recipe.yaml", "--out", "."]) == 2
    assert "would overwrite the input" in capsys.readouterr().err
    assert snapshot(tmp_path) == before


def test_generate_out_equal_to_prompts_is_refused(tmp_path, capsys):
    prompts = tmp_path / "p.jsonl"
    prompts.write_text('{"id": "1", "prompt": "Привет"}\n', encoding="utf-8")
    before = snapshot(tmp_path)
    assert main(["generate", "--model", "default", "--prompts", str(prompts), "--out", str(prompts)]) == 2
    assert "would overwrite the input" in capsys.readouterr().err
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("command", [
    ["data", "{cfg}", "--out", "{file}"],
    ["train", "{cfg}", "--out", "{file}"],
    ["judge", "--answers", "{cfg}", "--reference", "{cfg}", "--judge", "llamacpp:default", "--out", "{file}"],
    ["report", "{dir}", "--out", "{file}"],
    ["run", "{cfg}", "--out", "{file}"],
    ["generate", "--model", "default", "--prompts", "{cfg}", "--out", "{dir}"],
])
def test_out_of_the_wrong_kind_is_refused_before_work(tmp_path, capsys, command):
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text("x: 1\n")
    file = tmp_path / "a_file"
    file.write_text("keep")
    before = snapshot(tmp_path)
    argv = [a.format(cfg=cfg, file=file, dir=tmp_path) for a in command]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and ("is a file" in err or "is a folder" in err or "error:" in err)
    assert snapshot(tmp_path) == before
