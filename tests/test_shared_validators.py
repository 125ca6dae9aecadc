"""The validators the stage schemas share (rualign.config): one definition, the same answer in every schema."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from rualign.eval.gen_config import Generation
from rualign.eval.schema import JudgeConfig
from rualign.train.schema import StageConfig


@pytest.mark.parametrize("make", [lambda v: Generation(backend="openai", base_url="http://127.0.0.1:9/v1",
                                                       api_key_env=v),
                                  lambda v: JudgeConfig(backend="openai", base_url="http://127.0.0.1:9/v1",
                                                        api_key_env=v)])
def test_a_pasted_key_is_refused_by_generation_and_judge_alike(make):
    # Generation used to take any string here, so a pasted key reached its manifests.
    for pasted in ("sk-abc123", "Bearer xyz", "my key"):
        with pytest.raises(ValidationError, match="NAME of an environment variable"):
            make(pasted)
    assert make("OPENAI_API_KEY").api_key_env == "OPENAI_API_KEY"


def test_unknown_table_rows_name_the_table_and_its_rows():
    with pytest.raises(ValidationError, match=r"unknown generation backend 'x' \(expected one of hf, openai, vllm\)"):
        Generation(backend="x")
    with pytest.raises(ValidationError, match=r"unknown judge backend 'x' \(expected one of llamacpp, local, openai"):
        JudgeConfig(backend="x")
    with pytest.raises(ValidationError, match=r"unknown method 'dpx' \(expected one of sft, dpo"):
        StageConfig(name="a", method="dpx", data="x.yaml")
    with pytest.raises(ValidationError, match="needs 'base_url'"):
        Generation(backend="openai")
