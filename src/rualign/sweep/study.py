"""Run a sweep: Optuna asks for parameters, each trial is an ordinary experiment through `rualign run`'s store.

All trials share one content-hashed store (DIR/_store), so a recipe that was trained or judged before, by
this or another trial or worker, is reused, never redone. Workers coordinate only through the Optuna storage
(SQLite in DIR by default; any Optuna storage URL for several machines) and a file lock per store node, so
two workers that draw the same recipe at once train it once. A worker killed mid-trial stops sending
heartbeats; after the grace period its trial is marked failed and re-queued with the same parameters.
"""

from __future__ import annotations

import csv
import math
import time
from pathlib import Path
from typing import Any, Callable

import yaml

from rualign.errors import ConfigError, RualignError
from rualign.runs import file_lock
from rualign.sweep.schema import Sweep

HEARTBEAT_S, GRACE_S = 10, 60
COUNTED = ("COMPLETE", "PRUNED", "RUNNING", "WAITING")  # plus FAIL with a recorded reason (a real failure)


class TrialFailed(Exception):
    """A trial's own failure (recorded with its reason; the sweep goes on)."""


class SweepAborted(RualignError):
    """A problem with the sweep itself (e.g. the objective names no results.csv column): stop every worker."""


def storage_for(url: str | None, out_dir: Path):
    """An Optuna storage: SQLite in OUT by default, a journal file on a shared disk (`journal:PATH`), or any
    RDB URL (postgresql://...). RDB storages get heartbeats, so a killed worker's trial is re-run."""
    import warnings

    import optuna.storages as storages
    from optuna.exceptions import ExperimentalWarning
    from optuna.storages import JournalStorage, RDBStorage
    from optuna.storages.journal import JournalFileBackend

    # Optuna 5 renamed the retry callback; heartbeats are "experimental" there since 2.8 (stable in practice).
    retry = getattr(storages, "RetryHeartbeatStaleTrialCallback", None) or storages.RetryFailedTrialCallback
    warnings.filterwarnings("ignore", category=ExperimentalWarning)

    if url and url.startswith("journal:"):
        return JournalStorage(JournalFileBackend(url[len("journal:"):]))
    url = url or f"sqlite:///{(out_dir / 'study.db').resolve()}"
    # SQLite under two writers needs a busy timeout, or a concurrent commit fails at once with "locked".
    engine = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {}
    return RDBStorage(url, engine_kwargs=engine, heartbeat_interval=HEARTBEAT_S, grace_period=GRACE_S,
                      failed_trial_callback=retry(max_retry=2))


def open_study(sweep: Sweep, storage: Any):
    import optuna

    cfg = sweep.config
    constraints = _constraints_func(cfg.n_constraints) if cfg.n_constraints else None
    if cfg.sampler == "nsga2":
        sampler = optuna.samplers.NSGAIISampler(seed=cfg.seed, constraints_func=constraints)
    elif cfg.sampler == "random":
        sampler = optuna.samplers.RandomSampler(seed=cfg.seed)
    else:
        sampler = optuna.samplers.TPESampler(seed=cfg.seed, n_startup_trials=min(4, cfg.trials),
                                             constraints_func=constraints)
    median = cfg.median_pruner
    pruner = (optuna.pruners.MedianPruner(n_startup_trials=median.startup_trials, n_warmup_steps=0)
              if median else optuna.pruners.NopPruner())
    return optuna.create_study(study_name=sweep.study_name, storage=storage, sampler=sampler, pruner=pruner,
                               directions=sweep.config.directions, load_if_exists=True)


def _constraints_func(count: int):
    def constraints(trial) -> list[float]:
        # Optuna calls this after a trial finishes; <= 0 means met. A trial without values counts as infeasible.
        from rualign.sweep.outputs import constraint_values

        return constraint_values(trial) or [math.inf] * count

    return constraints


def counted(study) -> int:
    """Trials that use up the budget: finished, running, queued, or failed with a reason of their own."""
    trials = study.get_trials(deepcopy=False)
    return sum(1 for t in trials if t.state.name in COUNTED or (t.state.name == "FAIL" and "error" in t.user_attrs))


def _say(message: str) -> None:
    from rualign.progress import console

    console().print(message, markup=False, highlight=False)


def execute_locked(plan, on_trained: Callable[[], None] | None = None, say: Callable[[str], None] = _say) -> dict:
    """Run every unfinished node (as pipeline.execute does) under a per-node lock; `on_trained` is called
    once every train node is finished, before generation (the pruning point)."""
    from rualign.pipeline.execute import RUNNERS, node_lock
    from rualign.progress import stage_log

    outcome: dict[str, str] = {}
    nodes = list(plan.nodes.values())
    last_train = max((i for i, n in enumerate(nodes) if n.kind == "train"), default=None)
    for index, node in enumerate(nodes):
        with node_lock(node.folder):
            if node.finished():
                outcome[node.id] = "cached"
            else:
                say(f"  {node.label} {node.key}: running")
                started = time.perf_counter()
                with stage_log(node.folder / "stage.log"):  # library output off the screen, as in `rualign run`
                    RUNNERS[node.kind](node, plan)
                outcome[node.id] = "ran"
                say(f"  {node.label} {node.key}: done in {time.perf_counter() - started:.1f}s")
        if index == last_train and on_trained is not None:
            on_trained()
    return outcome


def read_results_row(csv_path: Path) -> dict[str, Any]:
    """The first row of a results.csv, numbers as floats: every column is a possible objective."""
    with open(csv_path, encoding="utf-8", newline="") as handle:
        row = next(csv.DictReader(handle))
    out: dict[str, Any] = {}
    for key, value in row.items():
        try:
            out[key] = float(value) if value not in ("", None) else None
        except ValueError:
            out[key] = value
    return out


def metric_value(row: dict, column: str, csv_path: Path, sweep: Sweep, what: str) -> float:
    import difflib

    if column not in row:
        close = difflib.get_close_matches(column, list(row), n=3, cutoff=0.5)
        raise SweepAborted(f"{what} '{column}' is not a results.csv column", path=sweep.path,
                           expected=f"one of {', '.join(close or list(row))}")
    value = row[column]
    if not isinstance(value, float) or math.isnan(value):
        raise TrialFailed(f"results.csv ({csv_path}) has no number in column '{column}' (got {value!r})")
    return value


class TrialRunner:
    """What one trial does: write its experiment file, run it through the store, read its results row."""

    def __init__(self, sweep: Sweep, out_dir: Path, store: Path):
        self.sweep, self.out, self.store = sweep, out_dir, store

    def trial_name(self, number: int) -> str:
        return f"{self.sweep.base.get('name', 'trial')}-t{number:04d}"

    def __call__(self, trial) -> Any:
        try:
            return self._run(trial)
        except SweepAborted:
            raise
        except Exception as exc:  # noqa: BLE001 - a trial's failure is data: recorded with its reason
            import optuna

            if isinstance(exc, optuna.TrialPruned):
                raise
            reason = exc.render() if isinstance(exc, RualignError) else f"{type(exc).__name__}: {exc}"
            trial.set_user_attr("error", reason[:2000])
            _say(f"trial {trial.number} failed: {reason}")
            raise TrialFailed(reason) from exc

    def _run(self, trial) -> Any:
        from rualign.pipeline import build_plan, load_experiments
        from rualign.pipeline.execute import write_run_folder
        from rualign.report.build import build_report
        from rualign.runs import write_text

        params = {p: d.suggest(trial, p) for p, d in self.sweep.config.space.items()}
        name = self.trial_name(trial.number)
        folder = self.out / "trials" / name
        raw = self.sweep.experiment_for(params, name)
        write_text(folder / "experiment.yaml", yaml.safe_dump(raw, allow_unicode=True, sort_keys=False))
        trial.set_user_attr("experiment", str(folder / "experiment.yaml"))
        _say(f"trial {trial.number}: {', '.join(f'{k}={v}' for k, v in params.items())}")
        plan = build_plan(load_experiments(folder / "experiment.yaml"), self.store)
        started = time.perf_counter()
        execute_locked(plan, on_trained=lambda: self._maybe_prune(trial, plan))
        run_folder = write_run_folder(plan.runs[0], plan, self.out / "runs")
        trial.set_user_attr("run_dir", str(run_folder))
        result = build_report([run_folder], folder / "report", target=self.sweep.target)
        row = read_results_row(Path(result["files"]["csv"]))
        self._record(trial, row, time.perf_counter() - started)
        return self._values(trial, row, Path(result["files"]["csv"]))

    def _maybe_prune(self, trial, plan) -> None:
        import optuna

        from rualign.sweep.prune import validation_loss

        if self.sweep.config.median_pruner is None:
            return
        loss, note = validation_loss(plan)
        if loss is None:
            trial.set_user_attr("prune_note", note)
            return
        trial.set_user_attr("val_loss", loss)
        # Optuna's pruners read intermediate values in the study's direction: lower loss must look better.
        trial.report(loss if self.sweep.config.objective.direction == "minimize" else -loss, step=0)
        if trial.should_prune():
            raise optuna.TrialPruned(f"validation loss {loss:.4f} is worse than the median of earlier trials")

    def _record(self, trial, row: dict, seconds: float) -> None:
        # Every numeric results.csv column is kept on the trial, so trials.csv shows all of them.
        metrics = {k: v for k, v in row.items() if isinstance(v, float) and not math.isnan(v)}
        trial.set_user_attr("metrics", metrics)
        trial.set_user_attr("seconds", round(seconds, 1))

    def _values(self, trial, row: dict, csv_path: Path) -> Any:
        cfg = self.sweep.config
        score = metric_value(row, cfg.objective.metric, csv_path, self.sweep, "objective.metric")
        violations = []
        distance = None
        if cfg.length is not None:
            mean = metric_value(row, cfg.length.metric, csv_path, self.sweep, "length.metric")
            distance = abs(mean - self.sweep.target)
            trial.set_user_attr("distance", distance)
            if cfg.length.as_ == "constraint":
                violations.append(distance - cfg.length.tolerance)
        for number, bound in enumerate(cfg.constraints):
            value = metric_value(row, bound.metric, csv_path, self.sweep, f"constraints[{number}].metric")
            violations.append(bound.violation(value))
        if violations:
            trial.set_user_attr("constraint", violations)
        two = cfg.length is not None and cfg.length.as_ == "objective"
        return (score, distance) if two else score


def run_sweep(sweep: Sweep, out_dir: str | Path, *, trials: int | None = None, storage: str | None = None,
              store: str | Path | None = None) -> dict:
    """Run trials until the study holds `trials` (default: the file's) counted trials, then write outputs."""
    import optuna

    from rualign.sweep.outputs import write_outputs

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # failures are reported by the runner, with their reason
    with file_lock(out / ".study.lock"):  # two workers starting at once must not both create the study's tables
        study = open_study(sweep, storage_for(storage, out))
    target = trials or sweep.config.trials
    runner = TrialRunner(sweep, out, Path(store) if store else out / "_store")

    def stop_when_full(study, _trial) -> None:
        if counted(study) >= target:
            study.stop()

    for note in sweep.notes:
        _say(f"note: {note}")
    before = counted(study)
    if before < target:
        _say(f"study '{sweep.study_name}': {before} trial(s) so far, running until {target}")
        try:
            study.optimize(runner, callbacks=[stop_when_full], catch=(TrialFailed,))
        except SweepAborted:
            write_outputs(sweep, study, out)
            raise
    else:
        _say(f"study '{sweep.study_name}' already has {before} trial(s) (target {target}): nothing to run")
    return write_outputs(sweep, study, out)
