"""Sharded training (FSDP2, DeepSpeed ZeRO-3): what a stage needs beyond plain DDP.

1. Export. Under FSDP / ZeRO-3 every rank holds only a shard of each weight, so the trained model cannot
   be saved from one rank's module. Every rank calls accelerate's `get_state_dict` (a collective): FSDP2
   gathers through torch.distributed.checkpoint's `get_model_state_dict(full_state_dict=True,
   cpu_offload=True)`, ZeRO-3 through the engine's `_zero3_consolidated_16bit_state_dict()` (needs
   `zero3_save_16bit_model: true`). Rank 0 loads that full state dict into a freshly built copy of the
   model (same builder, same adapter config) and exports it like an unsharded run. No hand-written gather.

2. FSDP on CPU ranks. accelerate only switches to FSDP for GPU-like distributed types (state.py enables
   the FSDP plugin in the MULTI_GPU/XPU/NPU/... branch, never for MULTI_CPU): `accelerate launch` with an
   FSDP config on CPUs silently trains plain DDP. torch's FSDP2 (`fully_shard`) itself runs on CPU with
   gloo, so when FSDP is requested and there is no GPU, `cpu_fsdp()` marks accelerate's state as FSDP
   with the launcher's plugin; model preparation, sharded checkpoints and the gather above are then
   accelerate's own code paths (tests/test_train_sharded.py).
"""

from __future__ import annotations

import contextlib
import functools
import os
from typing import Any, Callable, Iterator


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "false").lower() in ("1", "true", "yes")


def fsdp_requested() -> bool:
    """`accelerate launch` with an FSDP config (or `--use_fsdp`) sets ACCELERATE_USE_FSDP."""
    return _env_flag("ACCELERATE_USE_FSDP")


def deepspeed_requested() -> bool:
    """`accelerate launch` with a DeepSpeed config sets ACCELERATE_USE_DEEPSPEED."""
    return _env_flag("ACCELERATE_USE_DEEPSPEED")


def device_args() -> dict:
    """TrainingArguments keys for where the ranks run. DeepSpeed on CPU ranks (its CPU accelerator, gloo)
    needs use_cpu=False: with use_cpu accelerate never selects DeepSpeed; and an explicit gloo backend, or
    accelerate counts one process per rank (its backend probe finds no GPU backend)."""
    import torch

    if torch.cuda.is_available():
        return {"use_cpu": False}
    if deepspeed_requested():
        return {"use_cpu": False, "ddp_backend": "gloo"}
    return {"use_cpu": True}


@contextlib.contextmanager
def cpu_fsdp() -> Iterator[None]:
    """While a trainer builds its Accelerator: on CPU ranks with FSDP requested, make accelerate's state
    FSDP instead of MULTI_CPU (see module doc). A no-op with a GPU, without FSDP, or in one process."""
    import torch

    if torch.cuda.is_available() or not fsdp_requested() or int(os.environ.get("WORLD_SIZE", "1")) < 2:
        yield
        return
    from accelerate.state import AcceleratorState, PartialState
    from accelerate.utils import DistributedType

    original = AcceleratorState.__init__

    @functools.wraps(original)
    def init(self, *args, fsdp_plugin=None, **kwargs):
        original(self, *args, fsdp_plugin=fsdp_plugin, **kwargs)
        if fsdp_plugin is not None and self.distributed_type == DistributedType.MULTI_CPU:
            self.distributed_type = DistributedType.FSDP
            if self._mixed_precision != "no":  # what accelerate does for FSDP on GPUs
                fsdp_plugin.set_mixed_precision(self._mixed_precision)
            self.fsdp_plugin = fsdp_plugin
            # Every later AcceleratorState() re-copies PartialState's fields: keep FSDP there too.
            PartialState._shared_state["distributed_type"] = DistributedType.FSDP

    AcceleratorState.__init__ = init
    try:
        yield
    finally:
        AcceleratorState.__init__ = original


def sharding_kind(accelerator: Any) -> str | None:
    """"fsdp1" / "fsdp2" / "zero3" when weights are sharded across ranks, else None (DDP, one process)."""
    from accelerate.utils import DistributedType

    if accelerator.distributed_type == DistributedType.FSDP:
        return "fsdp2" if accelerator.is_fsdp2 else "fsdp1"
    if accelerator.distributed_type == DistributedType.DEEPSPEED:
        stage = accelerator.state.deepspeed_plugin.deepspeed_config.get("zero_optimization", {}).get("stage")
        return "zero3" if stage == 3 else None
    return None


def gathered_state_dict(trainer: Any) -> dict | None:
    """The full state dict of the trained model, gathered from every shard by the library itself.
    Every rank must call this (it is a collective); the dict is complete on rank 0 only."""
    accelerator = trainer.accelerator
    kind = sharding_kind(accelerator)
    if kind is None:
        return None
    # ZeRO-3 consolidates through the DeepSpeed engine (trainer.model_wrapped); FSDP through the module.
    model = trainer.model_wrapped if kind == "zero3" else trainer.model
    return accelerator.get_state_dict(model)


@contextlib.contextmanager
def _without_zero3_init() -> Iterator[None]:
    """While the trainer's ZeRO-3 config is alive, transformers' from_pretrained builds models inside
    deepspeed.zero.Init, whose parameter broadcast is a collective: rank 0 alone would wait forever."""
    from transformers.integrations import deepspeed as hf_deepspeed

    saved = hf_deepspeed._hf_deepspeed_config_weak_ref
    hf_deepspeed.unset_hf_deepspeed_config()
    try:
        yield
    finally:
        hf_deepspeed._hf_deepspeed_config_weak_ref = saved


def exportable_model(trainer: Any, rebuild: Callable[[], Any]) -> Any:
    """The trained model as a plain (unsharded) module on rank 0, None on other ranks. Collective.

    `rebuild()` builds the same architecture as the trained model (same base, same adapter config) from
    disk; under sharding it receives the gathered weights with a strict load (every key must match)."""
    import torch

    state = gathered_state_dict(trainer)
    if not trainer.is_world_process_zero():
        return None
    if state is None:
        return trainer.accelerator.unwrap_model(trainer.model)
    with _without_zero3_init():
        model = rebuild()
    embed = next((v for k, v in state.items() if k.endswith("embed_tokens.weight")), None)
    if embed is not None and embed.shape[0] != model.get_input_embeddings().weight.shape[0]:
        model.resize_token_embeddings(embed.shape[0])  # a pad token added to the tokenizer before training
    dtype = next(model.parameters()).dtype  # ZeRO-3 gathers 16-bit weights; the export is fp32 anyway
    model.load_state_dict({k: v.to(dtype) if torch.is_floating_point(v) else v for k, v in state.items()},
                          strict=True)
    return model
