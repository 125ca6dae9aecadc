"""The compact LM head (train/fast.py): loss and gradients equal the plain full-logits path, and an SFT
stage trains to the same losses with it on or off."""

from __future__ import annotations

import pytest
import torch

from rualign.runs import read_jsonl
from rualign.train.fast import add_trainable_head
from rualign.train.run import run_training
from rualign.train.schema import TrainConfig
from test_train_sft import chat_rows, make_data, stage

CONVERSATIONS = [
    [{"role": "user", "content": "Привет! Как дела?"}, {"role": "assistant", "content": "Хорошо, спасибо."}],
    [{"role": "user", "content": "Назови три реки России."},
     {"role": "assistant", "content": "Волга, Обь и Енисей — три крупнейшие реки страны."},
     {"role": "user", "content": "А озеро?"}, {"role": "assistant", "content": "Байкал."}],
    [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4"}],
]


def lora_model(tiny_model_dir):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules="all-linear",
                                             task_type="CAUSAL_LM"))
    for name, param in model.named_parameters():  # non-zero B so the LoRA gradients are non-trivial
        if "lora_B" in name:
            torch.nn.init.normal_(param, std=0.02)
    return model


def padded_batch(tiny_model_dir):
    from transformers import AutoTokenizer

    from rualign.train.masks import tokenize_with_mask

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    encoded = [tokenize_with_mask(tokenizer, c) for c in CONVERSATIONS]
    width = max(len(ids) for ids, _ in encoded)
    ids = torch.zeros(len(encoded), width, dtype=torch.long)
    attention = torch.zeros_like(ids)
    labels = torch.full_like(ids, -100)
    for row, (tokens, mask) in enumerate(encoded):
        ids[row, :len(tokens)] = torch.tensor(tokens)
        attention[row, :len(tokens)] = 1
        labels[row, :len(tokens)] = torch.where(torch.tensor(mask) == 1, torch.tensor(tokens), -100)
    return {"input_ids": ids, "attention_mask": attention, "labels": labels}


def _loss_and_grads(model, batch, **kwargs):
    model.zero_grad()
    loss = model(**batch, **kwargs).loss
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
    return loss.detach(), grads


def test_trainable_only_loss_and_gradients_equal_the_plain_path(tiny_model_dir):
    model = lora_model(tiny_model_dir)
    batch = padded_batch(tiny_model_dir)
    assert (batch["labels"] == -100).sum() > batch["labels"].numel() // 3  # prompts + padding are skipped
    plain_loss, plain_grads = _loss_and_grads(model, batch)
    assert add_trainable_head(model.get_base_model()) is None
    fast_loss, fast_grads = _loss_and_grads(model, batch, trainable_only=True)
    assert torch.allclose(plain_loss, fast_loss, atol=1e-5), (plain_loss, fast_loss)
    assert len(fast_grads) == len(plain_grads) > 0
    for name, grad in plain_grads.items():
        assert torch.allclose(grad, fast_grads[name], atol=1e-6, rtol=1e-4), name
    # Without the switch the patched forward is the original one (generation, eval, TRL's own loss).
    again, _ = _loss_and_grads(model, batch)
    assert torch.allclose(again, plain_loss, atol=1e-6)


def test_num_items_in_batch_gives_the_sum_over_that_count(tiny_model_dir):
    model = lora_model(tiny_model_dir)
    batch = padded_batch(tiny_model_dir)
    add_trainable_head(model.get_base_model())
    trainable = int((batch["labels"][:, 1:] != -100).sum())
    mean = model(**batch, trainable_only=True).loss
    over_double = model(**batch, trainable_only=True, num_items_in_batch=2 * trainable).loss
    assert torch.allclose(over_double * 2, mean, atol=1e-6)


def test_models_that_scale_logits_keep_the_plain_path(tiny_model_dir):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    model.config.final_logit_softcapping = 30.0
    assert "final_logit_softcapping" in add_trainable_head(model)


@pytest.mark.parametrize("switch", ["trainable_only_loss", "group_by_length"])
def test_sft_stage_losses_equal_with_speed_switch_on_or_off(switch, tiny_model_dir, tmp_path):
    data = make_data(tmp_path / "data", chat_rows(8))
    logs = {}
    for on in (True, False):
        # group_by_length changes which rows share a batch; with batch = all rows every step sees the same set.
        extra = {switch: on, "batch_size": 8, "lora": {"r": 4, "alpha": 8, "dropout": 0.0}, "max_steps": 3}
        config = TrainConfig.model_validate({"model": str(tiny_model_dir), "seed": 3,
                                             "stages": [stage("s", data, samples=0, **extra)]})
        manifest = run_training(config, tmp_path / f"out-{on}")["s"]
        assert manifest["builder_info"]["speed"][switch] is on
        logs[on] = [r["loss"] for r in read_jsonl(tmp_path / f"out-{on}" / "s" / "train_log.jsonl") if "loss" in r]
    assert len(logs[True]) == 3
    assert logs[True] == pytest.approx(logs[False], abs=2e-4), logs


def test_padding_mask_is_dropped_only_for_right_padding():
    from rualign.train.fast import right_padded

    assert right_padded(torch.tensor([[1, 1, 1], [1, 1, 0], [1, 0, 0]]))
    assert not right_padded(torch.tensor([[1, 1, 1], [0, 1, 1]]))      # left padding needs its mask
    assert not right_padded(torch.tensor([[1, 0, 1]]))                  # a hole in the middle
    assert not right_padded(None)


# ---------------------------------------------------------------- chunked head + cross-entropy (linear_ce.py)

def _reference_ce(hidden, weight, targets):
    return torch.nn.functional.cross_entropy((hidden @ weight.T).float(), targets, reduction="sum")


@pytest.mark.parametrize("chunk", [1, 7, 64, 1000])
@pytest.mark.parametrize("weight_trainable", [False, True])
def test_chunked_linear_ce_equals_cross_entropy_in_fp32(chunk, weight_trainable):
    from rualign.train.linear_ce import linear_cross_entropy_sum

    torch.manual_seed(0)
    hidden = torch.randn(50, 16, requires_grad=True)
    weight = torch.randn(300, 16, requires_grad=weight_trainable)
    targets = torch.randint(0, 300, (50,))
    expected = _reference_ce(hidden, weight, targets)
    expected.backward()
    want_h, want_w = hidden.grad.clone(), None if weight.grad is None else weight.grad.clone()
    hidden.grad, weight.grad = None, None
    got = linear_cross_entropy_sum(hidden, weight, targets, chunk=chunk)
    (got * 3).backward()  # an upstream gradient scales both
    assert torch.allclose(got, expected, rtol=1e-5), (got, expected)
    assert torch.allclose(hidden.grad, 3 * want_h, atol=1e-5)
    if weight_trainable:
        assert torch.allclose(weight.grad, 3 * want_w, atol=1e-4)
    else:
        assert weight.grad is None


def test_chunked_linear_ce_under_bf16_autocast_matches_the_plain_bf16_path():
    from rualign.train.linear_ce import linear_cross_entropy_sum

    torch.manual_seed(1)
    hidden = torch.randn(40, 32, requires_grad=True)
    weight = torch.randn(500, 32) * 0.2
    targets = torch.randint(0, 500, (40,))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        plain = torch.nn.functional.cross_entropy(
            torch.nn.functional.linear(hidden, weight).float(), targets, reduction="sum")
    plain.backward()
    want = hidden.grad.clone()
    hidden.grad = None
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = linear_cross_entropy_sum(hidden, weight, targets, chunk=16)
    got.backward()
    assert got.dtype == torch.float32 and hidden.grad.dtype == torch.float32
    assert torch.allclose(got, plain, rtol=2e-3), (got, plain)
    assert torch.allclose(hidden.grad, want, atol=2e-2, rtol=2e-2)
    fp32 = _reference_ce(hidden.detach(), weight, targets)
    assert not torch.equal(got.detach(), fp32)  # the matmuls really ran in bf16, as autocast would


def test_lora_on_the_head_keeps_the_plain_cross_entropy(tiny_model_dir):
    from rualign.train.fast import _plain_head

    model = lora_model(tiny_model_dir)
    assert _plain_head(model.get_base_model().get_output_embeddings())  # all-linear leaves lm_head alone
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    with_head = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_model_dir),
                               LoraConfig(r=2, target_modules=["lm_head", "q_proj"], task_type="CAUSAL_LM"))
    assert not _plain_head(with_head.get_base_model().get_output_embeddings())
