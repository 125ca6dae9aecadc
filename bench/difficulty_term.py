"""Does a per-prompt difficulty term in the joint fit recover the length coefficient? (issue 11, part 3)

Simulated judgments (tests/joint_sim.py) with a known length slope gamma = 0.8 and order term 0.3, with and
without true per-prompt difficulty (b_i ~ N(0, sd)); fitted (point estimates) by:
  none   the shipped joint model (no prompt term)
  free   per-prompt offsets with a negligible penalty (lam = 1e-6): the fixed-effects model
  ridge  per-prompt offsets with an L2 penalty lam (a N(0, 1/lam) prior, random-effect like)
Prints gamma (mean and sd over seeds), the RMSE of the run strengths theta, and the Spearman correlation of
the runs' lc with the true theta. python bench/difficulty_term.py [--seeds 5]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from scipy.stats import spearmanr

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from joint_sim import simulate  # noqa: E402

from rualign.eval import joint  # noqa: E402
from rualign.eval.joint_difficulty import estimate_penalty, marginal_strength, newton_difficulty  # noqa: E402

FITS = (("none", None), ("free", 1e-6), ("ridge lam=1", 1.0), ("ridge lam estimated", "auto"))


def one(data, lam):
    z, names, _ = joint.design(data, "lc")
    ones = np.ones((1, len(data.y)))
    if lam is None:
        theta, coef, ok = joint.newton_batched(ones, data, z)
        lc = 100.0 / (1.0 + np.exp(-theta[0]))
    elif lam == "auto":
        lam, theta, b, coef, ok = estimate_penalty(data, z)
        lc = marginal_strength(theta, b, np.ones((1, len(data.prompts))))[0]
        return {**dict(zip(names, coef[0])), "lam": lam}, theta[0], lc, ok
    else:
        theta, b, coef, ok = newton_difficulty(ones, data, z, lam=lam)
        lc = marginal_strength(theta, b, np.ones((1, len(data.prompts))))[0]
    return dict(zip(names, coef[0])), theta[0], lc, ok


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--runs", type=int, default=6)
    parser.add_argument("--prompts", type=int, default=400)
    args = parser.parse_args()
    print(f"{args.runs} runs x {args.prompts} prompts x 2 orders, binary verdicts, true gamma 0.8, delta 0.3; "
          f"{args.seeds} seeds")
    print("| true difficulty sd | fit | gamma mean | gamma sd | delta mean | theta RMSE | Spearman(lc, theta) | converged |")
    print("|---|---|---|---|---|---|---|---|")
    for sd in (0.0, 1.0, 2.0):
        results = {name: [] for name, _ in FITS}
        for seed in range(args.seeds):
            data, truth = simulate(args.runs, args.prompts, seed=seed, difficulty_sd=sd)
            for name, lam in FITS:
                coefs, theta, lc, ok = one(data, lam)
                centred = theta - theta.mean() - (truth.theta - truth.theta.mean())
                results[name].append((coefs["length"], coefs.get("order", np.nan), float(np.sqrt(np.mean(centred ** 2))),
                                      spearmanr(lc, truth.theta).statistic, coefs.get("lam", np.nan), ok))
        for name, _ in FITS:
            r = np.array([x[:5] for x in results[name]], float)
            ok = sum(x[5] for x in results[name])
            est = "" if np.isnan(r[:, 4]).all() else f" (sigma est. {np.mean(1 / np.sqrt(r[:, 4])):.2f})"
            print(f"| {sd:g} | {name}{est} | {r[:, 0].mean():.3f} | {r[:, 0].std():.3f} | {r[:, 1].mean():.3f} | "
                  f"{r[:, 2].mean():.3f} | {r[:, 3].mean():.3f} | {ok}/{len(r)} |")


if __name__ == "__main__":
    main()
