"""`rualign demo`: the packaged demo experiment (rualign/configs/demo.yaml) end to end, offline, on the
embedded default model and bundled samples.

The base model, two SFT variants with different answer-length windows and SimPO on top of one of them,
each answered, judged against the base model's answers by the embedded 135M judge under llama.cpp, then
the Table-4-style summary and report.html. A rerun reuses every finished stage.
"""

from __future__ import annotations

import argparse
from importlib import resources
from pathlib import Path

JUDGE_NOTE = """\
Note: the judge here is the embedded 135M model, so these scores only show that the pipeline works end to
end; they say nothing about answer quality. For real numbers point the judge at a strong model, e.g. serve
Qwen2.5-72B-Instruct with vLLM and set in the experiment file:

  eval:
    judge: configs/judge/vllm-qwen72b.yaml     # vLLM serving Qwen2.5-72B-Instruct, key in $JUDGE_API_KEY

or run `rualign demo --judge configs/judge/vllm-qwen72b.yaml` (any judge SPEC works, e.g.
openai:Qwen/Qwen2.5-72B-Instruct@http://localhost:8000/v1); configs/study/ has the study's full setup."""


def demo_config() -> Path:
    """The demo experiment shipped as package data (rualign/configs/demo.yaml): found the same way from a
    source checkout, an editable install or an installed wheel."""
    return Path(str(resources.files("rualign").joinpath("configs", "demo.yaml")))


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "demo", help="run the offline demo (base, 2 SFT variants, SimPO; judged) and build a report",
        description="Run the packaged demo experiment (rualign/configs/demo.yaml) end to end on the embedded "
                    "default model and the bundled samples "
                    "(offline, CPU, a few minutes), print the results table and write a report. Rerunning "
                    "reuses every finished stage.")
    parser.add_argument("--out", default="runs/demo", help="output folder (default: runs/demo)")
    parser.add_argument("--config", help="experiment file to run instead of the packaged demo.yaml")
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: 2 prompts, 2 training steps of 2 rows of <= 128 tokens, 16 new tokens "
                             "(checks the wiring only)")
    parser.add_argument("--dry-run", action="store_true", help="print the plan only")
    parser.add_argument("--judge", metavar="SPEC", help="another judge, e.g. configs/judge/vllm-qwen72b.yaml or "
                                                         "openai:MODEL@http://host:8000/v1 (default: llamacpp:default)")
    parser.set_defaults(handler=run)


def quick(experiments: list) -> list:
    """Shrink every experiment to a smoke run (its hashes change, so full-size results are untouched)."""
    out = []
    for exp in experiments:
        stages = [s.model_copy(update={"max_steps": 2, "samples": 0, "batch_size": 2,
                                       "max_length": min(s.max_length, 128)}) for s in exp.stages]
        generation = exp.eval.generation.model_copy(update={"max_new_tokens": 16})
        ev = exp.eval.model_copy(update={"limit": 2, "generation": generation})
        if ev.reference.generation is not None:
            ref_gen = ev.reference.generation.model_copy(update={"max_new_tokens": 16})
            ev = ev.model_copy(update={"reference": ev.reference.model_copy(update={"generation": ref_gen})})
        new = exp.model_copy(update={"stages": stages, "eval": ev})
        new._source = exp._source
        out.append(new)
    return out


def run(args: argparse.Namespace) -> int:
    import time

    from rich.console import Console

    from rualign.commands.run_cmd import finish_report
    from rualign.errors import RualignError
    from rualign.pipeline import build_plan, load_experiments, print_plan, run_plan, with_judge

    config = Path(args.config) if args.config else demo_config()
    if not config.is_file():
        raise RualignError("the demo config was not found", path=config,
                           expected="an experiment YAML file" if args.config else "rualign/configs/demo.yaml "
                                    "inside the installed package",
                           hint=None if args.config else "reinstall rualign (the package data is missing)")
    console = Console()
    started = time.perf_counter()
    experiments = with_judge(load_experiments(config), args.judge)
    if args.quick:
        experiments = quick(experiments)
    plan = build_plan(experiments, Path(args.out) / "_store")
    if args.dry_run:
        print_plan(plan, console)
        return 0
    console.print(f"rualign demo: {len(plan.runs)} experiments, {len(plan.nodes)} stages, store {plan.store}")
    folders, outcome = run_plan(plan, args.out)
    finish_report(folders, args.out, console, target=plan.runs[0].experiment.eval.target)
    ran = sum(1 for v in outcome.values() if v == "ran")
    console.print(f"done in {time.perf_counter() - started:.0f}s ({ran} stages ran, {len(outcome) - ran} reused)")
    if all(run.judge_config.backend == "llamacpp" and run.judge_config.model == "default" for run in plan.runs):
        console.print(JUDGE_NOTE, markup=False, highlight=False, soft_wrap=True)
    return 0
