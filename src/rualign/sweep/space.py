"""The search space: a dotted path into the experiment file, and a distribution for it.

    space:
      stages.sft.lr: {log_uniform: [1.0e-5, 1.0e-3]}
      data.gm.sources.gm.filters.answer_tokens.max: {int: [300, 700], step: 10}
      data.gm.sources.0.sample.fraction: {choice: [0.1, 0.2, 0.4]}

A path walks the experiment's mapping as the file is written (includes and `defaults:` already merged). In a
list, a segment is an index (`stages.0`) or the `name` of an item (`stages.sft`, `sources.gm`). A key the file
does not write yet may be named when the schema has it (`stages.sft.lr` with no `lr:` in the file sets it).
"""

from __future__ import annotations

import copy
import difflib
import json
import math
import types
import typing
from typing import Any

from pydantic import BaseModel, Field, model_validator

from rualign.config import Strict

_KINDS = ("uniform", "log_uniform", "int", "choice")


class Distribution(Strict):
    """Exactly one of uniform / log_uniform / int / choice; `step` for uniform and int, `log` for int."""

    uniform: tuple[float, float] | None = None
    log_uniform: tuple[float, float] | None = None
    int_: tuple[int, int] | None = Field(None, alias="int")
    choice: list[Any] | None = None
    step: float | None = Field(None, gt=0)
    log: bool = False

    model_config = {"populate_by_name": True, "extra": "forbid"}

    @model_validator(mode="after")
    def _one(self) -> "Distribution":
        given = [k for k in _KINDS if getattr(self, "int_" if k == "int" else k) is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one of {', '.join(_KINDS)} (got {', '.join(given) or 'none'})")
        kind = given[0]
        if kind == "choice":
            if not self.choice:
                raise ValueError("choice: the list of values is empty")
            keys = [json.dumps(v, sort_keys=True) for v in self.choice]
            if len(set(keys)) != len(keys):
                raise ValueError("choice: a value is listed twice")
            if self.step is not None or self.log:
                raise ValueError("choice takes no step or log")
            return self
        low, high = self.bounds
        if not (math.isfinite(low) and math.isfinite(high)):
            raise ValueError(f"{kind}: bounds must be finite numbers")
        if low >= high:
            what = "empty" if low == high else "inverted"
            raise ValueError(f"{kind}: the range [{low}, {high}] is {what} (expected low < high)")
        if (kind == "log_uniform" or self.log) and low <= 0:
            raise ValueError(f"{kind}: a log scale needs low > 0 (got {low})")
        if self.step is not None:
            if kind == "log_uniform" or self.log:
                raise ValueError("step cannot be combined with a log scale")
            if self.step > high - low:
                raise ValueError(f"step {self.step} is larger than the range [{low}, {high}]")
            if kind == "int" and self.step != int(self.step):
                raise ValueError(f"int: step must be a whole number (got {self.step})")
        if self.log and kind != "int":
            raise ValueError("log: true is for int ranges; use log_uniform for floats")
        return self

    @property
    def kind(self) -> str:
        return next(k for k in _KINDS if getattr(self, "int_" if k == "int" else k) is not None)

    @property
    def bounds(self) -> tuple[float, float]:
        value = self.uniform or self.log_uniform or self.int_
        return (value[0], value[1]) if value else (math.nan, math.nan)

    def extremes(self) -> list[Any]:
        """Values that must all make a valid experiment (checked before any trial runs)."""
        if self.kind == "choice":
            return list(self.choice)
        low, high = self.bounds
        if self.kind == "int":
            step = int(self.step or 1)
            return [int(low), int(low) + ((int(high) - int(low)) // step) * step]
        return [low, high]

    def suggest(self, trial: Any, name: str) -> Any:
        low, high = self.bounds
        if self.kind == "choice":
            scalar = all(v is None or isinstance(v, (bool, int, float, str)) for v in self.choice)
            if scalar:
                return trial.suggest_categorical(name, self.choice)
            # Optuna stores scalars only: lists and mappings are offered as their JSON text.
            return json.loads(trial.suggest_categorical(name, [json.dumps(v, sort_keys=True) for v in self.choice]))
        if self.kind == "int":
            return trial.suggest_int(name, int(low), int(high), step=int(self.step or 1), log=self.log)
        if self.kind == "log_uniform":
            return trial.suggest_float(name, low, high, log=True)
        return trial.suggest_float(name, low, high, step=self.step)


# ------------------------------------------------------------------------------------------- paths

class PathError(ValueError):
    """A path that does not lead anywhere in the experiment; the message names the nearest valid keys."""


def _unwrap(annotation: Any) -> list[Any]:
    """The alternatives of a (possibly Optional / Union) annotation."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return [a for a in typing.get_args(annotation) if a is not type(None)]
    return [annotation]


def _child(annotation: Any, segment: str | int) -> Any:
    """The annotation one step below `annotation` (a model field, list item or dict value), or Any."""
    for option in _unwrap(annotation):
        origin = typing.get_origin(option)
        if isinstance(option, type) and issubclass(option, BaseModel):
            if isinstance(segment, str):
                field = next((f for n, f in option.model_fields.items() if segment in (n, f.alias)), None)
                if field is not None:
                    return field.annotation
        elif origin is list and isinstance(segment, int):
            return typing.get_args(option)[0]
        elif origin is dict and isinstance(segment, str):
            return typing.get_args(option)[1]
    return Any


def schema_keys(annotation: Any, node: Any) -> set[str]:
    """Keys the schema allows in a mapping of this annotation (stages add their method's own keys)."""
    from rualign.train.schema import StageConfig

    keys: set[str] = set()
    for option in _unwrap(annotation):
        if isinstance(option, type) and issubclass(option, BaseModel):
            keys |= {f.alias or n for n, f in option.model_fields.items()}
            if option is StageConfig and isinstance(node, (dict, type(None))):
                from rualign.train.methods import METHODS

                method = (node or {}).get("method")
                # stage_defaults (no method) may carry any method's keys: they land on every stage.
                specs = [METHODS[method]] if method in METHODS else ([] if method else list(METHODS.values()))
                for spec in specs:
                    keys |= set(spec.params.model_fields)
                keys.discard("params")
    return keys


def _root_annotation(first: str) -> Any:
    """Experiment's own annotations, with two hand-written ones: `data` holds recipes, `stage_defaults`
    holds stage keys (both are typed loosely in the experiment schema because they are validated later)."""
    from rualign.data.schema import Recipe
    from rualign.pipeline.schema import Experiment
    from rualign.train.schema import StageConfig

    if first == "data":
        return dict[str, Recipe]
    if first == "stage_defaults":
        return StageConfig
    return _child(Experiment, first)


def _nearest(segment: str, options: list[str]) -> str:
    close = difflib.get_close_matches(segment, options, n=3, cutoff=0.5)
    listed = ", ".join(close or sorted(options)[:12])
    return f"nearest: {listed}" if close else f"valid here: {listed or 'none'}"


def resolve_path(base: dict, path: str) -> list[str | int]:
    """The concrete location (keys and list indexes) a dotted path names in the experiment mapping."""
    from rualign.pipeline.schema import EXPERIMENT_KEYS

    segments = path.split(".")
    if not path or any(not s for s in segments):
        raise PathError(f"'{path}' is not a dotted path (e.g. stages.sft.lr)")
    node: Any = base
    annotation: Any = None
    concrete: list[str | int] = []
    for depth, segment in enumerate(segments):
        here = ".".join(str(s) for s in segments[:depth]) or "the experiment"
        if depth == 0:
            allowed = set(EXPERIMENT_KEYS)
            if segment not in allowed:
                raise PathError(f"unknown path '{path}': '{segment}' is not an experiment key ({_nearest(segment, sorted(allowed))})")
            annotation = _root_annotation(segment)
        elif isinstance(node, list):
            names = [item.get("name") for item in node if isinstance(item, dict)]
            if segment.isdigit():
                index = int(segment)
                if index >= len(node):
                    raise PathError(f"unknown path '{path}': {here} has {len(node)} item(s), no index {index}")
            elif segment in names:
                index = names.index(segment)
            else:
                shown = [str(n) for n in names if n is not None] + [str(i) for i in range(len(node))]
                raise PathError(f"unknown path '{path}': {here} has no item '{segment}' ({_nearest(segment, shown)})")
            annotation = _child(annotation, index)
            segment = index
        elif isinstance(node, dict) or node is None:
            present = set(node or {})
            allowed = schema_keys(annotation, node) if annotation is not Any else set()
            dict_like = any(typing.get_origin(a) is dict for a in _unwrap(annotation)) or annotation is Any
            if segment not in present and segment not in allowed and not dict_like:
                raise PathError(f"unknown path '{path}': '{segment}' is not a key of {here} "
                                f"({_nearest(segment, sorted(present | allowed))})")
            annotation = _child(annotation, segment)
        else:
            raise PathError(f"unknown path '{path}': {here} is a value ({node!r}), not a mapping or list")
        concrete.append(segment)
        node = node.get(segment) if isinstance(node, dict) else (node[segment] if isinstance(node, list) else None)
    return concrete


def apply(base: dict, values: dict[tuple, Any]) -> dict:
    """A deep copy of `base` with each concrete location set (missing mappings on the way are created)."""
    out = copy.deepcopy(base)
    for location, value in values.items():
        node = out
        for key in location[:-1]:
            if isinstance(node, dict) and not isinstance(node.get(key), (dict, list)):
                node[key] = {}
            node = node[key]
        node[location[-1]] = copy.deepcopy(value)
    return out
