"""Run training stages: each stage starts from its parent's exported model (or the base model), trains
through the TRL trainer named in `train/methods.py`, and writes `OUT/<stage>/`:
`adapter/` + `merged/` (LoRA) or `model/` (full), `train_log.jsonl`, `samples.jsonl`, `manifest.json` (last).

A finished stage whose key (stage config + data + parent + base model) matches is skipped; an interrupted
stage resumes from its last checkpoint under `checkpoints/` with the same data order (seeded sampler).
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from rualign.config import resolve_relative
from rualign.errors import ConfigError, RualignError
from rualign.paths import contained, out_folder, refuse_overlap, remove_tree
from rualign.progress import verbose
from rualign.runs import (file_hash, read_jsonl, read_manifest, stable_hash, verify_files, write_manifest,
                          write_text)
from rualign.train.methods import MethodSpec, StageContext, get_method, resolve
from rualign.train.schema import StageConfig, TrainConfig

_KEY_FILE = "stage_key"


def _is_rank_zero() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def _barrier() -> None:
    """Let every rank of a distributed run see a stage's manifest before any starts the next stage."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def _log(message: str) -> None:
    if _is_rank_zero() and not os.environ.get("RUALIGN_QUIET"):
        print(message, flush=True)


def run_training(config: TrainConfig, out_dir: str | Path, *, callbacks: list | None = None,
                 source: str | Path | None = None) -> dict[str, dict]:
    """Run every stage in dependency order; returns {stage name: manifest}."""
    out = Path(out_dir)
    return {stage.name: run_stage(config, stage, out, callbacks=callbacks, source=source)
            for stage in config.execution_order()}


def _start_model(config: TrainConfig, stage: StageConfig, out: Path) -> tuple[str, dict | None]:
    from rualign.models import resolve_model

    parent = config.parent_of(stage)
    if parent is None:
        return resolve_model(config.model), None
    manifest = read_manifest(out / parent)
    if manifest is None or getattr(manifest, "model_path", None) is None:
        raise RualignError(f"stage '{stage.name}' needs its parent stage '{parent}', which has not finished",
                           path=out / parent, hint=f"run stage '{parent}' first (or the whole config)")
    return manifest.model_path, manifest.dump()


def load_stage_data(stage: StageConfig, spec: MethodSpec, out: Path,
                    source: str | Path | None = None) -> tuple[Path, str, list[dict], list[dict]]:
    """The stage's data folder (running an inline recipe first), its kind checked against the method."""
    if isinstance(stage.data, dict):
        from rualign.config import validate
        from rualign.data.recipe import run_recipe
        from rualign.data.schema import Recipe

        folder = out / "_data" / stage.name
        run_recipe(validate(Recipe, stage.data, source or f"stage {stage.name}: data"), folder)
    else:
        folder = Path(resolve_relative(stage.data, Path(source) if source else None))
    manifest = read_manifest(folder)
    if manifest is None or not (folder / "train.jsonl").exists():
        raise ConfigError(f"stage '{stage.name}': data folder is not a finished `rualign data` output",
                          path=folder, expected="a folder with train.jsonl and manifest.json")
    verify_files(folder, manifest)  # a train.jsonl cut short after `rualign data` is refused, not trained on
    kind = getattr(manifest, "kind", None)
    if kind not in spec.data_kinds:
        raise ConfigError(f"stage '{stage.name}': method '{spec.name}' needs data of kind "
                          f"{' or '.join(spec.data_kinds)}, but this folder has kind '{kind}'", path=folder)
    train = read_jsonl(folder / "train.jsonl")
    val = read_jsonl(folder / "val.jsonl") if (folder / "val.jsonl").exists() else []
    if not train:
        raise ConfigError(f"stage '{stage.name}': train.jsonl is empty", path=folder / "train.jsonl")
    return folder, kind, train, val


def _refuse_overlap(config: TrainConfig, stage: StageConfig, out: Path, source: str | Path | None) -> None:
    """The stage folder (and an inline recipe's data folder) must not be or hold an input of the run."""
    contained(out, out / stage.name)  # the name is checked by the schema; this guards any other way in
    base = Path(source) if source else None
    inputs = [source, resolve_relative(config.model, base)]
    inputs += [resolve_relative(s.data, base) for s in config.stages if isinstance(s.data, str)]
    for param in ("ref_model", "reward_model"):
        value = stage.params.get(param)
        if isinstance(value, str):
            inputs.append(resolve_relative(value, base))
    refuse_overlap(inputs, trees=[out / stage.name, out / "_data" / stage.name])


def stage_key(config: TrainConfig, stage: StageConfig, data_dir: Path, parent: dict | None) -> dict:
    """What decides whether a finished stage can be reused: the hashes that go into its manifest."""
    stage_cfg = stage.key_fields()
    data = {name: file_hash(data_dir / name) for name in ("train.jsonl", "val.jsonl") if (data_dir / name).exists()}
    parts = {"stage": stage_cfg, "base_model": config.model, "chat_template": config.chat_template,
             "seed": config.seed, "data": data,
             "parent": parent["config_hash"] if parent else None}
    return {"config_hash": stable_hash(parts), "stage_config_hash": stable_hash(stage_cfg),
            "data_hash": stable_hash(data)}


def _latest_checkpoint(folder: Path) -> Path | None:
    found = sorted(folder.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[-1]))
    return found[-1] if found else None


def _prepare_dir(stage_dir: Path, key: str) -> Path | None:
    """Keep checkpoints of an interrupted run of the same stage key; otherwise start clean."""
    key_file = stage_dir / _KEY_FILE
    checkpoint = _latest_checkpoint(stage_dir / "checkpoints")
    if key_file.exists() and key_file.read_text().strip() == key and checkpoint is not None:
        return checkpoint
    if _is_rank_zero():
        remove_tree(stage_dir.parent, stage_dir)  # only ever a folder strictly inside --out
        write_text(key_file, key + "\n")
    return None


def training_args(spec: MethodSpec, config: TrainConfig, stage: StageConfig, ctx: StageContext,
                  stage_dir: Path):
    import dataclasses

    from rualign.train import sharding

    cls = spec.config_class()
    common = dict(
        output_dir=str(stage_dir / "checkpoints"), learning_rate=stage.lr, num_train_epochs=stage.epochs,
        max_steps=stage.max_steps or -1, per_device_train_batch_size=stage.batch_size,
        per_device_eval_batch_size=stage.batch_size, gradient_accumulation_steps=stage.grad_accum,
        max_length=stage.max_length, lr_scheduler_type=stage.lr_scheduler, warmup_steps=stage.warmup_ratio,
        weight_decay=stage.weight_decay, max_grad_norm=stage.max_grad_norm,
        gradient_checkpointing=stage.gradient_checkpointing, bf16=ctx.precision == "bf16",
        **sharding.device_args(), seed=config.seed, data_seed=config.seed,
        logging_steps=stage.logging_steps, save_strategy="steps", save_steps=stage.save_steps,
        save_total_limit=stage.save_total_limit, eval_strategy="no", report_to=config.report_to or "none",
        include_num_input_tokens_seen="non_padding", dataloader_num_workers=0,
        disable_tqdm=not verbose())  # the rich bar of trainlog.make_progress_callback shows progress instead
    params = stage.method_params()
    extra = resolve(spec.config_kwargs)(params, ctx) if spec.config_kwargs else params.model_dump()
    fields = {f.name for f in dataclasses.fields(cls)}
    if "activation_checkpointing" in fields:  # transformers 5 renamed gradient_checkpointing
        common["activation_checkpointing"] = common.pop("gradient_checkpointing")
    unknown = sorted(set(extra) - fields)
    if unknown:  # a method key TRL would never see must not vanish silently (it changes nothing but the hash)
        raise ConfigError(f"method '{stage.method}': {', '.join(unknown)} not accepted by {cls.__name__} of the "
                          "installed TRL", path=f"stage '{stage.name}'",
                          expected=f"keys of {cls.__name__}", hint="check the TRL version (pip show trl)")
    # Common keys are shared by every method; a TRL config without one of them (e.g. no max_length) skips it.
    kwargs = {k: v for k, v in common.items() if k in fields}
    return cls(**kwargs, **extra)


def run_stage(config: TrainConfig, stage: StageConfig, out_dir: str | Path, *, callbacks: list | None = None,
              source: str | Path | None = None) -> dict:
    """Train one stage (or reuse it when finished); returns its manifest."""
    from rualign.train.precision import choose_precision

    out = out_folder(out_dir)
    _refuse_overlap(config, stage, out, source)  # before any work: the stage folder is wiped on a fresh start
    spec = get_method(stage.method)
    start_model, parent_manifest = _start_model(config, stage, out)
    data_dir, kind, train_rows, val_rows = load_stage_data(stage, spec, out, source)
    key = stage_key(config, stage, data_dir, parent_manifest)
    stage_dir = out / stage.name
    manifest = read_manifest(stage_dir)
    if manifest is not None and manifest.config_hash == key["config_hash"]:
        _log(f"stage {stage.name}: finished output with the same config, data and parent; skipped")
        return {**manifest.dump(), "skipped": True}
    resume_from = _prepare_dir(stage_dir, key["config_hash"])
    precision, why = choose_precision(stage.precision)
    _log(f"stage {stage.name} ({stage.method}, {stage.adapter_kind}) from {start_model}; precision {precision}: "
         f"{why}" + (f"; resuming from {resume_from.name}" if resume_from else ""))
    started = time.time()
    trained = _train(config, stage, spec, out, stage_dir, start_model, precision, train_rows, val_rows,
                     resume_from, callbacks or [])
    if not _is_rank_zero():
        _barrier()
        return {}
    manifest = write_manifest(
        stage_dir, stage="train", config_hash=key["config_hash"], name=stage.name, method=stage.method,
        parent=config.parent_of(stage), lineage=config.lineage(stage.name), base_model=config.model,
        start_model=start_model, data=str(data_dir), data_kind=kind, data_hash=key["data_hash"],
        stage_config_hash=key["stage_config_hash"], stage_config=stage.model_dump(mode="json"),
        adapter=stage.adapter_kind,
        init="continue parent adapter" if stage.continue_adapter and parent_manifest else
             ("merged parent model" if parent_manifest else "base model"),
        precision=precision, precision_reason=why, seconds=round(time.time() - started, 2),
        resumed_from=resume_from.name if resume_from else None, **trained)
    # Checkpoints only serve an interrupted run; a finished stage is reused through its manifest.
    remove_tree(stage_dir, stage_dir / "checkpoints")
    _barrier()
    return manifest.dump()


def _seeded_tokenizer(config: TrainConfig, start_model: str) -> Any:
    from transformers import AutoTokenizer, set_seed

    from rualign.models import apply_chat_template_choice

    set_seed(config.seed)
    if os.environ.get("RUALIGN_QUIET"):  # `rualign -q`: no dataset/progress bars from datasets and TRL
        from datasets.utils.logging import disable_progress_bar

        disable_progress_bar()
    tokenizer = AutoTokenizer.from_pretrained(start_model, trust_remote_code=config.trust_remote_code)
    apply_chat_template_choice(tokenizer, config.chat_template)
    return tokenizer


def _make_trainer(spec: MethodSpec, ctx: StageContext, stage_dir: Path, train_ds: Any, eval_ds: Any,
                  resume_from: Path | None, callbacks: list) -> Any:
    """The method's TRL trainer with the train log (continued on resume) and, on rank 0, the progress bar."""
    from rualign.train import sharding
    from rualign.train.trainlog import make_log_callback, make_progress_callback

    args = training_args(spec, ctx.config, ctx.stage, ctx, stage_dir)
    extra = resolve(spec.trainer_kwargs)(ctx) if spec.trainer_kwargs else {}
    resume_step = int(resume_from.name.split("-")[-1]) if resume_from else None
    log_cb = make_log_callback(stage_dir / "train_log.jsonl", resume_step)
    with sharding.cpu_fsdp():  # FSDP on CPU ranks: accelerate alone would silently run DDP (sharding.py)
        trainer = spec.trainer_class()(model=ctx.model, args=args, train_dataset=train_ds, eval_dataset=eval_ds,
                                       processing_class=ctx.tokenizer, callbacks=[log_cb, *callbacks], **extra)
    if _is_rank_zero():
        trainer.add_callback(make_progress_callback(f"{ctx.stage.name} ({ctx.stage.method})"))
    return trainer


def _train(config: TrainConfig, stage: StageConfig, spec: MethodSpec, out: Path, stage_dir: Path,
           start_model: str, precision: str, train_rows: list[dict], val_rows: list[dict],
           resume_from: Path | None, callbacks: list) -> dict:
    from rualign.train import lora, sharding
    from rualign.train.masks import ensure_pad_token
    from rualign.train.trainlog import write_samples

    tokenizer = _seeded_tokenizer(config, start_model)
    parent = config.parent_of(stage)
    continue_from = out / parent if stage.continue_adapter and parent else None
    build_model = resolve(spec.build_model) if spec.build_model else lora.build_trainable
    model, adapter_base = build_model(stage, start_model, continue_from=continue_from,
                                      trust_remote_code=config.trust_remote_code)
    pad_action = ensure_pad_token(tokenizer, model)
    param_counts = lora.trainable_summary(model)
    from rualign.train.dropout import use_fast_lora_dropout

    fast_dropouts = use_fast_lora_dropout(model)  # CPU LoRA dropout draws 4 elements per 64 random bits
    ctx = StageContext(config=config, stage=stage, tokenizer=tokenizer, model=model, start_model=start_model,
                       out_root=out, precision=precision, log=_log)
    if fast_dropouts:
        ctx.info["lora_dropout"] = f"train/dropout.py FastDropout on {fast_dropouts} modules"
    train_ds = resolve(spec.build_dataset)(train_rows, ctx)
    eval_ds = resolve(spec.build_dataset)(val_rows, ctx.for_split("val")) if val_rows else None
    trainer = _make_trainer(spec, ctx, stage_dir, train_ds, eval_ds, resume_from, callbacks)
    started = time.perf_counter()
    result = trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
    train_seconds = time.perf_counter() - started
    tokens = int(trainer.state.num_input_tokens_seen)
    session_tokens = tokens - int(getattr(trainer, "_initial_num_input_tokens_seen", 0) or 0)
    eval_metrics = trainer.evaluate() if eval_ds is not None and len(eval_ds) else {}
    trainer.accelerator.wait_for_everyone()
    sharded = sharding.sharding_kind(trainer.accelerator)
    # Under FSDP / ZeRO-3 every rank takes part in gathering the shards; rank 0 gets a plain model back.
    trained_model = sharding.exportable_model(trainer, lambda: build_model(
        stage, start_model, continue_from=continue_from, trust_remote_code=config.trust_remote_code)[0])
    if trained_model is None:
        return {}
    paths = lora.export(trained_model, tokenizer, stage_dir, adapter_base=adapter_base)
    n_samples = 0
    if stage.samples and spec.generates:  # a reward model (rm) is no generator
        n_samples = write_samples(lora.load_base(paths["model"]), tokenizer, val_rows or train_rows,
                                  stage.samples, stage.sample_max_new_tokens, stage_dir / "samples.jsonl")
    return {"model_path": paths["model"], "adapter_path": paths.get("adapter"),
            "adapter_base": adapter_base if "adapter" in paths else None,
            "pad_token": pad_action, "rows": ctx.rows, "mask_example": ctx.mask_example, "builder_info": ctx.info,
            "params": param_counts,
            "steps": int(trainer.state.global_step), "train_loss": result.training_loss,
            "eval": eval_metrics, "tokens": tokens,
            "timing": {"train_seconds": round(train_seconds, 2),
                       "tokens_per_s": round(session_tokens / train_seconds, 1) if train_seconds > 0 else None},
            "world_size": int(os.environ.get("WORLD_SIZE", "1")), "sharding": sharded, "samples": n_samples}
