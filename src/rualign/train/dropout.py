"""A faster dropout for LoRA inputs on CPU.

peft puts an `nn.Dropout` in front of every LoRA A matrix; with 7 target modules x 30 layers that is 210
Bernoulli draws per step over tensors of batch x tokens x 576..1536 floats, 12% of a SmolLM2 LoRA step in
a profile (bench/results/flops_profile.txt): torch's CPU `bernoulli_` draws one float per element. Here the
draw is 64 random bits per FOUR elements (`random_` on int64, viewed as four 16-bit lanes of which 15
bits are used), compared with a threshold: same independent Bernoulli mask, ~3x cheaper, and the saved
mask is one byte per element. The drop probability is rounded to a multiple of 1/32768 (0.05 ->
0.049988) and the kept values are scaled by 1 / (1 - that probability), so E[output] = input exactly.
On CUDA (fast Philox dropout already) and in eval mode this is plain `F.dropout`.
"""

from __future__ import annotations

from typing import Any, Iterator

import torch

_LANES = 32768  # 15 random bits per element


class _MaskedScale(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, keep: torch.Tensor, scale: float) -> torch.Tensor:
        ctx.save_for_backward(keep)
        ctx.scale = scale
        return x * keep * scale

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple:
        (keep,) = ctx.saved_tensors
        return grad * keep * ctx.scale, None, None


def keep_mask(shape: torch.Size, drop_lanes: int, device: torch.device) -> torch.Tensor:
    """Boolean mask, True with probability 1 - drop_lanes / 32768, independent per element."""
    count = 1
    for size in shape:
        count *= size
    words = torch.empty((count + 3) // 4, dtype=torch.int64, device=device).random_()
    lanes = words.view(torch.int16)[:count].bitwise_and_(_LANES - 1)  # 4 x 15 usable bits per int64
    return (lanes >= drop_lanes).view(shape)


class FastDropout(torch.nn.Dropout):
    """Drop-in for `nn.Dropout(p)` on LoRA inputs (see module doc). A subclass, so code that switches
    dropout off by setting `p = 0` on every nn.Dropout (TRL's `disable_dropout`, on by default for DPO,
    KTO, ORPO, ...) switches this one off too; `p` is read at every call."""

    @property
    def drop_lanes(self) -> int:
        return round(self.p * _LANES)

    @property
    def scale(self) -> float:
        return _LANES / (_LANES - self.drop_lanes) if self.drop_lanes < _LANES else 0.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.drop_lanes == 0:
            return x
        if x.device.type != "cpu" or self.inplace:
            return torch.nn.functional.dropout(x, self.p, True, self.inplace)
        return _MaskedScale.apply(x, keep_mask(x.shape, self.drop_lanes, x.device), self.scale)

    def extra_repr(self) -> str:
        return f"p={self.p} (as {self.drop_lanes}/{_LANES})"


def lora_dropouts(model: Any) -> Iterator[tuple[torch.nn.ModuleDict, str, torch.nn.Module]]:
    """(holder, adapter name, dropout module) for every peft LoRA input dropout in the model."""
    for module in model.modules():
        dropouts = getattr(module, "lora_dropout", None)
        if isinstance(dropouts, torch.nn.ModuleDict):
            for name, dropout in list(dropouts.items()):
                yield dropouts, name, dropout


def use_fast_lora_dropout(model: Any) -> int:
    """Replace every peft LoRA input dropout with FastDropout; returns how many were replaced."""
    replaced = 0
    for holder, name, dropout in list(lora_dropouts(model)):
        if type(dropout) is torch.nn.Dropout and dropout.p > 0:
            holder[name] = FastDropout(dropout.p)
            replaced += 1
    return replaced
