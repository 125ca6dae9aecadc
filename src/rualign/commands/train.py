"""`rualign train CONFIG.yaml --out DIR`: run the training stages of a config (see train/schema.py).

Distributed on CPU or GPU: `torchrun --nproc_per_node 2 -m rualign train ...` (or `accelerate launch
--config_file configs/accelerate/<name>.yaml -m rualign train ...`); every rank runs the same command.
"""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "train", help="run training stages (sft, dpo, simpo, kto, orpo, rm, rlhf) from a YAML config",
        description="Train the stages of CONFIG in order; each writes OUT/<stage>/ (adapter/, merged/ or "
                    "model/, train_log.jsonl, samples.jsonl, manifest.json). Finished stages with the same "
                    "config, data and parent are skipped; interrupted ones resume from their last checkpoint.")
    parser.add_argument("config", help="training config YAML")
    parser.add_argument("--out", required=True, help="output folder (one subfolder per stage)")
    parser.add_argument("--stage", action="append", default=None,
                        help="run only this stage (repeatable); its parents must have finished")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from rich.console import Console

    from rualign.config import load_yaml
    from rualign.errors import ConfigError
    from rualign.paths import out_folder
    from rualign.train.run import run_stage
    from rualign.train.schema import TrainConfig

    out_folder(args.out)  # before any work
    config = load_yaml(args.config, TrainConfig)
    names = [s.name for s in config.stages]
    for name in args.stage or []:
        if name not in names:
            raise ConfigError(f"no stage named '{name}'", path=args.config, expected=f"one of {', '.join(names)}")
    results = {}
    for stage in config.execution_order():
        if args.stage and stage.name not in args.stage:
            continue
        from pathlib import Path

        from rualign.progress import stage_log

        # beside the stage folder, not in it: a fresh stage starts by clearing its folder
        with stage_log(Path(args.out) / f"{stage.name}.log"):
            results[stage.name] = run_stage(config, stage, args.out, source=args.config)
    console = Console()
    for name, manifest in results.items():
        if not manifest:  # non-zero ranks of a distributed run write nothing
            continue
        state = "skipped (finished)" if manifest.get("skipped") else "trained"
        timing = manifest.get("timing", {})
        console.print(f"stage [bold]{name}[/bold] ({manifest['method']}): {state}; steps {manifest['steps']}, "
                      f"train loss {manifest['train_loss']:.4f}, {timing.get('tokens_per_s')} tokens/s, "
                      f"model {manifest['model_path']}")
    return 0
