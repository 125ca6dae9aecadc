"""The experiment file: data recipe(s), training stages and evaluation, one or many experiments per file.

Shapes accepted (README, "Experiments"):
  - one experiment at the top level (`name`, `stages`, `eval`, ...);
  - `experiments: [...]` with shared `defaults:` deep-merged into each (the experiment wins);
  - `include: FILE | [FILES]` (relative to the including file), deep-merged under the file's own keys.
Mappings merge key by key; lists (stages, sources) are replaced whole, never concatenated, so what a file
says is what runs. Every problem is a ConfigError naming the file and the line of the offending key.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, PrivateAttr, field_validator, model_validator

from rualign.config import Seed, Strict, describe_error, key_line, parse_yaml_text, resolve_relative
from rualign.errors import ConfigError
from rualign.paths import SafeName
from rualign.eval.gen_config import Generation
from rualign.eval.schema import JudgeConfig
from rualign.records import DEFAULT_TARGET
from rualign.train.schema import StageConfig, TrainConfig

EXPERIMENT_KEYS = ("name", "description", "model", "chat_template", "seed", "trust_remote_code", "data",
                   "stage_defaults", "stages", "eval")


class Reference(Strict):
    """Reference answers: an existing answers.jsonl, or a model that generates them (once, cached)."""

    answers: str | None = None
    model: str | None = None
    chat_template: Literal["model", "chatml_no_system"] | None = None  # default: the experiment's
    generation: Generation | None = None                                  # default: the experiment's

    @model_validator(mode="after")
    def _one(self) -> "Reference":
        if (self.answers is None) == (self.model is None):
            raise ValueError("reference needs exactly one of `answers` (a file) or `model` (to generate them)")
        return self


class NamedReference(Reference):
    """One of several references (the study judged every model against four reference models). The name
    labels its scores and names its folder `references/<name>/` inside the run folder."""

    name: SafeName


def _checked(model: type, value: Any, where: str) -> Any:
    """model.model_validate(value), its errors re-raised as one line naming the entry (e.g. reference[1].name)."""
    from pydantic import ValidationError

    try:
        return model.model_validate(value)
    except ValidationError as exc:
        raise ValueError("; ".join(describe_error({**e, "loc": (where, *e["loc"])}) for e in exc.errors()[:3])) from None


class Evaluation(Strict):
    prompts: str = Field(description="prompts file (alpaca_eval / ru-arena / {id, prompt}) or bundled:NAME")
    limit: int | None = Field(None, ge=1, description="only the first N prompts (smoke runs)")
    generation: Generation = Field(default_factory=Generation)
    tokenizer: str = Field("default", description="answer lengths are counted in this tokenizer")
    reference: Reference | list[NamedReference] = Field(
        description="one reference ({answers: FILE} | {model: ...}), or a list of named ones: every experiment is "
                    "judged against each, scored per reference and pooled")
    judge: str | JudgeConfig = Field(description="judge SPEC (llamacpp:default, local:..., openai:m@url, "
                                                 "judge.yaml) or an inline judge mapping")
    target: int = Field(DEFAULT_TARGET, ge=1)
    judge_seed: Seed = 0
    heldout: str | None = Field(None, description="held-out conversations for ref_loss (hf backend): "
                                                  "bundled:grandmaster (its test split) or a JSONL file")
    heldout_limit: int = Field(16, ge=1, description="ref_loss over the first N held-out conversations")
    knowledge: str | None = Field(None, description="multiple-choice knowledge check of the experiment's model: "
                                                    "bundled:ru_mc or a questions JSONL (the `knowledge` column)")
    knowledge_limit: int | None = Field(None, ge=1, description="only the first N knowledge questions")

    @field_validator("judge", mode="before")
    @classmethod
    def _judge(cls, value: Any) -> Any:
        return JudgeConfig.model_validate(value) if isinstance(value, dict) else value

    @field_validator("reference", mode="before")
    @classmethod
    def _reference_shape(cls, value: Any) -> Any:
        # Decide the shape here, so an error names the problem instead of listing both union branches.
        if isinstance(value, list):
            if not value:
                raise ValueError("reference list is empty: give one reference mapping or a list of named ones")
            names = [r.get("name") for r in value if isinstance(r, dict)]
            dupes = sorted({str(n) for n in names if n is not None and names.count(n) > 1})
            if dupes:
                raise ValueError(f"duplicate reference name(s) {', '.join(dupes)}: each name labels its scores "
                                 "and names the folder references/<name>/ of the run folder")
            return [_checked(NamedReference, r, f"reference[{i}]") for i, r in enumerate(value)]
        return _checked(Reference, value, "reference") if isinstance(value, dict) else value

    def references(self) -> list[Reference]:
        """The references as a list (one unnamed reference for the single form)."""
        return list(self.reference) if isinstance(self.reference, list) else [self.reference]


class Experiment(Strict):
    name: SafeName  # the run folder under --out
    description: str = ""
    model: str = "default"
    chat_template: Literal["model", "chatml_no_system"] = "model"
    seed: Seed = 42
    trust_remote_code: bool = False
    data: dict[SafeName, str | dict[str, Any]] = Field(
        default_factory=dict, description="named recipes (inline mapping or recipe YAML path) for stages' data:")
    stage_defaults: dict[str, Any] = Field(default_factory=dict, description="keys merged into every stage")
    stages: list[StageConfig] = Field(default_factory=list, description="[] = evaluate the base model as is")
    eval: Evaluation
    _source: Path | None = PrivateAttr(default=None)  # the experiment file: relative paths resolve from it

    @model_validator(mode="before")
    @classmethod
    def _apply_stage_defaults(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("stage_defaults") and isinstance(data.get("stages"), list):
            data = dict(data)
            data["stages"] = [deep_merge(data["stage_defaults"], s) if isinstance(s, dict) else s
                              for s in data["stages"]]
        return data

    @model_validator(mode="after")
    def _lineage(self) -> "Experiment":
        self.train_config()  # missing or circular parents, duplicate names
        return self

    def train_config(self) -> TrainConfig | None:
        if not self.stages:
            return None
        return TrainConfig.model_validate({
            "model": self.model, "chat_template": self.chat_template, "seed": self.seed,
            "trust_remote_code": self.trust_remote_code,
            "stages": [s.model_dump(mode="json") for s in self.stages]})


class ExperimentFile(Strict):
    """What the top level of a multi-experiment file may hold (after includes)."""

    defaults: dict[str, Any] = Field(default_factory=dict)
    experiments: list[dict[str, Any]] = Field(min_length=1)


def deep_merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


# ---------------------------------------------------------------- loading with includes and line numbers

class _Layer:
    """One YAML file's data and node tree, to find the line of a key after merging."""

    def __init__(self, path: Path, data: Any, node: yaml.Node | None):
        self.path, self.data, self.node = path, data, node


def _read_layer(path: Path) -> _Layer:
    if not path.is_file():
        raise ConfigError("file not found", path=path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"not UTF-8 text (byte {exc.start})", path=path) from exc
    data, node = parse_yaml_text(text, path)
    if data is None:
        raise ConfigError("the file is empty", path=path, expected="an experiment mapping")
    if not isinstance(data, dict):
        raise ConfigError(f"top level is a {type(data).__name__}", path=path, expected="a YAML mapping")
    return _Layer(path, data, node)


def _load_with_includes(path: Path, seen: tuple[Path, ...] = ()) -> tuple[dict, list[_Layer]]:
    """The merged mapping of a file and its includes; layers listed most specific first."""
    path = path.resolve()
    if path in seen:
        chain = " -> ".join(str(p) for p in (*seen, path))
        raise ConfigError(f"circular include: {chain}", path=seen[-1])
    layer = _read_layer(path)
    includes = layer.data.get("include") or []
    if isinstance(includes, str):
        includes = [includes]
    if not isinstance(includes, list) or not all(isinstance(i, str) for i in includes):
        raise ConfigError("'include' must be a file path or a list of paths", path=path,
                          line=key_line(layer.node, ("include",)))
    merged: dict = {}
    layers: list[_Layer] = [layer]
    for name in includes:
        target = (path.parent / name)
        if not target.is_file():
            raise ConfigError(f"included file '{name}' not found", path=path, line=key_line(layer.node, ("include",)),
                              expected=f"a YAML file relative to {path.parent}")
        data, sub_layers = _load_with_includes(target, (*seen, path))
        merged = deep_merge(merged, data)
        layers.extend(sub_layers)
    own = {k: v for k, v in layer.data.items() if k != "include"}
    return deep_merge(merged, own), layers


def _locate(layers: list[_Layer], candidates: list[tuple]) -> tuple[Path, int | None]:
    """Where a key is written: an exact match in any layer first, then its parent; else the main file."""
    for partial in (False, True):
        for loc in candidates:
            for layer in layers:
                line = key_line(layer.node, loc[:-1] if partial and loc else loc)
                if line is not None:
                    return layer.path, line
    return layers[0].path, None


def _candidates(prefixes: list[tuple], loc: tuple) -> list[tuple]:
    """YAML locations an error at `loc` may come from, most specific first (stage keys may come from
    stage_defaults, experiment keys from defaults or an included file)."""
    found = []
    for prefix in prefixes:
        found.append(prefix + loc)
        if len(loc) > 2 and loc[0] == "stages":
            found.append(prefix + ("stage_defaults",) + loc[2:])
    return found


def _validate(model: type, data: dict, layers: list[_Layer], prefixes: list[tuple]):
    from pydantic import ValidationError

    try:
        return model.model_validate(data)
    except ValidationError as exc:
        errors = exc.errors()
        loc = tuple(errors[0]["loc"])
        named = re.search(r"unknown key\(s\) ([\w.-]+)", errors[0]["msg"])
        if named:  # a stage's method keys are checked as a group: point at the first unknown one
            loc += (named.group(1),)
        path, line = _locate(layers, _candidates(prefixes, loc))
        message = describe_error(errors[0])
        if len(errors) > 1:
            message += "; also: " + "; ".join(describe_error(e) for e in errors[1:4])
        raise ConfigError(message, path=path, line=line) from exc


def load_experiments(path: str | Path) -> list[Experiment]:
    """Every experiment of a file, validated; names must be unique within the file."""
    path = Path(path)
    data, layers = _load_with_includes(path)
    if "experiments" in data:
        unknown = sorted(set(data) - {"defaults", "experiments"})
        if unknown:
            where, line = _locate(layers, [(unknown[0],)])
            raise ConfigError(f"unknown top-level key '{unknown[0]}' in a file with `experiments:`", path=where,
                              line=line, expected="only `include`, `defaults` and `experiments` at the top level")
        top = _validate(ExperimentFile, data, layers, [()])
        raw = [deep_merge(top.defaults, e) for e in top.experiments]
        prefixes = [[("experiments", i), ("defaults",)] for i in range(len(raw))]
    else:
        raw, prefixes = [data], [[()]]
    experiments = [_validate(Experiment, r, layers, p) for r, p in zip(raw, prefixes)]
    names = [e.name for e in experiments]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ConfigError(f"duplicate experiment name(s): {', '.join(dupes)}", path=path,
                          expected="one name per experiment (it names the run folder)")
    for experiment in experiments:
        experiment._source = layers[0].path
        # A model folder written relative to the experiment file works from any working folder.
        experiment.model = resolve_relative(experiment.model, experiment._source)
        for ref in experiment.eval.references():
            if ref.model is not None:
                ref.model = resolve_relative(ref.model, experiment._source)
    return experiments
