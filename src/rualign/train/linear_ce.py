"""Vocabulary projection + cross-entropy in chunks, with the gradient computed in the forward pass.

The plain path materialises, for N trainable positions and a V-word vocabulary, bf16 logits, their fp32
copy, the fp32 log-softmax kept for backward and, in backward, two more N x V gradients: with SmolLM2's
49k vocabulary and N ~ 4,000 that is ~3 GiB of short-lived memory per step, most of the gap between
rualign's peak RSS and TRL's. Here at most `chunk` rows of logits exist at a time: for each chunk the
loss and d(loss)/d(hidden) (= (softmax - onehot) @ W) are computed at once, and backward only scales the
stored N x d gradient. The FLOPs are those of the plain forward + backward (no recomputation); the head
weight's own gradient is accumulated too when it is trainable (full fine-tuning).

Under CPU bf16 autocast the two matmuls run in bf16 with fp32 softmax, as autocast does for the plain
path (tests/test_fast_sft.py compares losses and gradients with the model's own).
"""

from __future__ import annotations

from typing import Any

import torch

CHUNK = 1024  # rows of logits alive at a time: 1024 x 49k fp32 = 192 MiB


class _LinearCrossEntropySum(torch.autograd.Function):
    """sum_i CE(hidden_i @ weight.T, target_i); gradients computed during forward."""

    @staticmethod
    def forward(ctx: Any, hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, low: Any,
                chunk: int) -> torch.Tensor:
        compute = low or hidden.dtype
        w = weight.to(compute)
        grad_hidden = torch.empty(hidden.shape, dtype=hidden.dtype, device=hidden.device)
        grad_weight = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device) \
            if weight.requires_grad else None
        total = hidden.new_zeros((), dtype=torch.float32)
        for start in range(0, hidden.shape[0], chunk):
            h = hidden[start:start + chunk].to(compute)
            t = targets[start:start + chunk]
            logits = (h @ w.T).float()
            lse = torch.logsumexp(logits, dim=-1)
            rows = torch.arange(t.shape[0], device=t.device)
            total += (lse - logits[rows, t]).sum()
            # d(sum CE)/d(logits) = softmax - onehot, computed in place over the logits buffer
            grad_logits = logits.sub_(lse[:, None]).exp_()
            grad_logits[rows, t] -= 1.0
            grad_logits = grad_logits.to(compute)
            grad_hidden[start:start + chunk] = (grad_logits @ w).to(hidden.dtype)
            if grad_weight is not None:
                grad_weight += (grad_logits.T @ h).float()
        ctx.save_for_backward(grad_hidden, grad_weight if grad_weight is not None else torch.empty(0))
        ctx.weight_dtype, ctx.has_weight_grad = weight.dtype, grad_weight is not None
        return total

    @staticmethod
    def backward(ctx: Any, grad_total: torch.Tensor) -> tuple:
        grad_hidden, grad_weight = ctx.saved_tensors
        weight_grad = (grad_weight * grad_total).to(ctx.weight_dtype) if ctx.has_weight_grad else None
        return grad_hidden * grad_total.to(grad_hidden.dtype), weight_grad, None, None, None


def linear_cross_entropy_sum(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor,
                             chunk: int = CHUNK) -> torch.Tensor:
    """Summed cross-entropy of `hidden @ weight.T` against `targets`, never holding more than `chunk` rows
    of logits. Matmuls run in the CPU/GPU autocast dtype when autocast is on (as a Linear would)."""
    low = None
    for device in ("cpu", "cuda"):
        if hidden.device.type == device and torch.is_autocast_enabled(device):
            low = torch.get_autocast_dtype(device)
    with torch.autocast(hidden.device.type, enabled=False):
        return _LinearCrossEntropySum.apply(hidden, weight, targets, low, chunk)
