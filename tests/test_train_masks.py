"""Assistant-only loss masks: exact spans for real templates, loud failures for broken ones."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from rualign.errors import RualignError
from rualign.models import CHATML_NO_SYSTEM
from rualign.train.methods import StageContext
from rualign.train.masks import (build_sft_dataset, check_mask, ensure_pad_token, render_marked,
                                 tokenize_with_mask, trainable_runs)

CONVERSATION = [
    {"role": "system", "content": "Ты полезный ассистент."},
    {"role": "user", "content": "Привет! Как дела?"},
    {"role": "assistant", "content": "Хорошо, спасибо. Чем помочь?"},
    {"role": "user", "content": "Назови столицу Франции."},
    {"role": "assistant", "content": "Париж."},
]


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir)


def _decoded_runs(tokenizer, ids, mask):
    return [tokenizer.decode(ids[a:b]) for a, b in trainable_runs(mask)]


@pytest.mark.parametrize("template", ["model", "chatml_no_system"])
def test_trainable_tokens_are_exactly_assistant_turns_plus_end_of_turn(tokenizer, template):
    if template == "chatml_no_system":
        tokenizer = tokenizer.__class__.from_pretrained(tokenizer.name_or_path)
        tokenizer.chat_template = CHATML_NO_SYSTEM
    ids, mask = tokenize_with_mask(tokenizer, CONVERSATION)
    assert _decoded_runs(tokenizer, ids, mask) == ["Хорошо, спасибо. Чем помочь?<|im_end|>", "Париж.<|im_end|>"]
    check_mask(tokenizer, CONVERSATION, ids, mask)
    # the rendered full conversation is what was tokenized; user and system text is not trainable
    assert "[[Париж.<|im_end|>]]" in render_marked(tokenizer, ids, mask)
    assert "Привет" not in "".join(_decoded_runs(tokenizer, ids, mask))


def _with_template(tokenizer, template):
    broken = tokenizer.__class__.from_pretrained(tokenizer.name_or_path)
    broken.chat_template = template
    return broken


def test_template_without_end_of_turn_token_fails(tokenizer):
    no_eot = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}\n{% endfor %}"
              "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
    with pytest.raises(RualignError, match="end-of-turn"):
        tokenize_with_mask(_with_template(tokenizer, no_eot), CONVERSATION)


def test_template_that_rewrites_assistant_text_fails(tokenizer):
    upper = CHATML_NO_SYSTEM.replace("message['content'] + '<|im_end|>' }}{% endgeneration %}",
                                     "message['content'] | upper + '<|im_end|>' }}{% endgeneration %}")
    assert upper != CHATML_NO_SYSTEM
    with pytest.raises(RualignError, match="verbatim"):
        tokenize_with_mask(_with_template(tokenizer, upper), CONVERSATION)


def test_template_that_is_not_prefix_stable_fails(tokenizer):
    # renders the generation prompt differently from a finished assistant turn's header
    unstable = CHATML_NO_SYSTEM.replace("'<|im_start|>assistant\n'", "'<|im_start|>bot\n'")
    assert unstable != CHATML_NO_SYSTEM
    with pytest.raises(RualignError, match="prefix-stable"):
        tokenize_with_mask(_with_template(tokenizer, unstable), CONVERSATION)


def test_check_mask_catches_a_shifted_mask(tokenizer):
    ids, mask = tokenize_with_mask(tokenizer, CONVERSATION)
    shifted = [0] + mask[:-1]
    with pytest.raises(RualignError):
        check_mask(tokenizer, CONVERSATION, ids, shifted)
    missing_turn = list(mask)
    a, b = trainable_runs(mask)[0]
    missing_turn[a:b] = [0] * (b - a)
    with pytest.raises(RualignError, match="1 trainable span"):
        check_mask(tokenizer, CONVERSATION, ids, missing_turn)


def test_rows_truncated_to_no_assistant_tokens_are_dropped_and_counted(tokenizer):
    long_user = {"role": "user", "content": "очень длинный вопрос " * 40}
    rows = [{"id": "short", "messages": CONVERSATION},
            {"id": "cut", "messages": [long_user, {"role": "assistant", "content": "Ответ."}]}]
    ctx = StageContext(config=None, stage=SimpleNamespace(max_length=96), tokenizer=tokenizer, model=None,
                       start_model="", out_root=Path("."), precision="fp32", log=lambda _: None)
    dataset = build_sft_dataset(rows, ctx)
    assert len(dataset) == 1
    assert ctx.rows["train"] == {"in": 2, "kept": 1, "truncated": 2, "dropped_no_trainable_tokens": 1,
                                 "dropped_ids": ["cut"]}
    assert "[[" in ctx.mask_example
    assert all(len(ids) <= 96 for ids in dataset["input_ids"])
    with pytest.raises(RualignError, match="max_length"):
        build_sft_dataset(rows[1:], ctx)


def test_pad_token_differs_from_eos(tokenizer):
    tok = tokenizer.__class__.from_pretrained(tokenizer.name_or_path)
    assert tok.pad_token_id == tok.eos_token_id  # SmolLM2 ships pad == eos: the case this guards against
    action = ensure_pad_token(tok)
    assert tok.pad_token_id is not None and tok.pad_token_id != tok.eos_token_id
    assert "pad token" in action
