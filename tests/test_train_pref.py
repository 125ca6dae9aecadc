"""Preference stages on a tiny random model with the real SmolLM2 tokenizer: losses fall on a small
memorisable set, data kinds are checked, kto unpairs, method keys are validated."""

from __future__ import annotations

import math
from pathlib import Path
from types import SimpleNamespace

import pytest

from rualign.config import validate
from rualign.errors import ConfigError, DataError, RualignError
from rualign.runs import read_jsonl, write_jsonl, write_manifest

QUESTIONS = ["Столица Франции?", "Сколько будет 2+2?", "Какого цвета небо?", "Кто написал «Войну и мир»?"]


def pref_rows(n: int = 4) -> list[dict]:
    return [{"id": f"p{i}", "source": "t", "kind": "preference",
             "prompt": [{"role": "user", "content": QUESTIONS[i % len(QUESTIONS)]}],
             "chosen": [{"role": "assistant", "content": f"Подробный и вежливый ответ номер {i}."}],
             "rejected": [{"role": "assistant", "content": "не знаю"}],
             "answer_tokens": 8, "rejected_tokens": 3, "meta": {}} for i in range(n)]


def chat_rows(n: int = 4) -> list[dict]:
    return [{"id": f"c{i}", "source": "t", "kind": "chat",
             "messages": [{"role": "user", "content": QUESTIONS[i % len(QUESTIONS)]},
                          {"role": "assistant", "content": f"Ответ {i}."}],
             "answer_tokens": 3, "meta": {}} for i in range(n)]


def data_folder(path: Path, rows: list[dict], kind: str, val: list[dict] | None = None) -> Path:
    write_jsonl(path / "train.jsonl", rows)
    if val:
        write_jsonl(path / "val.jsonl", val)
    write_manifest(path, stage="data", config_hash="test", kind=kind)
    return path


def stage(name: str, method: str, data: Path, **extra) -> dict:
    base = {"name": name, "method": method, "data": str(data), "max_steps": 8, "batch_size": 4, "lr": 5e-3,
            "samples": 0, "max_length": 128, "save_steps": 1000, "lora": {"r": 8, "alpha": 16, "dropout": 0.0}}
    return {**base, **extra}


def train_config(model: Path, stages: list[dict]):
    from rualign.train.schema import TrainConfig

    return TrainConfig.model_validate({"model": str(model), "stages": stages})


def losses(stage_dir: Path) -> list[float]:
    return [r["loss"] for r in read_jsonl(stage_dir / "train_log.jsonl") if r.get("loss") is not None]


@pytest.fixture(autouse=True)
def _quiet_isolated_refcache(tmp_path, monkeypatch):
    monkeypatch.setenv("RUALIGN_QUIET", "1")
    monkeypatch.setenv("RUALIGN_REFCACHE", str(tmp_path / "refcache"))


@pytest.mark.parametrize("method,extra", [
    ("dpo", {}), ("simpo", {}), ("orpo", {}), ("kto", {}), ("rm", {}),
])
def test_loss_falls_on_a_memorisable_set(method, extra, tiny_model_dir, tmp_path):
    from rualign.train.run import run_stage

    # dpo also gets a validation split: its reference log-probs are cached separately ("eval").
    data = data_folder(tmp_path / "data", pref_rows(), "preference", val=pref_rows(2) if method == "dpo" else None)
    config = train_config(tiny_model_dir, [stage(method, method, data, **extra)])
    manifest = run_stage(config, config.stages[0], tmp_path / "out")
    seen = losses(tmp_path / "out" / method)
    assert len(seen) == 8 and all(math.isfinite(x) for x in seen)
    assert sum(seen[-2:]) / 2 < seen[0] - 0.05, seen
    assert manifest["method"] == method and manifest["steps"] == 8
    assert manifest["tokens"] > 8 * 4 * 2 * 20  # 8 steps x 4 pairs x 2 sides x >= 20 tokens each
    if method == "kto":  # 4 pairs unpaired into 8 labelled rows
        assert manifest["rows"]["train"] == {"in": 4, "unpaired_pairs": 4, "kept": 8, "desirable": 4,
                                             "undesirable": 4}
    if method in ("dpo", "kto"):
        assert manifest["builder_info"]["reference"]["model"] == str(tiny_model_dir)
        assert manifest["builder_info"]["ref_cache"]["train"]["hit"] is False
    if method == "dpo":
        assert manifest["builder_info"]["ref_cache"]["eval"]["forward_batches"] == 1
        assert math.isfinite(manifest["eval"]["eval_loss"])
    if method == "rm":
        import json

        assert manifest["rows"]["train"]["kept"] == 4 and manifest["rows"]["train"]["dropped_longer_than_max_length"] == 0

        merged = Path(manifest["model_path"])
        assert json.loads((merged / "config.json").read_text())["architectures"][0].endswith(
            "ForSequenceClassification")
        assert not (tmp_path / "out" / "rm" / "samples.jsonl").exists()


def _stage_ctx(stage, *, config=None, tokenizer=None):
    from rualign.train.methods import StageContext

    return StageContext(config=config, stage=stage, tokenizer=tokenizer, model=None, start_model="",
                        out_root=Path("."), precision="fp32", log=lambda m: None)


def _ctx(method: str):
    return _stage_ctx(SimpleNamespace(name="s", method=method))


def test_kto_unpairs_pairs_into_two_labelled_rows():
    from rualign.train.preference import kto_rows

    kto = {"id": "k", "source": "t", "kind": "kto", "prompt": [{"role": "user", "content": "Привет"}],
           "completion": [{"role": "assistant", "content": "Здравствуйте!"}], "label": False}
    rows, counts = kto_rows(pref_rows(5) + [kto], _ctx("kto"))
    assert len(rows) == 11 and counts == {"in": 6, "unpaired_pairs": 5, "kept": 11, "desirable": 5,
                                          "undesirable": 6}
    assert rows[0]["label"] is True and rows[1]["label"] is False
    assert rows[0]["prompt"] == rows[1]["prompt"] and rows[1]["completion"][0]["content"] == "не знаю"
    bad = {**kto, "label": "yes"}
    with pytest.raises(DataError, match="row 1 .*label"):
        kto_rows([bad], _ctx("kto"))


def test_builders_reject_the_wrong_record_kind_naming_method_and_kind():
    from rualign.train.preference import build_preference_dataset

    with pytest.raises(DataError, match="method 'dpo' needs records of kind preference.*kind 'chat'"):
        build_preference_dataset(chat_rows(), _ctx("dpo"))
    broken = pref_rows(2)
    broken[1]["chosen"] = [{"role": "user", "content": "x"}]
    with pytest.raises(DataError, match="row 2 \\(id 'p1'\\): 'chosen' must be one assistant message"):
        build_preference_dataset(broken, _ctx("dpo"))


def test_chat_folder_given_to_dpo_is_an_error(tiny_model_dir, tmp_path):
    from rualign.train.run import run_stage

    data = data_folder(tmp_path / "chat", chat_rows(), "chat")
    config = train_config(tiny_model_dir, [stage("d", "dpo", data)])
    with pytest.raises(ConfigError, match="method 'dpo' needs data of kind preference.*kind 'chat'"):
        run_stage(config, config.stages[0], tmp_path / "out")


def test_rlhf_prompts_come_from_prompt_preference_and_chat_rows():
    from rualign.train.preference import prompt_rows

    prompt = {"id": "q", "source": "t", "kind": "prompt", "prompt": [{"role": "user", "content": "Вопрос"}]}
    rows = prompt_rows([prompt, *pref_rows(1), *chat_rows(1)], _ctx("rlhf"))
    assert [r["prompt"][-1]["content"] for r in rows] == ["Вопрос", QUESTIONS[0], QUESTIONS[0]]
    assert all(r["prompt"][-1]["role"] == "user" for r in rows)


def test_method_keys_are_validated_per_method(tmp_path):
    from rualign.train.schema import TrainConfig

    def load(stage_keys: dict):
        return validate(TrainConfig, {"stages": [{"name": "s", "data": "x", **stage_keys}]}, tmp_path / "t.yaml")

    assert load({"method": "simpo"}).stages[0].params == {"beta": 2.0, "gamma": 1.0, "cpo_alpha": 0.0}
    assert load({"method": "dpo", "beta": 0.2}).stages[0].params["beta"] == 0.2
    with pytest.raises(ConfigError, match="unknown key.*gamma.*method 'dpo'.*allowed: beta, label_smoothing"):
        load({"method": "dpo", "gamma": 1.0})
    with pytest.raises(ConfigError, match="rlhf' needs `reward_model:`"):
        load({"method": "rlhf"})
    with pytest.raises(ConfigError, match="algorithm"):
        load({"method": "rlhf", "reward_model": "rm", "algorithm": "ppo"})


def test_reward_model_must_be_a_stage_or_a_folder(tiny_model_dir, tmp_path):
    from rualign.train.preference import stage_or_folder

    config = train_config(tiny_model_dir, [stage("rm", "rm", tmp_path),
                                           stage("rl", "rlhf", tmp_path, reward_model="rm")])
    ctx = SimpleNamespace(config=config, stage=config.stages[1], stage_output=lambda n: tmp_path / n)
    with pytest.raises(RualignError, match="reward_model 'rm' is a stage that has not finished"):
        stage_or_folder("rm", ctx, "reward_model")
    with pytest.raises(RualignError, match="reward_model 'nope' is neither a stage of this config nor"):
        stage_or_folder("nope", ctx, "reward_model")


def test_reference_cache_second_run_makes_no_reference_forward_and_same_losses(tiny_model_dir, tmp_path):
    """Run 1 computes and stores the reference log-probs; run 2 (a new output folder, same reference and
    data) reads them back: zero reference forward batches and identical losses. Without the cache (TRL
    computes the reference on the fly each step) the losses are the same up to float rounding."""
    from rualign.train.run import run_stage

    data = data_folder(tmp_path / "data", pref_rows(), "preference")
    runs = {}
    for name, extra in (("first", {}), ("second", {}), ("uncached", {"ref_cache": False})):
        config = train_config(tiny_model_dir, [stage("d", "dpo", data, max_steps=3, **extra)])
        manifest = run_stage(config, config.stages[0], tmp_path / name)
        runs[name] = (manifest, losses(tmp_path / name / "d"))
    first, second = runs["first"][0]["builder_info"], runs["second"][0]["builder_info"]
    assert first["ref_cache"]["train"]["hit"] is False and first["ref_cache"]["train"]["forward_batches"] == 1
    assert second["ref_cache"]["train"] == {"key": first["ref_cache"]["train"]["key"], "hit": True,
                                            "forward_batches": 0}
    assert (tmp_path / "refcache" / first["ref_cache"]["train"]["key"] / "ref_logps.parquet").exists()
    assert runs["first"][1] == runs["second"][1] and len(runs["first"][1]) == 3
    assert "ref_cache" not in runs["uncached"][0]["builder_info"]
    assert runs["uncached"][1] == pytest.approx(runs["first"][1], rel=1e-4, abs=1e-5)


def test_reference_cache_key_follows_reference_and_tokenization(tmp_path):
    from datasets import Dataset

    from rualign.train.refcache import RefCache, dataset_hash

    a = Dataset.from_dict({"prompt_ids": [[1, 2]], "chosen_ids": [[3]], "rejected_ids": [[4]]})
    b = Dataset.from_dict({"prompt_ids": [[1, 2]], "chosen_ids": [[3]], "rejected_ids": [[5]]})
    assert dataset_hash(a) == dataset_hash(Dataset.from_dict(a.to_dict())) != dataset_hash(b)
    cache = RefCache(identity="m1", precision="fp32", root=tmp_path)
    key = cache.key(a, "DPOTrainer", {"max_length": 64})
    assert key != RefCache(identity="m2", precision="fp32", root=tmp_path).key(a, "DPOTrainer", {"max_length": 64})
    assert key != cache.key(a, "DPOTrainer", {"max_length": 32}) != cache.key(b, "DPOTrainer", {"max_length": 64})
    assert key != RefCache(identity="m1", precision="bf16", root=tmp_path).key(a, "DPOTrainer", {"max_length": 64})
    assert cache.load(key, 1, ("ref_chosen_logps",)) is None
    cache.save(key, {"ref_chosen_logps": [-1.5], "ref_rejected_logps": [-2.5]}, {"rows": 1})
    assert cache.load(key, 1, ("ref_chosen_logps", "ref_rejected_logps")).to_dict() == {
        "ref_chosen_logps": [-1.5], "ref_rejected_logps": [-2.5]}
    with pytest.raises(RualignError, match="does not match its data"):
        cache.load(key, 2, ("ref_chosen_logps",))


@pytest.mark.parametrize("algorithm", ["grpo", "rloo"])
def test_rlhf_trains_against_an_rm_stage(algorithm, tiny_model_dir, tmp_path):
    """sft -> rm (from sft) -> rlhf (from sft, reward_model: rm). What is asserted: the loop runs its steps
    with finite loss and reward metrics, and the rewards come from the rm stage's model (they vary across
    completions). A tiny random policy over 3 steps is not asserted to improve its reward."""
    from rualign.train.run import run_training

    chat = data_folder(tmp_path / "chat", chat_rows(), "chat")
    pref = data_folder(tmp_path / "pref", pref_rows(), "preference")
    config = train_config(tiny_model_dir, [
        stage("sft", "sft", chat, max_steps=1),
        stage("rm", "rm", pref, parent="sft", max_steps=2),
        stage("rl", "rlhf", pref, parent="sft", reward_model="rm", algorithm=algorithm, max_steps=3,
              num_generations=2, max_completion_length=8),
    ])
    manifests = run_training(config, tmp_path / "out")
    rl = manifests["rl"]
    assert rl["steps"] == 3 and rl["builder_info"]["reward_model"]["model"] == manifests["rm"]["model_path"]
    log = [r for r in read_jsonl(tmp_path / "out" / "rl" / "train_log.jsonl") if "reward" in r]
    assert len(log) == 3
    for row in log:
        assert math.isfinite(row["loss"]) and math.isfinite(row["reward"])
    assert any(row["reward_std"] > 0 for row in log)


def test_a_policy_cannot_start_from_a_reward_model(tiny_model_dir, tmp_path):
    from rualign.train.preference import build_prompt_dataset

    config = train_config(tiny_model_dir, [stage("rm", "rm", tmp_path),
                                           stage("rl", "rlhf", tmp_path, reward_model="rm")])
    ctx = _stage_ctx(config.stages[1], config=config)
    with pytest.raises(RualignError, match="'rl' \\(rlhf\\) would start from 'rm', a reward model"):
        build_prompt_dataset(pref_rows(1), ctx)


def test_rm_counts_pairs_longer_than_max_length_and_refuses_when_none_fit(tiny_model_dir, tmp_path):
    from transformers import AutoTokenizer

    from rualign.train.preference import build_rm_dataset

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    rows = pref_rows(3)
    rows[1]["chosen"][0]["content"] = "очень длинный ответ " * 60
    ctx = _stage_ctx(SimpleNamespace(name="rm", method="rm", max_length=128), tokenizer=tokenizer)
    dataset = build_rm_dataset(rows, ctx)
    assert len(dataset) == 2 and ctx.rows["train"]["dropped_longer_than_max_length"] == 1
    assert ctx.rows["train"]["dropped_ids"] == ["p1"]
    whole = tokenizer.apply_chat_template(rows[0]["prompt"] + rows[0]["chosen"], tokenize=True, return_dict=True)
    assert dataset[0]["chosen_ids"] == list(whole["input_ids"]) and "не знаю" in tokenizer.decode(
        dataset[0]["rejected_ids"])
    ctx.stage.max_length = 8
    with pytest.raises(RualignError, match="every pair is longer than max_length=8"):
        build_rm_dataset(rows, ctx)


def test_dpo_with_lora_dropout_trains_the_same_with_a_cold_or_warm_reference_cache(tiny_model_dir, tmp_path):
    """DPOConfig disables dropout (p = 0 on every nn.Dropout); rualign's faster LoRA dropout must obey it,
    else the first run (which draws random numbers for its reference pass) and the cached rerun would
    train with different dropout masks."""
    from rualign.train.run import run_stage

    data = data_folder(tmp_path / "data", pref_rows(), "preference")
    runs = []
    for name in ("cold", "warm"):
        config = train_config(tiny_model_dir, [stage("d", "dpo", data, max_steps=3,
                                                     lora={"r": 8, "alpha": 16, "dropout": 0.2})])
        run_stage(config, config.stages[0], tmp_path / name)
        runs.append(losses(tmp_path / name / "d"))
    assert runs[0] == runs[1] and len(runs[0]) == 3
