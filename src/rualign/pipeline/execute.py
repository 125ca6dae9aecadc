"""Run a plan: each node once (finished nodes are skipped by hash), then one run folder per experiment.

Nodes are resumable on their own (data writes atomically, training resumes from its last checkpoint,
generation appends finished answers, the judge caches each call), so an interrupted `rualign run` picks up
where it stopped. A run folder's run.json is written last: its presence means the folder is complete.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path
from typing import Callable

from rualign.pipeline.plan import Node, Plan, RunPlan
from rualign.paths import contained, remove_tree
from rualign.progress import stage_log
from rualign.records import RefLoss, RunInfo, StageInfo, write_ref_loss, write_run_info
from rualign.runs import file_lock, files_record, read_manifest, write_manifest


def _say(message: str) -> None:
    from rualign.progress import console

    console().print(message, markup=False, highlight=False)


def _link(workspace: Path, name: str, target: Path) -> None:
    """Expose a finished dependency stage under this workspace, where train/run.py looks for it."""
    link = workspace / name
    if link.is_symlink() or link.exists():
        if link.is_symlink() and Path(os.readlink(link)) == target:
            return
        remove_tree(workspace, link)
    workspace.mkdir(parents=True, exist_ok=True)
    link.symlink_to(target, target_is_directory=True)


def _run_data(node: Node, plan: Plan) -> None:
    from rualign.data.recipe import run_recipe

    run_recipe(node.spec["recipe"], node.folder)


def _run_train(node: Node, plan: Plan) -> None:
    from rualign.train.run import run_stage
    from rualign.train.schema import TrainConfig

    exp, stage = node.spec["experiment"], node.spec["stage"]
    for name, dep_id in node.spec["deps"].items():
        dep = plan.nodes[dep_id]
        _link(node.folder, name, dep.folder / dep.spec["stage"].name)
    data = node.spec.get("data_folder") or str(plan.nodes[node.spec["data_node"]].folder)
    stages = [s.model_dump(mode="json") for s in exp.stages]
    for entry in stages:
        if entry["name"] == stage.name:
            entry["data"] = data
    config = TrainConfig.model_validate({"model": exp.model, "chat_template": exp.chat_template, "seed": exp.seed,
                                         "trust_remote_code": exp.trust_remote_code, "stages": stages})
    run_stage(config, config.stage(stage.name), node.folder)


def model_location(node: Node, plan: Plan) -> str:
    """The model an answers node generates with: a trained stage's exported model, or the spec."""
    if node.spec["model_node"] is None:
        return node.spec["model"]
    train = plan.nodes[node.spec["model_node"]]
    return read_manifest(train.folder / train.spec["stage"].name).model_path


def _run_answers(node: Node, plan: Plan) -> None:
    from rualign.eval.gen_config import make_generation_backend
    from rualign.eval.generate import TokenCounter, run_with_progress
    from rualign.eval.prompts_io import load_prompts

    prompts = load_prompts(node.spec["prompts"])
    if node.spec["limit"]:
        prompts = prompts[: node.spec["limit"]]
    gen = node.spec["generation"]
    backend = make_generation_backend(gen, model_location(node, plan), chat_template=node.spec["chat_template"],
                                      trust_remote_code=node.spec["trust_remote_code"])
    summary = run_with_progress(prompts, backend, gen.params(), node.folder / "answers.jsonl",
                                counter=TokenCounter(node.spec["tokenizer"]))
    if node.spec.get("heldout") and hasattr(backend, "lm"):  # ref_loss needs the model in process (hf)
        from rualign.eval.metrics import heldout_conversations, reference_loss

        spec, limit = node.spec["heldout"]
        result = reference_loss(backend.lm, backend.tokenizer, heldout_conversations(spec, limit))
        write_ref_loss(node.folder / "ref_loss.json", RefLoss(**result, heldout=spec, limit=limit))
    write_manifest(node.folder, stage="answers", config_hash=node.key, model=backend.model,
                   files=files_record(node.folder, ["answers.jsonl"]),
                   prompts=node.spec["prompts"], count=summary.total, generated=summary.generated,
                   reused=summary.reused, finish_reasons=summary.finish_reasons,
                   seconds=round(summary.seconds, 2), new_tokens=summary.new_tokens,
                   params=gen.output_key())


def reference_path(reference: str, plan: Plan) -> Path:
    """The answers file of a plan reference: "file:<path>" or an answers node id."""
    if reference.startswith("file:"):
        return Path(reference[len("file:"):])
    return plan.nodes[reference].folder / "answers.jsonl"


def _run_judge(node: Node, plan: Plan) -> None:
    from rualign.eval.judge import run_judge

    cfg = node.spec["config"]
    answers = plan.nodes[node.spec["answers"]].folder / "answers.jsonl"
    reference = reference_path(node.spec["reference"], plan)
    # The judge cache lives in the store so experiments sharing it share calls; a configured cache wins.
    run_judge(answers, reference, cfg, node.folder, target=node.spec["target"], seed=node.spec["seed"],
              cache_path=cfg.cache or plan.store / "judge_cache.sqlite")


def _run_knowledge(node: Node, plan: Plan) -> None:
    from rualign.eval.knowledge import run_knowledge

    run_knowledge(model_location(node, plan), node.spec["questions"], node.folder, limit=node.spec["limit"],
                  trust_remote_code=node.spec["trust_remote_code"], config_hash=node.key)


RUNNERS: dict[str, Callable[[Node, Plan], None]] = {
    "data": _run_data, "train": _run_train, "answers": _run_answers, "judge": _run_judge,
    "knowledge": _run_knowledge}


def execute(plan: Plan, say: Callable[[str], None] = _say) -> dict[str, str]:
    """Run every unfinished node in order; returns {node id: "cached" | "ran"}."""
    outcome: dict[str, str] = {}
    total = len(plan.nodes)
    for number, node in enumerate(plan.nodes.values(), start=1):
        where = f"[{number}/{total}] {node.label} {node.key}"
        with node_lock(node.folder):  # a run and a sweep (or two runs) sharing a store never run a node twice
            if node.finished():
                outcome[node.id] = "cached"
                say(f"{where}: cached")
                continue
            say(f"{where}: running (used by {', '.join(node.used_by)})")
            started = time.perf_counter()
            # Library output (trainer dicts, tqdm, warnings, llama.cpp) goes to the stage's own log file.
            with stage_log(node.folder / "stage.log"):
                RUNNERS[node.kind](node, plan)
            outcome[node.id] = "ran"
            say(f"{where}: done in {time.perf_counter() - started:.1f}s")
    return outcome


def node_lock(folder: Path):
    """One process per store node at a time: the second waits, then finds the node finished."""
    return file_lock(folder.parent / f".{folder.name}.lock")


def _copy(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp")
    shutil.copyfile(source, tmp)
    os.replace(tmp, target)


def write_run_folder(run: RunPlan, plan: Plan, out_dir: Path) -> Path:
    """out_dir/<name>/: answers.jsonl, judge/{score.json, judgments.jsonl, manifest.json}, run.json last.

    With several references (eval.reference a list) the folder holds answers.jsonl, pooled.json (the score
    pooled over references, eval/pooled.py), run.json, and references/<ref name>/, each a complete run folder
    of the model against that reference (run name "<name> vs <ref name>")."""
    exp = run.experiment
    folder = out_dir / exp.name
    contained(out_dir, folder)  # the name is checked by the schema; this guards any other way in
    (folder / "run.json").unlink(missing_ok=True)  # an older run.json must not vouch for new files
    # What an earlier run of this experiment with the other shape (one reference / several) left behind.
    (folder / "pooled.json").unlink(missing_ok=True)
    stale = folder / ("judge" if run.named else "references")
    if stale.is_dir():
        remove_tree(folder, stale)
    if not run.named:
        _fill_run_folder(run, plan, folder, exp.name, run.reference, run.judge)
        return folder
    from rualign.eval.pooled import pooled_score, write_pooled
    from rualign.records import read_score

    scores, store = {}, {"answers": str(plan.nodes[run.answers].folder)}
    for judged in run.named:
        sub = contained(folder, folder / "references" / judged.name)
        _fill_run_folder(run, plan, sub, f"{exp.name} vs {judged.name}", judged.reference, judged.judge)
        scores[judged.name] = read_score(sub / "judge" / "score.json")
        store[f"judge:{judged.name}"] = str(plan.nodes[judged.judge].folder)
    _copy(plan.nodes[run.answers].folder / "answers.jsonl", folder / "answers.jsonl")
    write_pooled(folder / "pooled.json", pooled_score(scores, seed=exp.eval.judge_seed))
    write_run_info(folder / "run.json", RunInfo(
        name=exp.name, description=_description(run), model=exp.model, stages=_stages(run), target=exp.eval.target,
        judge=run.judge_config.public(), store=store))
    return folder


def _stages(run: RunPlan) -> list[StageInfo]:
    return [StageInfo(name=s.name, method=s.method, data=label) for s, label in zip(run.experiment.stages,
                                                                                      run.stage_data)]


def _description(run: RunPlan) -> str:
    return run.experiment.description or ("; ".join(f"{s.method} on {s.data}" for s in _stages(run)) or "base model")


def _fill_run_folder(run: RunPlan, plan: Plan, folder: Path, name: str, reference: str, judge_id: str) -> None:
    """One run folder: the model's answers judged against one reference (run.json written last)."""
    exp = run.experiment
    (folder / "run.json").unlink(missing_ok=True)
    _copy(plan.nodes[run.answers].folder / "answers.jsonl", folder / "answers.jsonl")
    judge = plan.nodes[judge_id].folder
    for file in ("score.json", "judgments.jsonl", "manifest.json"):
        _copy(judge / file, folder / "judge" / file)
    (folder / "knowledge.json").unlink(missing_ok=True)
    if run.knowledge:
        _copy(plan.nodes[run.knowledge].folder / "knowledge.json", folder / "knowledge.json")
    ref_loss = plan.nodes[run.answers].folder / "ref_loss.json"
    (folder / "ref_loss.json").unlink(missing_ok=True)
    if ref_loss.is_file():
        _copy(ref_loss, folder / "ref_loss.json")
    write_run_info(folder / "run.json", RunInfo(
        name=name, description=_description(run), model=exp.model, stages=_stages(run),
        reference_answers=str(reference_path(reference, plan)), target=exp.eval.target,
        judge=run.judge_config.public(), config_hash=plan.nodes[judge_id].key,
        store={"answers": str(plan.nodes[run.answers].folder), "judge": str(judge)}))
