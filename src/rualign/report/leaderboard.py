"""`rualign leaderboard` outputs: leaderboard.csv / .md, coefficients.json, a plot and a manifest.

One joint fit per reference (eval/joint.py): raw score, lc (length-controlled) and sc (style-controlled), each
with a percentile bootstrap CI over prompts from the SAME resamples, so the three are comparable.
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import astuple, dataclass, fields
from pathlib import Path

import numpy as np

from rualign.eval import joint
from rualign.eval.leaderboard import RunInput, gather, group_by_reference
from rualign.runs import file_hash, stable_hash, write_json, write_manifest, write_text

DEFAULT_BOOT = 1000


@dataclass
class Estimate:
    """A score on the 0..100 scale with its 95% CI (None: not estimable)."""

    value: float | None
    ci_low: float | None
    ci_high: float | None

    def text(self) -> str:
        return "–" if self.value is None else f"{self.value:.1f} [{self.ci_low:.1f}, {self.ci_high:.1f}]"


@dataclass
class LeaderRow:
    """One run of leaderboard.csv (its columns, in this order: COLUMNS)."""

    name: str
    n: int
    score: float | None
    ci_low: float | None
    ci_high: float | None
    lc: float | None
    lc_ci_low: float | None
    lc_ci_high: float | None
    sc: float | None
    sc_ci_low: float | None
    sc_ci_high: float | None
    mean_tokens: float | None
    reference_mean_tokens: float | None
    first_slot_win_rate: float | None
    verdict_mass: float | None
    calls: int
    failed_calls: int
    judge: str | None
    judge_status: str | None
    tokenizer: str | None
    reference: str

    def estimates(self) -> dict[str, Estimate]:
        """Raw, length- and style-controlled scores, by the names the tables use."""
        return {"score": Estimate(self.score, self.ci_low, self.ci_high),
                "lc": Estimate(self.lc, self.lc_ci_low, self.lc_ci_high),
                "sc": Estimate(self.sc, self.sc_ci_low, self.sc_ci_high)}


COLUMNS = tuple(f.name for f in fields(LeaderRow))


def _r(x: float | None, digits: int = 2) -> float | None:
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else round(float(x), digits)


def fit_group(inputs: list[RunInput], n_boot: int, seed: int, difficulty: float | str | None = None) -> dict:
    """Rows and coefficients of the runs sharing one reference; `difficulty`: the penalty of a per-prompt offset
    (eval/joint_difficulty.py), None for none."""
    data, extras = gather(inputs)
    counts = joint.bootstrap_counts(len(data.prompts), n_boot, np.random.default_rng(seed))
    score, score_ci, n = joint.raw_scores(data, counts)
    lc = joint.fit_joint(data, "lc", counts=counts, difficulty=difficulty)
    sc = joint.fit_joint(data, "sc", counts=counts, difficulty=difficulty)
    from rualign.eval.leaderboard import load_answers

    ref_tokens = float(np.mean([r.answer_tokens for r in load_answers(inputs[0].reference, "reference").values()]))
    rows = []
    for k, run in enumerate(inputs):
        ex = extras[k]
        rows.append(LeaderRow(
            name=run.name, n=int(n[k]), score=_r(score[k]), ci_low=_r(score_ci[k, 0]), ci_high=_r(score_ci[k, 1]),
            lc=_r(lc.strength[k]), lc_ci_low=_r(lc.ci[k, 0]), lc_ci_high=_r(lc.ci[k, 1]), sc=_r(sc.strength[k]),
            sc_ci_low=_r(sc.ci[k, 0]), sc_ci_high=_r(sc.ci[k, 1]), mean_tokens=_r(ex.mean_tokens, 1),
            reference_mean_tokens=_r(ref_tokens, 1), first_slot_win_rate=_r(ex.first_slot_win_rate, 4),
            verdict_mass=_r(ex.verdict_mass, 4), calls=ex.calls, failed_calls=ex.failed_calls, judge=run.judge,
            judge_status=run.judge_status, tokenizer=ex.tokenizer, reference=str(run.reference)))
    coefficients = {fit.kind: [{"name": c.name, "value": _r(c.value, 4), "ci_low": _r(c.ci_low, 4),
                                "ci_high": _r(c.ci_high, 4), "scale": _r(c.scale, 4)} for c in fit.coefficients]
                    for fit in (lc, sc)}
    fitted = {c["name"] for c in coefficients["sc"]}
    constant = [n for n in ("order", "length", *data.style_names) if n not in fitted]
    return {"reference": str(inputs[0].reference), "rows": rows, "coefficients": coefficients,
            "not_estimated": constant,
            "converged": bool(lc.converged and sc.converged), "calls_fitted": int(len(data.y)),
            "prompts": len(data.prompts), "difficulty": None if difficulty is None else {
                "requested": difficulty, **{f"{fit.kind}_penalty": _r(fit.prompt_penalty, 4) for fit in (lc, sc)},
                **{f"{fit.kind}_sigma": _r(fit.prompt_penalty ** -0.5, 3) for fit in (lc, sc)}}}


def csv_text(rows: list[LeaderRow]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(COLUMNS)
    for row in rows:
        writer.writerow(["" if value is None else value for value in astuple(row)])
    return buffer.getvalue()


def markdown(groups: list[dict], n_boot: int) -> str:
    lines = ["# Leaderboard", "",
             "score: raw mean preference for the run over the reference (both orders). lc: one logistic model over "
             "all runs sharing the reference, predicted at zero length difference and neutral answer order. sc: "
             "the same model with style covariates (markdown density, non-Cyrillic share). CIs: 95% percentile "
             f"bootstrap over prompts ({n_boot} resamples, whole model refitted each time).", ""]
    if groups and groups[0].get("difficulty") is not None:
        lines += ["With a per-prompt difficulty term (a ridge-penalised log-odds offset per prompt); lc and sc are "
                  "averaged over the prompts' difficulties.", ""]
    for group in groups:
        lines += [f"## Reference: `{group['reference']}`", "",
                  "| # | run | n | score | lc | sc | mean tokens | first-slot | verdict mass |",
                  "|---|---|---|---|---|---|---|---|---|"]
        ranked = sorted(group["rows"], key=lambda r: -(r.lc if r.lc is not None else -1))
        for i, row in enumerate(ranked, 1):
            fs = "–" if row.first_slot_win_rate is None else f"{row.first_slot_win_rate:.2f}"
            vm = "–" if row.verdict_mass is None else f"{row.verdict_mass:.2f}"
            flag = " UNVALIDATED" if row.judge_status == "unvalidated" else ""
            est = row.estimates()
            lines.append(f"| {i} | {_md(row.name)} | {row.n} | {est['score'].text()}{flag} | {est['lc'].text()} | "
                         f"{est['sc'].text()} | {row.mean_tokens:.0f} | {fs} | {vm} |")
        lines += ["", "Shared coefficients (log-odds per unit of the bounded covariate, 95% CI):", "",
                  "| model | covariate | value | CI |", "|---|---|---|---|"]
        for kind, coefs in group["coefficients"].items():
            for c in coefs:
                lines.append(f"| {kind} | {c['name']} | {c['value']:+.3f} | [{c['ci_low']:+.3f}, {c['ci_high']:+.3f}] |")
        if group.get("difficulty"):
            d = group["difficulty"]
            lines += ["", f"Prompt difficulty: ridge penalty {d['lc_penalty']:g} (lc) / {d['sc_penalty']:g} (sc), i.e. "
                      f"prompt offsets with sd about {d['lc_sigma']:g} / {d['sc_sigma']:g} log-odds"
                      + (" (estimated from the data)." if d["requested"] == "auto" else ".")]
        if group["not_estimated"]:
            lines += ["", "Not estimated (the same for every answer pair, so nothing to fit): "
                      + ", ".join(group["not_estimated"]) + "."]
        if not group["converged"]:
            lines += ["", "**Warning:** the fit did not converge in some resamples; treat CIs with care."]
        lines.append("")
    return "\n".join(lines)


def _md(text: str) -> str:
    return str(text).replace("|", "\\|")


def plot(groups: list[dict], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    rows = [r for g in groups for r in g["rows"]]
    x = np.array([r.mean_tokens for r in rows])
    for key, label, marker, shift in (("score", "raw", "o", -0.01), ("lc", "lc", "s", 0.0), ("sc", "sc", "^", 0.01)):
        est = [r.estimates()[key] for r in rows]
        y = np.array([e.value for e in est], float)
        err = np.array([[e.value - e.ci_low, e.ci_high - e.value] for e in est]).T
        xs = x * (1 + shift)
        ax.errorbar(xs, y, yerr=err, fmt=marker, capsize=3, label=label)
    for r, xi in zip(rows, x):
        ax.annotate(r.name, (xi, r.score), fontsize=7, xytext=(3, 3), textcoords="offset points")
    ax.axhline(50, color="grey", lw=0.8, ls="--")
    ax.set_xlabel("mean answer tokens")
    ax.set_ylabel("score vs reference (50 = equal)")
    ax.set_title("Raw and controlled scores against answer length (95% CIs)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def build_leaderboard(inputs: list[RunInput], out_dir: Path, *, n_boot: int = DEFAULT_BOOT, seed: int = 0,
                      difficulty: float | str | None = None) -> dict:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    groups = [fit_group(runs, n_boot, seed, difficulty) for runs in group_by_reference(inputs).values()]
    rows = [r for g in groups for r in g["rows"]]
    write_text(out_dir / "leaderboard.csv", csv_text(rows))
    write_text(out_dir / "leaderboard.md", markdown(groups, n_boot))
    write_json(out_dir / "coefficients.json", [{k: g[k] for k in ("reference", "coefficients", "not_estimated",
                                                                   "converged", "calls_fitted", "prompts", "difficulty")}
                                               for g in groups])
    plot(groups, out_dir / "leaderboard.png")
    hashed = [{"name": r.name, "answers": str(r.answers), "answers_hash": file_hash(r.answers),
               "judgments": str(r.judgments), "judgments_hash": file_hash(r.judgments),
               "reference": str(r.reference), "reference_hash": file_hash(r.reference)} for r in inputs]
    extra = {"difficulty": difficulty} if difficulty is not None else {}  # keyed only when used: old hashes hold
    write_manifest(out_dir, stage="leaderboard", config_hash=stable_hash({"inputs": hashed, "n_boot": n_boot,
                                                                          "seed": seed, **extra}),
                   inputs=hashed, n_boot=n_boot, seed=seed, **extra, files=["leaderboard.csv", "leaderboard.md", "coefficients.json", "leaderboard.png"])
    return {"groups": groups, "rows": rows}
