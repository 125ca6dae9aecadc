"""Faster SFT: the vocabulary projection and cross-entropy only on trainable positions, length-grouped
batches, and (optional) padding-free packing with attention isolated per example.

Why: with SmolLM2's 49k vocabulary the LM head is ~21% of a 135M model's matmul FLOPs, and on CPU TRL's
fused head scores *every* position (prompt and padding included) and also computes entropy and top-1
metrics over the whole vocabulary. Here the final hidden states are gathered at positions whose
next-token label is not -100 *before* the head, so prompt and padding tokens never reach it. The loss is
the same token-mean cross-entropy (same `num_items_in_batch` normalisation under gradient accumulation),
so losses and gradients equal the plain path (tests/test_fast_sft.py).

Right-padded batches also run without their padding mask (exact: see `right_padded`), so SDPA uses its
fused causal kernel instead of a masked L x L score tensor: faster, and GiBs less memory at L ~ 1000.

The compact head is added by patching the base model's `forward` (like TRL's own fused head), so the call
still goes through the DDP and PEFT wrappers: `model(**batch, trainable_only=True)`.

Packing (`packing: true` in an sft stage) uses TRL's padding-free collator: examples of a batch are
concatenated into one row with `position_ids` restarting at 0 per example and no attention mask, from
which transformers builds a block-diagonal causal mask (`find_packed_sequence_indices`), so no example
attends to another (tests/test_packing.py compares per-example losses packed vs unpacked). On CPU with
SDPA that mask is dense over the packed row, so attention costs grow with the square of the packed length;
bench/NOTES.md has the measured effect, which is why it is off by default.
"""

from __future__ import annotations

import functools
import types
from typing import Any

from pydantic import Field

from rualign.config import Strict


class FastSFTParams(Strict):
    """The sft method's speed switches (all change speed only, not the loss)."""

    trainable_only_loss: bool = True   # LM head + cross-entropy on trainable positions only
    group_by_length: bool = True       # batches of similar lengths (less padding); order still random
    packing: bool = False              # padding-free packing with per-example attention (see module doc)
    pad_to_multiple_of: int | None = Field(8, ge=1)


def _supports_compact_head(model: Any) -> str | None:
    """None when the compact head computes exactly the model's own logits; else why not."""
    config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    for key in ("final_logit_softcapping", "logit_scale", "output_multiplier", "lm_head_multiplier",
                "logits_scaling"):
        if getattr(config, key, None) not in (None, 1, 1.0):
            return f"the model scales its logits ({key})"
    head = model.get_output_embeddings()
    if head is None or not hasattr(head, "weight"):
        return "the model has no plain output projection"
    return None


def right_padded(mask: Any) -> bool:
    """True when every row is real tokens followed by padding only. Then causal attention *without* the
    padding mask gives the real tokens exactly the same outputs (no real token sees a later position), the
    padding positions carry no label, and SDPA can run its fused causal kernel instead of materialising a
    batch x heads x L x L masked score tensor (faster, and several GiB less memory at L ~ 1000)."""
    if mask is None or mask.dim() != 2:
        return False
    return bool(mask[:, 0].all() and (mask[:, 1:] <= mask[:, :-1]).all())


def _plain_head(head: Any) -> bool:
    """A bias-free nn.Linear whose full weight is here (not a LoRA-wrapped head, not a ZeRO-3/FSDP shard).
    FSDP2 re-classes a sharded Linear as FSDPLinear(FSDPModule, Linear); inside forward its weight is the
    gathered full tensor, so the chunked path applies (tests/test_train_sharded.py: same weights as one
    process). Outside forward, or under ZeRO-3 (an empty placeholder), the shape test fails."""
    import torch

    linear = type(head) is torch.nn.Linear or _fsdp2_linear(head)
    return (linear and head.bias is None and head.weight.is_floating_point()
            and type(head.weight.data) is torch.Tensor  # not a DTensor shard
            and tuple(head.weight.shape) == (head.out_features, head.in_features))


def _fsdp2_linear(head: Any) -> bool:
    import torch

    try:
        from torch.distributed.fsdp import FSDPModule
    except ImportError:  # a torch without FSDP2
        return False
    return isinstance(head, FSDPModule) and type(head).__bases__[-1] is torch.nn.Linear


def add_trainable_head(model: Any) -> str | None:
    """Patch `model.forward` (a transformers causal LM, not the PEFT wrapper) so that
    `forward(..., labels=..., trainable_only=True)` returns only the loss, computed on label != -100
    positions. Returns None when patched, else the reason it was not (the plain path is then used)."""
    import torch
    import torch.nn.functional as F
    from transformers.modeling_outputs import CausalLMOutputWithPast

    from rualign.train.linear_ce import linear_cross_entropy_sum

    why = _supports_compact_head(model)
    if why is not None:
        return why
    original = model.forward

    @functools.wraps(type(model).forward)  # generate() checks its kwargs against the signature
    def forward(self, *args, trainable_only=False, labels=None, num_items_in_batch=None, **kwargs):
        if not trainable_only:
            extra = {k: v for k, v in (("labels", labels), ("num_items_in_batch", num_items_in_batch))
                     if v is not None}
            return original(*args, **kwargs, **extra)
        kwargs["use_cache"] = False
        for key in ("fused_lm_head", "output_hidden_states", "return_dict"):
            kwargs.pop(key, None)
        if getattr(self, "rualign_drop_padding_mask", True) and right_padded(kwargs.get("attention_mask")):
            kwargs.pop("attention_mask")  # plain causal attention: see right_padded()
        hidden = self.base_model(*args, **kwargs).last_hidden_state[:, :-1]  # looked up per call (PEFT, FSDP)
        targets = labels[:, 1:].to(hidden.device)
        keep = targets != -100
        head = self.get_output_embeddings()
        # Gather first, project second: prompt and padding positions never reach the vocabulary projection.
        if _plain_head(head):  # chunked, gradient in forward: never N x vocab logits at once (linear_ce.py)
            loss_sum = linear_cross_entropy_sum(hidden[keep], head.weight, targets[keep])
        else:
            loss_sum = F.cross_entropy(head(hidden[keep]).float(), targets[keep], reduction="sum")
        denom = keep.sum().clamp(min=1) if num_items_in_batch is None else num_items_in_batch
        loss = loss_sum / torch.as_tensor(denom, device=loss_sum.device)
        return CausalLMOutputWithPast(loss=loss)

    model.forward = types.MethodType(forward, model)
    return None


@functools.lru_cache(maxsize=1)
def trainer_class():
    """FastSFTTrainer, built on first use so importing this module does not import TRL."""
    from trl import SFTTrainer

    class FastSFTTrainer(SFTTrainer):
        """TRL's SFTTrainer with the compact LM head (`trainable_only_loss`, on by default)."""

        def __init__(self, *args, trainable_only_loss: bool = True, **kwargs):
            super().__init__(*args, **kwargs)
            self.trainable_only_reason = "off in the stage config"
            if trainable_only_loss:
                base = self.model.get_base_model() if hasattr(self.model, "get_base_model") else self.model
                self.trainable_only_reason = add_trainable_head(base) or "on"
            self.trainable_only_loss = self.trainable_only_reason == "on"

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            if not self.trainable_only_loss or return_outputs or not model.training:
                return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
            inputs = {k: v for k, v in inputs.items() if k not in ("completion_mask", "assistant_masks")}
            loss = model(**inputs, trainable_only=True, num_items_in_batch=num_items_in_batch).loss
            # Like Trainer.compute_loss: num_items_in_batch counts every rank's tokens; DDP averages gradients.
            if self.args.average_tokens_across_devices and num_items_in_batch is not None:
                loss = loss * (self.accelerator.num_processes // self.get_tp_size())
            self._count_tokens(inputs)
            return loss

        def _count_tokens(self, inputs) -> None:
            # The num_tokens metric TRL logs (padding-free rows have no attention mask: every token is real).
            if "attention_mask" in inputs:
                seen = inputs["attention_mask"].sum().reshape(1)
            else:
                seen = inputs["input_ids"].new_tensor([inputs["input_ids"].numel()])
            self._total_train_tokens += int(self.accelerator.gather_for_metrics(seen).sum().item())
            self._metrics["train"]["num_tokens"] = [self._total_train_tokens]

    return FastSFTTrainer


def fast_sft_trainer(*args, **kwargs):
    """The sft row's trainer (methods.py names it as "module:function")."""
    return trainer_class()(*args, **kwargs)


def sft_config_kwargs(params: Any, ctx: Any) -> dict:
    """TRL config keys for the sft row: our masks + the speed switches."""
    from rualign.train.masks import sft_config_kwargs as mask_kwargs

    kwargs = mask_kwargs(params, ctx)
    kwargs["pad_to_multiple_of"] = params.pad_to_multiple_of
    if params.group_by_length:
        kwargs["train_sampling_strategy"] = "group_by_length"
    if params.packing:
        kwargs["padding_free"] = True  # TRL's collator: one row, position_ids restart per example
    return kwargs


def sft_trainer_kwargs(ctx: Any) -> dict:
    params = ctx.stage.method_params()
    ctx.info["speed"] = {"trainable_only_loss": params.trainable_only_loss,
                         "group_by_length": params.group_by_length, "packing": params.packing}
    return {"trainable_only_loss": params.trainable_only_loss}
