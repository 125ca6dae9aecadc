"""Continuous batching for in-process generation (the hf backend).

`transformers.generate` runs a fixed batch until its LONGEST answer ends, and pads every prompt to the
longest prompt of the batch. On CPU both waste most of the work: one 400-token prompt among 60-token ones
made a 16-prompt batch spend two thirds of its time on padding, and rows that stopped early keep being
computed until the last row stops. This decoder keeps `slots` rows in flight over one left-padded
`DynamicCache`: a row that stops leaves the batch at once, and waiting prompts are prefilled (grouped by
length, longest first) and merged into the running cache as slots free up.

Each row sees exactly its own tokens (padding is masked and positions count real tokens only), so greedy
output is the same as generating one prompt at a time in fp32 (tested). Sampling draws from a generator
seeded per prompt, so a sampled answer does not depend on which prompts shared its batch either.

Only plain `DynamicLayer` caches are handled (Llama, Qwen2, Mistral without sliding windows, ...); other
cache layouts (sliding windows, linear attention) are reported by `supported()` and fall back to
`transformers.generate`.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import torch
from transformers.cache_utils import DynamicCache, DynamicLayer


@dataclass
class _Row:
    index: int                 # position in the caller's prompt list
    generator: Any = None      # torch.Generator for sampling, seeded per prompt
    tokens: list[int] = field(default_factory=list)


class _BufferedLayer(DynamicLayer):
    """A DynamicLayer that appends new keys/values into spare capacity. The stock layer concatenates, i.e.
    copies the layer's whole cache for every generated token: 34% of a 32-row decode's time in a profile."""

    spare = 64  # extra positions reserved at each (re)allocation

    def update(self, key_states: Any, value_states: Any, *args: Any, **kwargs: Any) -> tuple[Any, Any]:
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
            self.assign(key_states[..., :0, :], value_states[..., :0, :])
        length, new = self.keys.shape[-2], key_states.shape[-2]
        if length + new > self._key_buffer.shape[-2]:
            self.assign(self.keys, self.values, spare=new + max(self.spare, length // 2))
        self._key_buffer[..., length:length + new, :] = key_states
        self._value_buffer[..., length:length + new, :] = value_states
        self.keys = self._key_buffer[..., :length + new, :]
        self.values = self._value_buffer[..., :length + new, :]
        return self.keys, self.values

    def assign(self, keys: Any, values: Any, spare: int | None = None) -> None:
        """Replace the cached keys/values (copied into a fresh buffer with room to grow)."""
        length = keys.shape[-2]
        shape = (*keys.shape[:-2], length + (self.spare if spare is None else spare), keys.shape[-1])
        self._key_buffer, self._value_buffer = keys.new_empty(shape), values.new_empty(shape)
        self._key_buffer[..., :length, :] = keys
        self._value_buffer[..., :length, :] = values
        self.keys, self.values = self._key_buffer[..., :length, :], self._value_buffer[..., :length, :]
        self.is_initialized = True


def _new_cache(config: Any) -> Any:
    cache = DynamicCache(config=config)
    cache.layers = [_BufferedLayer() for _ in cache.layers]
    return cache


def supported(model: Any) -> bool:
    """True when the model's default cache is made of plain, croppable dynamic layers."""
    try:
        cache = DynamicCache(config=_config(model))
    except Exception:  # noqa: BLE001 - an unusual config: let transformers.generate handle it
        return False
    layers = getattr(cache, "layers", None)
    return bool(layers) and all(type(layer) is DynamicLayer for layer in layers)


def _config(model: Any) -> Any:
    return model.get_base_model().config if hasattr(model, "get_base_model") else model.config


def _cache_kwarg(model: Any) -> str:
    # transformers renamed `past_key_values` to `cache` during 5.x; use whichever this version takes.
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return "cache" if "cache" in inspect.signature(base.forward).parameters else "past_key_values"


class ContinuousDecoder:
    """Greedy or sampled decoding of many prompts with at most `slots` rows in flight."""

    def __init__(self, model: Any, *, stop_ids: set[int], pad_id: int, slots: int,
                 choose: Callable[[Any, list[_Row]], Any]):
        self.model = model
        self.device = next(model.parameters()).device
        self.stop_ids, self.pad_id, self.slots = set(stop_ids), pad_id, max(1, slots)
        self.choose = choose  # (last-position logits [rows, vocab], rows) -> next token per row
        self._cache_kw = _cache_kwarg(model)
        self._config = _config(model)
        # Admit waiting prompts only once a quarter of the slots is free: every admission copies the
        # running cache once (merge), so admitting one prompt per finished row would copy it far more often.
        self._admit_at = max(1, self.slots // 4)

    def run(self, prompts: list[list[int]], max_new_tokens: int,
            make_row: Callable[[int, list[int]], _Row]) -> Iterator[tuple[int, list[int], str]]:
        """Yield (prompt index, generated tokens without the stop token, "stop" | "length") as rows finish."""
        waiting = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))  # longest first: memory peak early
        rows: list[_Row] = []
        cache = mask = pending = None  # pending: each row's chosen token, not yet fed to the model
        with torch.inference_mode():
            while waiting or rows:
                free = self.slots - len(rows)
                if waiting and (free >= self._admit_at or not rows):
                    admitted, waiting = waiting[:free], waiting[free:]
                    fresh = len(rows)  # only the admitted rows get a new token; the running ones wait
                    parts = [] if cache is None else [(cache, mask, pending)]
                    for bucket in _buckets(admitted, prompts):
                        group = [make_row(i, prompts[i]) for i in bucket]
                        parts.append(self._prefill([prompts[i] for i in bucket], group))
                        rows += group
                    cache, mask, pending = self._stack(parts)
                else:
                    cache, mask, pending = self._step(cache, mask, pending, rows)
                    fresh = 0
                keep = list(range(fresh))
                for position in range(fresh, len(rows)):
                    row, token = rows[position], int(pending[position])
                    if token in self.stop_ids:
                        yield row.index, row.tokens, "stop"
                        continue
                    row.tokens.append(token)
                    if len(row.tokens) >= max_new_tokens:
                        yield row.index, row.tokens, "length"
                        continue
                    keep.append(position)
                if len(keep) < len(rows):
                    rows = [rows[p] for p in keep]
                    cache, mask, pending = self._select(cache, mask, pending, keep)

    def _forward(self, input_ids: Any, mask: Any, positions: Any, cache: Any) -> Any:
        out = self.model(input_ids=input_ids, attention_mask=mask, position_ids=positions, use_cache=True,
                         logits_to_keep=1, **{self._cache_kw: cache})
        return out.logits[:, -1, :].float()

    def _prefill(self, prompts: list[list[int]], rows: list[_Row]) -> tuple[Any, Any, Any]:
        width = max(len(p) for p in prompts)
        ids = torch.full((len(prompts), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(prompts), width), dtype=torch.long)
        for r, prompt in enumerate(prompts):  # left padding: every row's last prompt token is aligned
            ids[r, width - len(prompt):] = torch.tensor(prompt, dtype=torch.long)
            mask[r, width - len(prompt):] = 1
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        cache = _new_cache(self._config)
        ids, mask, positions = ids.to(self.device), mask.to(self.device), positions.to(self.device)
        logits = self._forward(ids, mask, positions, cache)
        return cache, mask, self.choose(logits, rows)

    def _step(self, cache: Any, mask: Any, pending: Any, rows: list[_Row]) -> tuple[Any, Any, Any]:
        positions = mask.sum(-1, keepdim=True)  # real tokens so far = the new token's position
        mask = torch.cat([mask, mask.new_ones((mask.shape[0], 1))], dim=1)
        logits = self._forward(pending.view(-1, 1), mask, positions, cache)
        return cache, mask, self.choose(logits, rows)

    def _stack(self, parts: list[tuple[Any, Any, Any]]) -> tuple[Any, Any, Any]:
        """One cache from several (cache, mask, pending) parts, stacked in order and left-padded to one width."""
        if len(parts) == 1:
            return parts[0]
        width = max(m.shape[1] for _, m, _ in parts)
        cache = parts[0][0]
        for n, layer in enumerate(cache.layers):
            layer.assign(torch.cat([_pad_left(c.layers[n].keys, width) for c, _, _ in parts], dim=0),
                         torch.cat([_pad_left(c.layers[n].values, width) for c, _, _ in parts], dim=0))
        mask = torch.cat([_pad_left(m, width, dim=1) for _, m, _ in parts], dim=0)
        return cache, mask, torch.cat([p for _, _, p in parts])

    def _select(self, cache: Any, mask: Any, pending: Any, keep: list[int]) -> tuple[Any, Any, Any]:
        """Drop finished rows, then the leading columns no remaining row uses."""
        if not keep:
            return None, None, None
        index = torch.tensor(keep, device=mask.device)
        mask, pending = mask[index], pending[index]
        start = int(mask.any(dim=0).nonzero()[0])
        for layer in cache.layers:
            layer.assign(layer.keys[index, :, start:], layer.values[index, :, start:])
        return cache, mask[:, start:], pending


def _buckets(indices: list[int], prompts: list[list[int]], slack: float = 1.25) -> list[list[int]]:
    """Split length-sorted (longest first) prompts so each prefill batch pads at most `slack`x its tokens:
    one 400-token prompt no longer makes fifteen 60-token prompts pay for 400 positions each."""
    buckets: list[list[int]] = []
    for index in indices:
        current = buckets[-1] if buckets else None
        if current is not None:
            width = len(prompts[current[0]])
            real = sum(len(prompts[i]) for i in current) + len(prompts[index])
            if width * (len(current) + 1) <= slack * real:
                current.append(index)
                continue
        buckets.append([index])
    return buckets


def _pad_left(tensor: Any, width: int, dim: int = -2) -> Any:
    """Zeros on the left of `dim` up to `width` (masked columns: their values are never attended)."""
    missing = width - tensor.shape[dim]
    if missing == 0:
        return tensor
    shape = list(tensor.shape)
    shape[dim] = missing
    return torch.cat([tensor.new_zeros(shape), tensor], dim=dim)
