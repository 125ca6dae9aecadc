"""The sweep file (README, "Recipe search"): a base experiment, a search space, an objective.

    experiment: ../demo.yaml          # relative to this file; one experiment (or `select:` one of several)
    trials: 6
    fixed: {eval.limit: 10}           # set in every trial
    space:
      stages.sft.lr: {log_uniform: [1.0e-4, 1.0e-2]}
    objective: {metric: score, direction: maximize}     # any results.csv column
    length: {target: 540, tolerance: 60, as: constraint}  # or `as: objective` (a second objective)
    constraints: [{metric: knowledge, min: 25.0}]      # bounds on any other results.csv column
    pruner: {median: {startup_trials: 2}}              # on validation loss after training; or `none`

Everything is checked before a trial runs: every path resolves, every distribution is a real range, and the
experiment is valid at both ends of every range (each choice) — so a typo fails in a second, not an hour in.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, PrivateAttr, model_validator

from rualign.config import Strict, parse_yaml_text
from rualign.errors import ConfigError
from rualign.sweep.space import Distribution, PathError, apply, resolve_path


class Objective(Strict):
    metric: str = Field("score", description="a results.csv column (score, lc_score, knowledge, mean_tokens, ...)")
    direction: Literal["maximize", "minimize"] = "maximize"


class LengthTarget(Strict):
    target: int | None = Field(None, ge=1, description="default: the experiment's eval.target")
    tolerance: float = Field(60.0, ge=0)
    as_: Literal["constraint", "objective"] = Field("constraint", alias="as")
    metric: str = Field("mean_tokens", description="the results.csv column holding the mean answer length")

    model_config = {"populate_by_name": True, "extra": "forbid"}


class Constraint(Strict):
    """A bound on a results.csv column that every acceptable trial meets, e.g. knowledge >= base - 2 points."""

    metric: str
    min: float | None = None
    max: float | None = None

    @model_validator(mode="after")
    def _bound(self) -> "Constraint":
        if self.min is None and self.max is None:
            raise ValueError(f"constraint on '{self.metric}' needs min or max")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"constraint on '{self.metric}': min {self.min} is greater than max {self.max}")
        return self

    def violation(self, value: float) -> float:
        """<= 0 when met (Optuna's convention): how far outside the bound the value is."""
        over = [self.min - value] if self.min is not None else []
        over += [value - self.max] if self.max is not None else []
        return max(over)


class MedianPruner(Strict):
    startup_trials: int = Field(2, ge=0, description="trials that finish before any is pruned")


class Pruner(Strict):
    median: MedianPruner | None = None


class SweepConfig(Strict):
    experiment: str = Field(description="the base experiment file, relative to the sweep file")
    select: str | None = Field(None, description="experiment name when the file holds several")
    study: str | None = Field(None, pattern=r"^[A-Za-z0-9_.-]+$", description="study name (default: file stem)")
    trials: int = Field(10, ge=1)
    seed: int = 0
    sampler: Literal["auto", "tpe", "nsga2", "random"] = "auto"
    fixed: dict[str, Any] = Field(default_factory=dict, description="path: value set in every trial (e.g. a "
                                  "smaller eval.limit for the search than for the final run)")
    space: dict[str, Distribution] = Field(min_length=1)
    objective: Objective = Field(default_factory=Objective)
    length: LengthTarget | None = None
    constraints: list[Constraint] = Field(default_factory=list, description="bounds on other results.csv columns")
    pruner: Pruner | Literal["none"] = "none"
    _source: Path | None = PrivateAttr(default=None)

    @model_validator(mode="after")
    def _sampler(self) -> "SweepConfig":
        two = self.length is not None and self.length.as_ == "objective"
        if two and self.median_pruner is not None:
            raise ValueError("the median pruner works with one objective (Optuna prunes single-objective studies "
                             "only): use length `as: constraint`, or pruner: none")
        if self.sampler == "auto":
            self.sampler = "nsga2" if two else "tpe"
        return self

    @property
    def directions(self) -> list[str]:
        two = self.length is not None and self.length.as_ == "objective"
        return [self.objective.direction] + (["minimize"] if two else [])

    @property
    def n_constraints(self) -> int:
        """Constraint values per trial: the length window (when a constraint) first, then `constraints`."""
        length = self.length is not None and self.length.as_ == "constraint"
        return int(length) + len(self.constraints)

    @property
    def median_pruner(self) -> MedianPruner | None:
        return self.pruner.median if isinstance(self.pruner, Pruner) else None


class Sweep:
    """A validated sweep: the config, the base experiment mapping, and each path's concrete location."""

    def __init__(self, config: SweepConfig, path: Path, base: dict, base_file: Path, locations: dict[str, tuple]):
        self.config, self.path, self.base, self.base_file, self.locations = config, path, base, base_file, locations
        self.notes = self._notes()

    def _notes(self) -> list[str]:
        """Legal but probably unintended set-ups, said once at the start and in report.md."""
        reference = (self.base.get("eval") or {}).get("reference") or {}
        pinned = "generation" in reference or any(p.startswith("eval.reference.generation") for p in self.config.fixed)
        searched = [p for p in self.config.space if p.startswith("eval.generation")]
        if searched and "model" in reference and not pinned:
            return [f"{searched[0]} is searched and the reference model inherits eval.generation, so each trial is "
                    "judged against a reference generated with its own settings (and the reference is regenerated "
                    "per setting); pin eval.reference.generation under `fixed:` to judge every trial against one "
                    "reference"]
        return []

    @property
    def study_name(self) -> str:
        return self.config.study or self.path.stem

    @property
    def target(self) -> int:
        if self.config.length is not None and self.config.length.target is not None:
            return self.config.length.target
        return int((self.base.get("eval") or {}).get("target") or 540)

    def experiment_for(self, params: dict[str, Any], name: str) -> dict:
        """The base experiment with the trial's values set, named `name` (paths made absolute)."""
        values = {self.locations[p]: v for p, v in self.config.fixed.items()}
        values.update({self.locations[p]: v for p, v in params.items()})
        raw = apply(self.base, values)
        raw["name"] = name
        return absolutize(raw, self.base_file)


def _base_experiment(path: Path, select: str | None, where: Path) -> dict:
    from rualign.pipeline.schema import _load_with_includes, deep_merge

    data, _ = _load_with_includes(path)
    if "experiments" not in data:
        if select and data.get("name") != select:
            raise ConfigError(f"select: '{select}' but {path} holds one experiment, '{data.get('name')}'", path=where)
        return data
    experiments = [deep_merge(data.get("defaults") or {}, e) for e in data["experiments"]]
    names = [e.get("name") for e in experiments]
    if select is None:
        if len(experiments) == 1:
            return experiments[0]
        raise ConfigError(f"{path} holds {len(experiments)} experiments; say which with `select:`", path=where,
                          expected=f"select: one of {', '.join(map(str, names))}")
    if select not in names:
        raise ConfigError(f"no experiment '{select}' in {path}", path=where, expected=f"one of {', '.join(map(str, names))}")
    return experiments[names.index(select)]


_PATH_KEYS = (("model",), ("eval", "prompts"), ("eval", "reference", "answers"), ("eval", "reference", "model"),
              ("eval", "knowledge"))


def absolutize(raw: dict, base_file: Path) -> dict:
    """Paths written relative to the base experiment file, made absolute, so the trial's own experiment file
    (written elsewhere) names the same files."""
    from rualign.config import resolve_relative

    def fix(value: Any) -> Any:
        if isinstance(value, str) and value and not value.startswith("bundled:"):
            resolved = resolve_relative(value, base_file)
            return str(Path(resolved).resolve()) if Path(resolved).exists() else value
        return value

    for location in _PATH_KEYS:
        node = raw
        for key in location[:-1]:
            node = node.get(key) if isinstance(node, dict) else None
        if isinstance(node, dict) and location[-1] in node:
            node[location[-1]] = fix(node[location[-1]])
    evaluation = raw.get("eval") or {}
    for ref in evaluation.get("reference") if isinstance(evaluation.get("reference"), list) else []:
        for key in ("answers", "model"):  # several named references: each one's paths
            if isinstance(ref, dict) and key in ref:
                ref[key] = fix(ref[key])
    if isinstance(evaluation.get("judge"), str) and evaluation["judge"].endswith((".yaml", ".yml")):
        evaluation["judge"] = fix(evaluation["judge"])
    for name, recipe in (raw.get("data") or {}).items():
        if isinstance(recipe, str):
            raw["data"][name] = fix(recipe)
        elif isinstance(recipe, dict):
            for source in recipe.get("sources") or []:
                if isinstance(source, dict) and isinstance(source.get("path"), str):
                    source["path"] = fix(source["path"])
    for stage in raw.get("stages") or []:
        if isinstance(stage, dict) and isinstance(stage.get("data"), str) and stage["data"] not in (raw.get("data") or {}):
            stage["data"] = fix(stage["data"])
    return raw


def _check_values(sweep: Sweep, node: Any) -> None:
    """The experiment must validate with every parameter at each end of its range (others at their base)."""
    from pydantic import ValidationError

    from rualign.pipeline.schema import Experiment, key_line

    for param, dist in sweep.config.space.items():
        for value in dist.extremes():
            raw = sweep.experiment_for({param: value}, "sweep-check")
            try:
                Experiment.model_validate(raw)
            except ValidationError as exc:
                first = exc.errors()[0]
                loc = ".".join(str(p) for p in first["loc"])
                raise ConfigError(f"space '{param}' = {value!r} makes the experiment invalid: '{loc}': "
                                  f"{first['msg'].removeprefix('Value error, ')}", path=sweep.path,
                                  line=key_line(node, ("space", param))) from exc


def load_sweep(path: str | Path) -> Sweep:
    """Read, validate and resolve a sweep file (every error names the file and the line)."""
    from rualign.config import validate
    from rualign.pipeline.schema import key_line

    path = Path(path)
    if not path.is_file():
        raise ConfigError("sweep file not found", path=path)
    data, node = parse_yaml_text(path.read_text(encoding="utf-8-sig"), path)
    config = validate(SweepConfig, data, path, node)
    base_file = (path.parent / config.experiment).resolve()
    if not base_file.is_file():
        raise ConfigError(f"experiment file '{config.experiment}' not found", path=path,
                          line=key_line(node, ("experiment",)), expected=f"a path relative to {path.parent}")
    base = _base_experiment(base_file, config.select, path)
    locations = {}
    overlap = sorted(set(config.fixed) & set(config.space))
    if overlap:
        raise ConfigError(f"'{overlap[0]}' is both fixed and searched", path=path,
                          line=key_line(node, ("fixed", overlap[0])), expected="each path in one of fixed / space")
    for section in ("fixed", "space"):
        for param in getattr(config, section):
            try:
                locations[param] = tuple(resolve_path(base, param))
            except PathError as exc:
                raise ConfigError(str(exc), path=path, line=key_line(node, (section, param))) from exc
    config._source = path
    sweep = Sweep(config, path, base, base_file, locations)
    _check_values(sweep, node)
    return sweep
