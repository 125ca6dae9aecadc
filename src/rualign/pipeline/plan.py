"""Turn experiments into a plan: a list of content-addressed stage nodes in a shared store.

Node kinds and where they live (STORE = `<out>/_store` unless --store):
  data/<hash>/     a `rualign data` output            hash = the recipe's own config hash (inputs included)
  train/<hash>/    a workspace holding <stage name>/  hash = stage config + data hash + parent's hash + base
  answers/<hash>/  answers.jsonl                      hash = model node (or model spec) + prompts file +
                                                      generation params + counting tokenizer
  judge/<hash>/    judgments.jsonl, score.json         hash = answers hash + reference hash + judge settings
                                                      (one per reference when eval.reference is a list)
  knowledge/<hash>/ knowledge.json (eval.knowledge)   hash = model node (or model spec) + questions file + limit
Two experiments that share a base model, a recipe, a stage or a reference get the same hashes, so the
work is done once. Building a plan reads configs and hashes input files; it never loads a model and never
touches the network (hf: sources and hub model ids are listed as "remote, not checked").
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rualign.config import resolve_relative, validate
from rualign.errors import ConfigError, RualignError
from rualign.eval.schema import JudgeConfig, is_judge_spec, parse_judge_spec
from rualign.pipeline.schema import Experiment, Generation, Reference
from rualign.redact import redact_url
from rualign.runs import file_hash, is_finished, read_manifest, stable_hash, verify_files
from rualign.train.schema import StageConfig

_MODEL_PARAMS = ("ref_model", "reward_model")  # stage params that may name another stage


@dataclass
class Node:
    kind: str                 # data | train | answers | judge
    key: str                  # content hash
    label: str                # what it is, for people
    folder: Path
    spec: dict[str, Any]      # what execute.py needs to run it
    deps: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    used_by: list[str] = field(default_factory=list)

    @property
    def id(self) -> str:
        return f"{self.kind}/{self.key}"

    def finished(self) -> bool:
        if self.kind in ("data", "answers", "knowledge"):
            return is_finished(self.folder, self.key)
        if self.kind == "train":
            manifest = read_manifest(self.folder / self.spec["stage"].name)
            return manifest is not None and getattr(manifest, "model_path", None) is not None
        return judge_finished(self.folder)


def judge_finished(folder: Path) -> bool:
    """Finished unless a call failed at the API (worth retrying); a verdict the judge did not give in a
    parseable form is final (the same call gives the same text again) and is reported as a failure."""
    from rualign.records import read_judgments

    if read_manifest(folder) is None or not (folder / "score.json").is_file():
        return False
    return not any((row.error or "").startswith("api") for row in read_judgments(folder / "judgments.jsonl"))


@dataclass
class JudgedReference:
    name: str | None          # None: the single, unnamed reference
    reference: str            # node id, or "file:<path>"
    judge: str                # node id


@dataclass
class RunPlan:
    experiment: Experiment
    answers: str              # node id
    reference: str            # node id, or "file:<path>"
    judge: str                # node id
    stage_data: list[str]     # per stage: a human label of its data
    judge_config: JudgeConfig
    knowledge: str | None = None  # node id of the knowledge check (eval.knowledge)
    named: list[JudgedReference] = field(default_factory=list)  # several references: each, in config order


@dataclass
class Plan:
    store: Path
    allow_missing: bool = False  # dry runs only: a missing prompts file is a note, not an error
    nodes: dict[str, Node] = field(default_factory=dict)  # insertion order = execution order
    runs: list[RunPlan] = field(default_factory=list)

    def add(self, node: Node, experiment: str) -> Node:
        existing = self.nodes.setdefault(node.id, node)
        if experiment not in existing.used_by:
            existing.used_by.append(experiment)
        for note in node.notes:
            if note not in existing.notes:
                existing.notes.append(note)
        return existing


def _resolve(value: str, exp: Experiment) -> str:
    return resolve_relative(value, exp._source)


def _recipe_node(recipe_data: Any, where: str | Path, label: str, exp: Experiment, plan: Plan) -> Node:
    from rualign.config import load_yaml
    from rualign.data.recipe import config_hash
    from rualign.data.schema import Recipe

    if isinstance(recipe_data, dict):
        recipe, base = validate(Recipe, recipe_data, where), exp._source
    else:
        path = Path(_resolve(recipe_data, exp))
        if not path.is_file():
            raise ConfigError(f"recipe file '{recipe_data}' not found", path=exp._source,
                              expected="a recipe YAML path relative to the working folder or the experiment file")
        recipe, base = load_yaml(path, Recipe), path
    notes = []
    for source in recipe.sources:
        source.path = resolve_relative(source.path, base)
        if source.path.startswith("hf:"):
            notes.append(f"{source.path}: remote, not checked")
    key = config_hash(recipe)  # hashes local inputs: a missing file is a DataError naming it
    node = Node("data", key, f"data {label}", plan.store / "data" / key, {"recipe": recipe}, notes=notes)
    return plan.add(node, exp.name)


def _stage_data(stage: StageConfig, exp: Experiment, plan: Plan) -> tuple[str, Node | None, str]:
    """(data hash, data node or None for an existing data folder, label) of a stage."""
    value = stage.data
    where = f"{exp._source}: experiment '{exp.name}', stage '{stage.name}', data"
    if isinstance(value, str) and value in exp.data:
        node = _recipe_node(exp.data[value], where, value, exp, plan)
        return node.key, node, value
    if isinstance(value, dict):
        node = _recipe_node(value, where, f"{stage.name} (inline)", exp, plan)
        names = ", ".join(s.get("name", "?") for s in value.get("sources", []) if isinstance(s, dict))
        return node.key, node, f"inline recipe ({names})"
    if value.endswith((".yaml", ".yml")):
        node = _recipe_node(value, where, Path(value).stem, exp, plan)
        return node.key, node, value
    folder = Path(_resolve(value, exp))
    manifest = read_manifest(folder)
    if manifest is not None and (folder / "train.jsonl").is_file():
        verify_files(folder, manifest)  # before planning on it: a truncated train.jsonl is refused
    if manifest is None or not (folder / "train.jsonl").is_file():
        raise ConfigError(f"stage '{stage.name}': data '{value}' is neither a name under `data:` "
                          f"({', '.join(exp.data) or 'none defined'}), a recipe YAML, nor a finished data folder",
                          path=exp._source, expected="a data name, recipe.yaml, an inline recipe or a data folder")
    hashes = {n: file_hash(folder / n) for n in ("train.jsonl", "val.jsonl") if (folder / n).exists()}
    return stable_hash(hashes), None, str(folder)


def _model_note(spec: str, exp: Experiment) -> list[str]:
    from rualign.models import is_embedded

    if is_embedded(spec):
        return []
    resolved = _resolve(spec, exp)
    if Path(resolved).expanduser().exists():
        return []
    if spec.startswith(("hf:",)) or (spec.count("/") == 1 and not spec.startswith((".", "/", "~"))):
        return [f"model {spec}: remote, not checked"]
    raise ConfigError(f"model '{spec}' is neither 'default', an existing folder nor an HF id",
                      path=exp._source, expected="default, a model folder, or an id like Qwen/Qwen2.5-3B-Instruct")


def _train_nodes(exp: Experiment, plan: Plan) -> tuple[Node | None, list[str]]:
    """Train nodes in parent order; returns the node of the last stage (None for the base model) and data labels."""
    config = exp.train_config()
    if config is None:
        return None, []
    base_notes = _model_note(exp.model, exp)
    by_name: dict[str, Node] = {}
    labels: dict[str, str] = {}
    for stage in config.execution_order():
        data_key, data_node, labels[stage.name] = _stage_data(stage, exp, plan)
        parent = config.parent_of(stage)
        deps = {parent: by_name[parent]} if parent else {}
        for param in _MODEL_PARAMS:
            named = stage.params.get(param)
            if named in by_name:
                deps[named] = by_name[named]
            elif named in {s.name for s in config.stages}:
                raise ConfigError(f"stage '{stage.name}': {param} '{named}' must be an ancestor of the stage "
                                  "(it has to finish first)", path=exp._source)
        # The data is keyed by its content hash, so its spelling (a name, a path) is left out here.
        key = stable_hash({"stage": stage.key_fields(without=frozenset({"data"})),
                           "data": data_key, "deps": {n: d.key for n, d in sorted(deps.items())},
                           "model": exp.model, "chat_template": exp.chat_template, "seed": exp.seed,
                           "trust_remote_code": exp.trust_remote_code, "version": 1})
        node = Node("train", key, f"train {stage.name} ({stage.method})", plan.store / "train" / key,
                    {"experiment": exp, "stage": stage, "deps": {n: d.id for n, d in deps.items()}},
                    deps=[d.id for d in deps.values()] + ([data_node.id] if data_node else []),
                    notes=list(base_notes) if not parent else [])
        if data_node is None:
            node.spec["data_folder"] = labels[stage.name]
        else:
            node.spec["data_node"] = data_node.id
        by_name[stage.name] = plan.add(node, exp.name)
    last = config.execution_order()[-1]
    return by_name[last.name], [labels[s.name] for s in exp.stages]


def _answers_node(model: str, model_node: Node | None, chat_template: str, generation: Generation,
                  exp: Experiment, prompts_hash: str, prompts: str, label: str, plan: Plan,
                  trust_remote_code: bool = False) -> Node:
    identity = f"train:{model_node.key}" if model_node else model
    keyed = {"model": identity, "chat_template": chat_template, "prompts": prompts_hash,
             "limit": exp.eval.limit, "generation": generation.output_key(), "tokenizer": exp.eval.tokenizer,
             "version": 1}
    heldout = (exp.eval.heldout, exp.eval.heldout_limit) if exp.eval.heldout else None
    if heldout:  # only then: configs without held-out data keep their answers' hashes
        keyed["heldout"] = list(heldout)
    key = stable_hash(keyed)
    node = Node("answers", key, f"answers {label}", plan.store / "answers" / key,
                {"model": model, "model_node": model_node.id if model_node else None, "chat_template": chat_template,
                 "generation": generation, "prompts": prompts, "limit": exp.eval.limit,
                 "tokenizer": exp.eval.tokenizer, "heldout": heldout, "trust_remote_code": trust_remote_code},
                deps=[model_node.id] if model_node else [],
                notes=[] if model_node else _model_note(model, exp))
    return plan.add(node, exp.name)


def judge_config(exp: Experiment) -> JudgeConfig:
    judge = exp.eval.judge
    if isinstance(judge, JudgeConfig):
        return judge
    spec = judge if is_judge_spec(judge) else _resolve(judge, exp)
    return parse_judge_spec(spec)


def _experiment(exp: Experiment, plan: Plan) -> RunPlan:
    from rualign.eval.prompts_io import resolve_prompts_path

    prompts = exp.eval.prompts if exp.eval.prompts.startswith("bundled:") else _resolve(exp.eval.prompts, exp)
    missing_note = None
    if plan.allow_missing and not prompts.startswith("bundled:") and not Path(prompts).expanduser().exists():
        # A dry run of a config whose prompt file the user downloads later (e.g. ru_llm_arena_hard).
        missing_note = f"MISSING prompts file {prompts}: download it before a real run"
        prompts_hash = f"missing:{prompts}"
    else:
        prompts_hash = file_hash(resolve_prompts_path(prompts))  # a missing file is a DataError naming it
    final, labels = _train_nodes(exp, plan)
    # The experiment's trust_remote_code covers its own model; a reference model is never trusted implicitly.
    answers = _answers_node(exp.model, final, exp.chat_template, exp.eval.generation, exp, prompts_hash,
                            prompts, exp.name, plan, trust_remote_code=exp.trust_remote_code)
    if missing_note and missing_note not in answers.notes:
        answers.notes.append(missing_note)
    cfg = judge_config(exp)
    named = isinstance(exp.eval.reference, list)
    judged = [_judged_reference(ref, exp, answers, cfg, prompts_hash, prompts, plan, named)
              for ref in exp.eval.references()]
    knowledge = _knowledge_node(exp, final, plan) if exp.eval.knowledge else None
    return RunPlan(exp, answers.id, judged[0].reference, judged[0].judge, labels, cfg,
                   knowledge=knowledge.id if knowledge else None, named=judged if named else [])


def _judged_reference(ref: Reference, exp: Experiment, answers: Node, cfg: JudgeConfig, prompts_hash: str,
                      prompts: str, plan: Plan, named: bool) -> JudgedReference:
    """The reference's answers (a file, or a node that generates them) and the judge node against it. The
    reference's name is not hashed: the same reference judged in a single- or a multi-reference experiment
    is the same judge node."""
    name = getattr(ref, "name", None)
    if ref.answers is not None:
        ref_path = Path(_resolve(ref.answers, exp))
        if not ref_path.is_file():
            raise ConfigError(f"reference answers '{ref.answers}' not found", path=exp._source,
                              expected="an answers.jsonl (docs/formats.md) or reference: {model: ...}")
        reference, ref_key = f"file:{ref_path}", file_hash(ref_path)
    else:
        node = _answers_node(ref.model, None, ref.chat_template or exp.chat_template,
                             ref.generation or exp.eval.generation, exp, prompts_hash, prompts,
                             f"reference {ref.model}", plan)
        reference, ref_key = node.id, node.key
    key = stable_hash({"answers": answers.key, "reference": ref_key, "judge": cfg.judge_key(), "target": exp.eval.target,
                       "seed": exp.eval.judge_seed, "version": 1})
    notes = [f"judge endpoint {redact_url(cfg.base_url)}: not contacted in a dry run"] if cfg.base_url else []
    label = f"judge {exp.name}" + (f" vs {name}" if named else "")
    judge = plan.add(Node("judge", key, label, plan.store / "judge" / key,
                          {"answers": answers.id, "reference": reference, "config": cfg, "target": exp.eval.target,
                           "seed": exp.eval.judge_seed},
                          deps=[answers.id] + ([reference] if not reference.startswith("file:") else []),
                          notes=notes), exp.name)
    return JudgedReference(name, reference, judge.id)


def _knowledge_node(exp: Experiment, model_node: Node | None, plan: Plan) -> Node:
    """The knowledge check of the experiment's model: keyed by the model and the questions file's content, so
    experiments sharing a trained model share it, and changing the questions redoes only this node."""
    from rualign.eval.knowledge import resolve_questions_path

    spec = exp.eval.knowledge
    questions = spec if spec.startswith("bundled:") else _resolve(spec, exp)
    identity = f"train:{model_node.key}" if model_node else exp.model
    key = stable_hash({"model": identity, "questions": file_hash(resolve_questions_path(questions)),
                       "limit": exp.eval.knowledge_limit, "version": 1})
    node = Node("knowledge", key, f"knowledge {exp.name}", plan.store / "knowledge" / key,
                {"model": exp.model, "model_node": model_node.id if model_node else None, "questions": questions,
                 "limit": exp.eval.knowledge_limit, "trust_remote_code": exp.trust_remote_code},
                deps=[model_node.id] if model_node else [])
    return plan.add(node, exp.name)


def build_plan(experiments: list[Experiment], store: str | Path, *, allow_missing: bool = False) -> Plan:
    plan = Plan(Path(store).resolve(), allow_missing=allow_missing)
    for exp in experiments:
        try:
            plan.runs.append(_experiment(exp, plan))
        except RualignError as exc:
            if exc.path is None:
                exc.path = str(exp._source)
                exc.args = (exc.render(),)
            raise
    return plan
