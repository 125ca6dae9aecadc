"""What a sweep leaves in DIR: trials.csv, best.yaml, plots/{pareto,importance}.png, report.md, report/.

Everything is rebuilt from the Optuna storage (not from this worker's memory), so any worker can write it
and the last one to finish writes the complete picture.
"""

from __future__ import annotations

import csv
import math
import shutil
from pathlib import Path
from typing import Any

from rualign.runs import atomic_open, write_text
from rualign.sweep.schema import Sweep


def _state(trial) -> str:
    return trial.state.name.lower()


def trial_rows(sweep: Sweep, trials: list) -> tuple[list[dict], list[str]]:
    """One row per trial: number, status, every parameter, every metric, error; and the column order."""
    params = list(sweep.config.space)
    metric_names: list[str] = []
    rows = []
    for t in trials:
        metrics = t.user_attrs.get("metrics") or {}
        metric_names += [m for m in metrics if m not in metric_names]
        row = {"trial": t.number, "status": _state(t), **{p: t.params.get(p) for p in params}, **metrics,
               "val_loss": t.user_attrs.get("val_loss"), "distance": t.user_attrs.get("distance"),
               "feasible": _feasible(sweep, t), "seconds": t.user_attrs.get("seconds"),
               "run_dir": t.user_attrs.get("run_dir"),
               "error": t.user_attrs.get("error") or t.user_attrs.get("prune_note") or (
                   "interrupted, or its worker was lost (not counted against --trials; finished stages are reused)"
                   if t.state.name == "FAIL" else None)}
        rows.append(row)
    columns = (["trial", "status"] + params + metric_names +
               ["val_loss", "distance", "feasible", "seconds", "run_dir", "error"])
    return rows, columns


def constraint_values(trial) -> list[float]:
    """A trial's constraint values (a single number in studies written by the first sweep version)."""
    value = trial.user_attrs.get("constraint")
    return [] if value is None else (list(value) if isinstance(value, list) else [value])


def _feasible(sweep: Sweep, trial) -> bool | None:
    """Every constraint met and the mean length within tolerance (None: nothing to meet, or no values)."""
    checks = [c <= 0 for c in constraint_values(trial)]
    if sweep.config.length is not None and "distance" in trial.user_attrs:
        checks.append(trial.user_attrs["distance"] <= sweep.config.length.tolerance)
    return all(checks) if checks else None


def _violation(trial) -> float:
    return sum(max(0.0, c) for c in constraint_values(trial) or [math.inf])


def best_trial(sweep: Sweep, study) -> tuple[Any, str]:
    """The best complete trial and a sentence saying how it was chosen.

    One objective: the best value among trials within the length tolerance (or all, with no length target).
    Two objectives: among the Pareto front, the best score within the tolerance, else the closest to it."""
    done = [t for t in study.get_trials(deepcopy=False) if _state(t) == "complete"]
    if not done:
        return None, "no trial completed"
    sign = 1 if sweep.config.objective.direction == "maximize" else -1
    score = (lambda t: sign * t.values[0])
    pool = done
    if len(sweep.config.directions) == 2:
        front = {t.number for t in study.best_trials}
        pool = [t for t in done if t.number in front]
    if sweep.config.length is None and not sweep.config.constraints:
        return max(pool, key=score), "best objective"
    feasible = [t for t in pool if _feasible(sweep, t)]
    rules = ([f"|mean tokens - {sweep.target}| <= {sweep.config.length.tolerance:g}"] if sweep.config.length else [])
    rules += [f"{c.metric} " + " and ".join(f"{op} {v:g}" for op, v in ((">=", c.min), ("<=", c.max)) if v is not None)
              for c in sweep.config.constraints]
    if feasible:
        return max(feasible, key=score), f"best {sweep.config.objective.metric} with {', '.join(rules)}"
    if sweep.config.length is not None and sweep.config.length.as_ == "objective" and not sweep.config.constraints:
        closest = min(pool, key=lambda t: t.user_attrs.get("distance", math.inf))
    else:
        closest = min(pool, key=_violation)
    return closest, f"NO trial met {', '.join(rules)}: best.yaml is the closest one"


def write_trials_csv(rows: list[dict], columns: list[str], path: Path) -> None:
    with atomic_open(path, "w") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: ("" if row.get(k) is None else row.get(k)) for k in columns})


def pareto_plot(sweep: Sweep, study, path: Path) -> Path | None:
    """Score against distance to the length target, one point per complete trial, the front joined."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    done = [t for t in study.get_trials(deepcopy=False)
            if _state(t) == "complete" and "distance" in t.user_attrs]
    if not done or sweep.config.length is None:
        return None
    sign = 1 if sweep.config.objective.direction == "maximize" else -1
    points = sorted((t.user_attrs["distance"], t.values[0], t.number) for t in done)
    front, best = [], -math.inf
    for distance, value, number in points:  # sorted by distance: a point is on the front if it beats all closer
        if sign * value > best:
            front.append((distance, value))
            best = sign * value
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.scatter([p[0] for p in points], [p[1] for p in points], color="#4c72b0", label="trial")
    for distance, value, number in points:
        ax.annotate(str(number), (distance, value), textcoords="offset points", xytext=(4, 4), fontsize=8)
    ax.plot([p[0] for p in front], [p[1] for p in front], color="#dd8452", marker="o", label="Pareto front")
    ax.axvline(sweep.config.length.tolerance, color="grey", linestyle="--", label="tolerance")
    ax.set_xlabel(f"|mean tokens - {sweep.target}|")
    ax.set_ylabel(sweep.config.objective.metric)
    ax.set_title(f"sweep {sweep.study_name}")
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def importance_plot(sweep: Sweep, study, path: Path) -> tuple[Path | None, str]:
    """Parameter importance (Optuna's PED-ANOVA) for the first objective; needs >= 2 complete trials and >= 2 values seen."""
    import matplotlib

    matplotlib.use("Agg")
    import warnings

    import matplotlib.pyplot as plt
    import optuna

    done = [t for t in study.get_trials(deepcopy=False) if _state(t) == "complete"]
    if len(done) < 2:
        return None, f"parameter importance needs at least 2 complete trials (have {len(done)})"
    try:
        # Optuna's default evaluator (PED-ANOVA; fANOVA would need scikit-learn) ranks parameters by how they
        # separate the best trials from the rest, reading "best" as low: flip the sign when maximizing.
        sign = -1.0 if sweep.config.objective.direction == "maximize" else 1.0
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "quantiles select the same trials" with few trials: still a ranking
            importance = optuna.importance.get_param_importances(study, target=lambda t: sign * t.values[0])
    except (RuntimeError, ValueError) as exc:
        return None, f"parameter importance not computed: {exc}"
    if not importance:
        return None, "parameter importance not computed: no parameter varied among complete trials"
    names = list(importance)[::-1]
    fig, ax = plt.subplots(figsize=(6, 0.5 + 0.45 * len(names)))
    ax.barh(names, [importance[n] for n in names], color="#55a868")
    ax.set_xlabel(f"importance for {sweep.config.objective.metric} (PED-ANOVA)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path, ""


def _markdown(sweep: Sweep, rows: list[dict], columns: list[str], best: Any, how: str, plots: dict,
              notes: list[str]) -> str:
    cfg = sweep.config
    shown = ["trial", "status", *cfg.space, cfg.objective.metric]
    if cfg.length:
        shown += [cfg.length.metric, "distance"]
    shown += [c.metric for c in cfg.constraints if c.metric not in shown]
    shown += ["feasible"] if cfg.length or cfg.constraints else []
    shown += ["val_loss", "error"]
    counts: dict[str, int] = {}
    for row in rows:
        counts[row["status"]] = counts.get(row["status"], 0) + 1
    lines = [f"## Sweep `{sweep.study_name}`", "",
             f"Base experiment `{sweep.base_file}`; objective: {cfg.objective.direction} "
             f"`{cfg.objective.metric}`" + (f"; length target {sweep.target} ± {cfg.length.tolerance:g} tokens "
                                            f"as {'an' if cfg.length.as_ == 'objective' else 'a'} {cfg.length.as_}" if cfg.length else "")
             + "".join(f"; constraint {c.metric} " + " and ".join(f"{op} {v:g}" for op, v in
                                                                 ((">=", c.min), ("<=", c.max)) if v is not None)
                       for c in cfg.constraints)
             + f"; sampler {cfg.sampler}.", "",
             "Trials: " + ", ".join(f"{n} {s}" for s, n in sorted(counts.items())) + ".", ""]
    if best is not None:
        lines += [f"**Best: trial {best.number}** ({how}): " + ", ".join(f"`{k}` = {v}" for k, v in best.params.items())
                  + f" → {cfg.objective.metric} {best.values[0]:.4g}. Run it again: `rualign run best.yaml`.", ""]
    lines += ["| " + " | ".join(shown) + " |", "|" + "---|" * len(shown)]
    for row in rows:
        lines.append("| " + " | ".join(_cell(row.get(c)) for c in shown) + " |")
    lines.append("")
    for name, file in plots.items():
        lines += [f"![{name}]({file})", ""]
    lines += [f"- {n}" for n in notes]
    lines += ["", "All trials' answers, scores and plots: [report/report.md](report/report.md). "
              "Every parameter and metric: [trials.csv](trials.csv).", ""]
    return "\n".join(lines)


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value).replace("|", "\\|").replace("\n", " ")[:160]


def write_outputs(sweep: Sweep, study, out: Path) -> dict:
    trials = study.get_trials(deepcopy=False)
    rows, columns = trial_rows(sweep, trials)
    write_trials_csv(rows, columns, out / "trials.csv")
    best, how = best_trial(sweep, study)
    notes: list[str] = list(sweep.notes)
    if best is not None:
        shutil.copyfile(best.user_attrs["experiment"], out / ".best.yaml.tmp")
        (out / ".best.yaml.tmp").replace(out / "best.yaml")
    plots: dict[str, str] = {}
    pareto = pareto_plot(sweep, study, out / "plots" / "pareto.png")
    if pareto:
        plots[f"Pareto front: {sweep.config.objective.metric} against distance to the length target"] = "plots/pareto.png"
    importance, note = importance_plot(sweep, study, out / "plots" / "importance.png")
    if importance:
        plots["parameter importance"] = "plots/importance.png"
    elif note:
        notes.append(note)
    run_dirs = [Path(r["run_dir"]) for r in rows if r["status"] == "complete" and r.get("run_dir")]
    if run_dirs:
        from rualign.report.build import build_report

        build_report(run_dirs, out / "report", target=sweep.target)
    write_text(out / "report.md", _markdown(sweep, rows, columns, best, how, plots, notes))
    return {"rows": rows, "best": best.number if best is not None else None, "how": how, "notes": notes,
            "files": {"csv": str(out / "trials.csv"), "report": str(out / "report.md"),
                      "best": str(out / "best.yaml") if best is not None else None,
                      "plots": {k: str(out / v) for k, v in plots.items()}}}
