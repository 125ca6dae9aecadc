"""`rualign train` config validation and the shipped accelerate configs."""

from __future__ import annotations

from pathlib import Path

import pytest

from rualign.config import load_yaml
from rualign.errors import ConfigError
from rualign.train.methods import METHODS
from rualign.train.schema import TrainConfig

ROOT = Path(__file__).resolve().parents[1]


def _load(tmp_path, text: str) -> TrainConfig:
    path = tmp_path / "train.yaml"
    path.write_text(text, encoding="utf-8")
    return load_yaml(path, TrainConfig)


def test_defaults_and_lineage(tmp_path):
    config = _load(tmp_path, """
model: default
stages:
  - {name: sft, method: sft, data: d1}
  - {name: more, method: sft, data: d2, full: true}
  - {name: side, method: sft, data: d3, parent: sft, continue_adapter: true}
""")
    first, second, third = config.stages
    assert first.adapter_kind == "lora" and first.lora.r == 16 and first.lora.target_modules == "all-linear"
    assert second.adapter_kind == "full" and second.lora is None
    assert config.parent_of(first) is None and config.parent_of(second) == "sft" and config.parent_of(third) == "sft"
    assert config.lineage("side") == ["sft", "side"]
    assert first.params["neftune_noise_alpha"] is None  # method defaults are filled in


def test_unknown_method_lists_known_ones_with_line(tmp_path):
    with pytest.raises(ConfigError) as err:
        _load(tmp_path, "stages:\n  - name: a\n    method: dpx\n    data: d\n")
    text = err.value.render()
    assert "unknown method 'dpx'" in text and "sft" in text and ":3:" in text
    for name in METHODS:
        assert name in text


def test_unknown_method_key_names_method_and_allowed_keys(tmp_path):
    with pytest.raises(ConfigError) as err:
        _load(tmp_path, "stages:\n  - {name: a, method: sft, data: d, gamma: 0.5}\n")
    text = err.value.render()
    assert "gamma" in text and "method 'sft'" in text and "neftune_noise_alpha" in text


def test_missing_parent_and_cycles_are_errors(tmp_path):
    with pytest.raises(ConfigError, match="parent 'nope' is not a stage"):
        _load(tmp_path, "stages:\n  - {name: a, method: sft, data: d}\n  - {name: b, method: sft, data: d, parent: nope}\n")
    with pytest.raises(ConfigError, match="cycle"):
        _load(tmp_path, "stages:\n  - {name: a, method: sft, data: d, parent: b}\n"
                        "  - {name: b, method: sft, data: d, parent: a}\n")
    with pytest.raises(ConfigError, match="duplicate stage"):
        _load(tmp_path, "stages:\n  - {name: a, method: sft, data: d}\n  - {name: a, method: sft, data: d}\n")


def test_one_of_lora_qlora_full(tmp_path):
    with pytest.raises(ConfigError, match="choose one of lora, qlora, full"):
        _load(tmp_path, "stages:\n  - {name: a, method: sft, data: d, full: true, lora: {r: 8}}\n")
    with pytest.raises(ConfigError, match="continue_adapter"):
        _load(tmp_path, "stages:\n  - {name: a, method: sft, data: d, full: true, continue_adapter: true}\n")


EXPECTED = {
    "multi-cpu.yaml": {"distributed_type": "MULTI_GPU", "num_processes": 2, "use_cpu": False},
    "deepspeed-zero2.yaml": {"distributed_type": "DEEPSPEED", "deepspeed_config.zero_stage": 2},
    "deepspeed-zero3.yaml": {"distributed_type": "DEEPSPEED", "deepspeed_config.zero_stage": 3},
    "fsdp.yaml": {"distributed_type": "FSDP", "fsdp_config.fsdp_version": 2},
    "fsdp-cpu.yaml": {"distributed_type": "FSDP", "fsdp_config.fsdp_version": 2, "num_processes": 2},
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_shipped_accelerate_configs_parse(name):
    import yaml
    from accelerate.commands.config.config_args import load_config_from_file

    path = ROOT / "configs" / "accelerate" / name
    raw = yaml.safe_load(path.read_text())
    for dotted, value in EXPECTED[name].items():
        node = raw
        for part in dotted.split("."):
            node = node[part]
        assert node == value, (name, dotted)
    parsed = load_config_from_file(str(path))  # accelerate's own loader rejects unknown keys
    assert parsed.distributed_type.value == raw["distributed_type"]
    assert parsed.num_processes == raw["num_processes"]


def test_every_accelerate_config_is_covered():
    assert sorted(p.name for p in (ROOT / "configs" / "accelerate").glob("*.yaml")) == sorted(EXPECTED)


def test_one_stage_key_for_plan_and_train():
    """plan._COSMETIC and run.stage_key's own set were kept in sync by a comment; both now call
    StageConfig.key_fields: cosmetic keys never change a key, anything that changes the model does."""
    from rualign.train.schema import COSMETIC, StageConfig

    base = {"name": "sft", "method": "sft", "data": "d"}
    key = StageConfig.model_validate(base).key_fields()
    assert StageConfig.model_validate({**base, "logging_steps": 3, "samples": 0}).key_fields() == key
    assert StageConfig.model_validate({**base, "lr": 1e-3}).key_fields() != key
    assert not COSMETIC & set(key) and "parent" not in key
    assert "data" not in StageConfig.model_validate(base).key_fields(without=frozenset({"data"}))


def test_method_keys_the_trl_config_lacks_are_an_error(tmp_path, monkeypatch):
    """training_args used to drop a method kwarg the TRL config class does not have, silently."""
    import dataclasses

    from rualign.train import run as train_run
    from rualign.train.methods import StageContext

    @dataclasses.dataclass
    class FakeConfig:
        output_dir: str = ""
        learning_rate: float = 0.0
        beta: float = 0.0

    config = TrainConfig.model_validate({"stages": [{"name": "dpo", "method": "dpo", "data": "d"}]})
    stage = config.stage("dpo")
    ctx = StageContext(config=config, stage=stage, tokenizer=None, model=None, start_model="m", out_root=tmp_path,
                       precision="fp32")
    spec = dataclasses.replace(METHODS["dpo"], trl_config="fake:Config", config_kwargs="fake:kwargs")
    method_keys = {"beta": 0.2, "loss_type": "sigmoid"}
    monkeypatch.setattr(train_run, "resolve", lambda ref: FakeConfig if ref == "fake:Config" else
                        (lambda params, ctx: dict(method_keys)))
    monkeypatch.setattr(type(spec), "config_class", lambda self: FakeConfig)
    with pytest.raises(ConfigError, match=r"method 'dpo': loss_type not accepted by FakeConfig"):
        train_run.training_args(spec, config, stage, ctx, tmp_path)
    method_keys.pop("loss_type")
    made = train_run.training_args(spec, config, stage, ctx, tmp_path)
    assert made.beta == 0.2 and made.learning_rate == stage.lr  # common keys it lacks (max_length...) skipped
