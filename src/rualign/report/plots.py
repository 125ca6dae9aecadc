"""Report plots (PNG, matplotlib Agg): score vs length, answer-length histograms, CI forest plot.

Labels are in English throughout. Runs that were not judged appear in the length histograms only, and
each score plot says in its subtitle how many runs it leaves out.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rualign.report.build import Run

DPI = 110
_NOT_JUDGED_NOTE = "not judged (left out): {}"


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # no display on servers / CI; must precede pyplot's first import
    import matplotlib.pyplot as plt

    return plt


def _judged(rows: list[dict]) -> list[dict]:
    return [r for r in rows if r["status"] == "judged" and r["score"] is not None]


def _label(text: str) -> str:
    """A run name as plot text: matplotlib reads `$...$` as mathtext (a lone `$` raises), so escape it."""
    return str(text).replace("$", r"\$")


def _left_out(rows: list[dict]) -> str:
    names = [_label(r["name"]) for r in rows if r not in _judged(rows)]
    return _NOT_JUDGED_NOTE.format(", ".join(names)) if names else ""


def _ci(row: dict) -> tuple[float, float]:
    # A CI bound of 0.0 is a real value, so test for None rather than truthiness.
    low = row["score"] if row["ci_low"] is None else row["ci_low"]
    high = row["score"] if row["ci_high"] is None else row["ci_high"]
    return float(low), float(high)


def _save(fig, path: Path) -> Path:
    from rualign.runs import atomic_open

    fig.tight_layout()
    with atomic_open(path, "wb") as handle:
        fig.savefig(handle, format="png", dpi=DPI)
    _pyplot().close(fig)
    return path


def score_vs_length(rows: list[dict], target: int, path: Path) -> Path | None:
    """Score with 95% CI error bars against mean answer length, with the length target as a line."""
    judged = [r for r in _judged(rows) if r["mean_tokens"] is not None]
    if not judged:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7.5, 5))
    for row in judged:
        low, high = _ci(row)
        ax.errorbar(row["mean_tokens"], row["score"], yerr=[[row["score"] - low], [high - row["score"]]],
                    fmt="o", capsize=4, markersize=6)
        ax.annotate(_label(row["name"]), (row["mean_tokens"], row["score"]), textcoords="offset points",
                    xytext=(6, 6), fontsize=9)
    ax.axvline(target, color="tab:red", linestyle="--", linewidth=1.2, label=f"target {target} tokens")
    ax.axhline(50, color="grey", linestyle=":", linewidth=1, label="parity with reference (50)")
    ax.margins(x=0.15)  # room for the point labels at the edges
    ax.set_xlabel("mean answer length (tokens)")
    ax.set_ylabel("score vs reference (0–100, 95% CI)")
    ax.set_title("Score vs answer length" + (f"\n{_left_out(rows)}" if _left_out(rows) else ""), fontsize=11)
    ax.legend(loc="best", fontsize=8)
    ax.grid(alpha=0.3)
    return _save(fig, path)


def length_histograms(runs: list["Run"], target: int, path: Path) -> Path | None:
    """Small multiples: each run's answer lengths, the reference's overlaid, the target as a line."""
    import math

    import numpy as np
    from matplotlib.ticker import MaxNLocator

    series = [(run.name, [a.answer_tokens for a in run.answers if a.answer_tokens is not None],
               [r.answer_tokens for r in run.references.values() if r.answer_tokens is not None]) for run in runs]
    series = [s for s in series if s[1]]
    if not series:
        return None
    plt = _pyplot()
    ncols = min(3, len(series))
    nrows = math.ceil(len(series) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.2 * ncols, 3.2 * nrows), squeeze=False)
    top = max(max(m + (r or [0])) for _, m, r in series)
    bins = np.linspace(0, max(top, target) * 1.05 + 1, 31)
    for ax, (name, model, reference) in zip(axes.flat, series):
        ax.hist(model, bins=bins, alpha=0.65, color="tab:blue", label=f"model (mean {np.mean(model):.0f})")
        if reference:
            ax.hist(reference, bins=bins, histtype="step", linewidth=1.6, color="tab:orange",
                    label=f"reference (mean {np.mean(reference):.0f})")
        ax.axvline(target, color="tab:red", linestyle="--", linewidth=1.2, label=f"target {target}")
        ax.set_title(_label(name), fontsize=10)
        ax.set_xlabel("answer tokens")
        ax.set_ylabel("answers")
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
        ax.legend(fontsize=7, loc="upper right")
    for ax in list(axes.flat)[len(series):]:
        ax.axis("off")
    fig.suptitle("Answer length per run vs reference", fontsize=12)
    return _save(fig, path)


def forest(rows: list[dict], path: Path) -> Path | None:
    """Runs sorted by score with their 95% CIs and a line at 50 (parity with the reference)."""
    judged = sorted(_judged(rows), key=lambda r: r["score"])
    if not judged:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7.5, 2.2 + 0.45 * len(judged)))
    ys = list(range(len(judged)))
    for y, row in zip(ys, judged):
        low, high = _ci(row)
        ax.errorbar(row["score"], y, xerr=[[row["score"] - low], [high - row["score"]]], fmt="s",
                    color="tab:blue", capsize=4, markersize=6)
        ax.annotate(f"{row['score']:.1f} [{low:.1f}, {high:.1f}]", (high, y), textcoords="offset points",
                    xytext=(6, -3), fontsize=8)
    ax.axvline(50, color="grey", linestyle="--", linewidth=1)
    ax.annotate("parity (50)", (50, 1), xycoords=("data", "axes fraction"), xytext=(3, -12),
                textcoords="offset points", fontsize=8, color="grey")
    ax.set_yticks(ys, [_label(r["name"]) for r in judged])
    ax.set_ylim(-0.7, len(judged) - 0.3)
    lows = [_ci(r)[0] for r in judged] + [50]
    highs = [_ci(r)[1] for r in judged] + [50]
    span = max(highs) - min(lows)
    ax.set_xlim(max(0, min(lows) - 0.08 * span - 2), min(100, max(highs) + 0.3 * span + 5))
    ax.set_xlabel("score vs reference (0–100) with 95% CI")
    ax.set_title("Scores with 95% confidence intervals" + (f"\n{_left_out(rows)}" if _left_out(rows) else ""),
                 fontsize=11)
    ax.grid(axis="x", alpha=0.3)
    return _save(fig, path)


def write_plots(runs: list["Run"], rows: list[dict], target: int, folder: Path) -> dict[str, Path]:
    """Write every plot that has data; returns {plot name: path}, in display order."""
    made = {
        "score_vs_length": score_vs_length(rows, target, folder / "score_vs_length.png"),
        "forest": forest(rows, folder / "forest.png"),
        "length_histograms": length_histograms(runs, target, folder / "length_histograms.png"),
    }
    return {name: path for name, path in made.items() if path is not None}
