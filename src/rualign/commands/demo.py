"""`rualign demo`: the packaged demo experiment (rualign/configs/demo.yaml) end to end, offline, on the
embedded default model and bundled samples.

The base model, two SFT variants with different answer-length windows and a control (the short window's
answers shuffled across prompts), each answered, judged against the base model's answers by the embedded 135M judge under llama.cpp, then
the Table-4-style summary and report.html. A rerun reuses every finished stage.
"""

from __future__ import annotations

import argparse
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rualign.records import JudgeCard

JUDGE_NOTE = """\
Note: the judge here is the embedded 135M model; its judge card (above, and in the report) puts it at chance,
so its scores (marked *) only show that the pipeline works end to end. The judge-free columns (ru share,
distinct-2, ref loss, lengths) carry the demo's meaning. For real numbers point the judge at a strong model, e.g. serve
Qwen2.5-72B-Instruct with vLLM and set in the experiment file:

  eval:
    judge: configs/judge/vllm-qwen72b.yaml     # vLLM serving Qwen2.5-72B-Instruct, key in $JUDGE_API_KEY

or run `rualign demo --judge configs/judge/vllm-qwen72b.yaml` (any judge SPEC works, e.g.
openai:Qwen/Qwen2.5-72B-Instruct@http://localhost:8000/v1); configs/study/ has the study's full setup."""


DEMO_GOLD_PAIRS = 8  # one per kind of flaw: the card's cost is ~5 s a pair on 2 cores


def gold_subset(n: int, path: Path) -> Path:
    """The first n gold_ru pairs taken round-robin over its kinds (factual error, wrong language, ...)."""
    import json

    from rualign.eval.judge_check import gold_path

    by_kind: dict[str, list[str]] = {}
    for line in gold_path("bundled:gold_ru").read_text(encoding="utf-8").splitlines():
        if line.strip():
            by_kind.setdefault(str(json.loads(line).get("category")), []).append(line)
    picked = [lines[i] for i in range(max(map(len, by_kind.values()))) for lines in by_kind.values()
              if i < len(lines)][:n]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(picked) + "\n", encoding="utf-8")
    return path


def judge_card(plan, out: Path, pairs: int, console) -> JudgeCard | None:
    """The judge's filed card; without one, a judge-check on `pairs` gold pairs (a small card, filed too)."""
    from rualign.eval.judge_check import find_card, run_judge_check
    from rualign.progress import stage_log

    cfg = plan.runs[0].judge_config
    card = find_card(cfg)
    if card is not None or pairs <= 0:
        return card
    folder = out / "judge_card"
    console.print(f"judge-check: {cfg.display_name()} on {pairs} gold pairs (both orders) -> {folder}",
                  markup=False, highlight=False)
    with stage_log(folder / "stage.log"):
        return run_judge_check(str(gold_subset(pairs, folder / "gold_subset.jsonl")), cfg, folder,
                               cache_path=plan.store / "judge_cache.sqlite")


def demo_config() -> Path:
    """The demo experiment shipped as package data (rualign/configs/demo.yaml): found the same way from a
    source checkout, an editable install or an installed wheel."""
    return Path(str(resources.files("rualign").joinpath("configs", "demo.yaml")))


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "demo", help="run the offline demo (base, 2 SFT variants, a control; judged) and build a report",
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
    parser.add_argument("--gold-pairs", type=int, default=DEMO_GOLD_PAIRS, metavar="N",
                        help=f"when the judge has no judge card yet, check it on N bundled gold pairs first "
                             f"(default {DEMO_GOLD_PAIRS}, spread over the 8 kinds; 0 = skip; the full check is "
                             "`rualign judge-check --judge SPEC`, 128 pairs)")
    parser.set_defaults(handler=run)


def quick(experiments: list) -> list:
    """Shrink every experiment to a smoke run (its hashes change, so full-size results are untouched)."""
    out = []
    for exp in experiments:
        stages = [s.model_copy(update={"max_steps": 2, "samples": 0, "batch_size": 2,
                                       "max_length": min(s.max_length, 128)}) for s in exp.stages]
        generation = exp.eval.generation.model_copy(update={"max_new_tokens": 16})
        ev = exp.eval.model_copy(update={"limit": 2, "generation": generation, "heldout_limit": 2})
        if ev.reference.generation is not None:
            ref_gen = ev.reference.generation.model_copy(update={"max_new_tokens": 16})
            ev = ev.model_copy(update={"reference": ev.reference.model_copy(update={"generation": ref_gen})})
        new = exp.model_copy(update={"stages": stages, "eval": ev})
        new._source = exp._source
        out.append(new)
    return out


def run(args: argparse.Namespace) -> int:
    import time

    from rualign.progress import results_console

    from rualign.commands.run import finish_report
    from rualign.errors import RualignError
    from rualign.pipeline import build_plan, load_experiments, print_plan, run_plan, with_judge

    config = Path(args.config) if args.config else demo_config()
    if not config.is_file():
        raise RualignError("the demo config was not found", path=config,
                           expected="an experiment YAML file" if args.config else "rualign/configs/demo.yaml "
                                    "inside the installed package",
                           hint=None if args.config else "reinstall rualign (the package data is missing)")
    console = results_console()
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
    # --quick checks wiring only: no judge-check (a 2-pair card filed for this judge would stand in for a real one)
    card = judge_card(plan, Path(args.out), 0 if args.quick else args.gold_pairs, console)
    finish_report(folders, args.out, console, target=plan.runs[0].experiment.eval.target, judge_card=card)
    ran = sum(1 for v in outcome.values() if v == "ran")
    console.print(f"done in {time.perf_counter() - started:.0f}s ({ran} stages ran, {len(outcome) - ran} reused)")
    if all(run.judge_config.backend == "llamacpp" and run.judge_config.model == "default" for run in plan.runs):
        console.print(JUDGE_NOTE, markup=False, highlight=False, soft_wrap=True)
    return 0
