"""Padding-free packing (sft `packing: true`) isolates attention per example: each example's loss in a
packed row equals its loss alone; without the position_ids reset the examples would contaminate."""

from __future__ import annotations

import pytest
import torch

from rualign.train.fast import add_trainable_head
from test_fast_sft import CONVERSATIONS, lora_model


def _examples(tiny_model_dir):
    from transformers import AutoTokenizer

    from rualign.train.masks import tokenize_with_mask

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    # labels as TRL's dataset preparation folds them in from our completion mask
    return [{"input_ids": ids, "labels": [t if m else -100 for t, m in zip(ids, mask)]} for ids, mask in
            (tokenize_with_mask(tokenizer, c) for c in CONVERSATIONS)]


def _collate(examples, padding_free: bool):
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    return DataCollatorForLanguageModeling(pad_token_id=0, padding_free=padding_free)(examples)


def _per_example_losses(model, batch, lengths) -> list[float]:
    """Token-mean loss of each example of a packed row (one row, examples back to back)."""
    keys = ("input_ids", "position_ids")
    # use_cache=False as in training: with a cache, transformers does not read packing from position_ids
    logits = model(**{k: batch[k] for k in keys if k in batch}, use_cache=False).logits[0, :-1]
    targets = batch["labels"][0, 1:]
    losses = torch.nn.functional.cross_entropy(logits, targets.clamp(min=0), reduction="none")
    out, start = [], 0
    for length in lengths:
        keep = targets[start:start + length - 1] != -100
        out.append(float(losses[start:start + length - 1][keep].mean()))
        start += length
    return out


def test_packed_example_losses_equal_unpacked(tiny_model_dir):
    model = lora_model(tiny_model_dir).eval()
    examples = _examples(tiny_model_dir)
    lengths = [len(e["input_ids"]) for e in examples]
    packed = _collate(examples, padding_free=True)
    assert packed["input_ids"].shape == (1, sum(lengths)) and "attention_mask" not in packed
    alone = [_per_example_losses(model, _collate([e], padding_free=True), [n])[0]
             for e, n in zip(examples, lengths)]
    together = _per_example_losses(model, packed, lengths)
    assert together == pytest.approx(alone, abs=1e-4)
    # Control: the same packed row with one running position sequence (plain causal attention across the
    # boundary) changes every example after the first, so the check above can fail.
    leaky = {**packed, "position_ids": torch.arange(sum(lengths))[None]}
    mixed = _per_example_losses(model, leaky, lengths)
    assert abs(mixed[0] - alone[0]) < 1e-4
    assert all(abs(m - a) > 1e-3 for m, a in zip(mixed[1:], alone[1:]))


def test_packed_batch_total_loss_equals_padded_batch(tiny_model_dir):
    model = lora_model(tiny_model_dir).eval()
    add_trainable_head(model.get_base_model())
    examples = _examples(tiny_model_dir)
    padded = _collate(examples, padding_free=False)
    packed = _collate(examples, padding_free=True)
    keys = ("input_ids", "attention_mask", "position_ids", "labels")
    loss_padded = model(**{k: padded[k] for k in keys if k in padded}, trainable_only=True).loss
    loss_packed = model(**{k: packed[k] for k in keys if k in packed}, trainable_only=True).loss
    assert torch.allclose(loss_padded, loss_packed, atol=1e-5)
