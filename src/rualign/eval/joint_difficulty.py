"""The joint fit with a per-prompt difficulty term (`rualign leaderboard --difficulty`), as a ridge (random-effect
like) offset:

    logit P(model preferred) = theta_k + b_i + delta * order_r + gamma * tanh(dlen_r / s_len) [+ styles]

with an L2 penalty lam/2 * sum_i b_i^2 on the prompt offsets (a N(0, 1/lam) prior: lam = 1 says a prompt's
difficulty is typically within +-1 log-odds). Free offsets (lam -> 0) are the fixed-effects model: with two
orders x K runs per prompt they are estimated from a dozen binary calls each and soak up the length effect
(measured in bench/difficulty_term.py). The run strength is reported marginally, averaged over the prompts'
difficulties (as AlpacaEval's GLM does), so lc stays on the raw score's scale:

    lc_k = 100 * mean_i sigmoid(theta_k + b_i)     (zero length difference, neutral order)

Newton steps per bootstrap resample, batched: both the run block and the prompt block of the Hessian are
diagonal, so the prompt offsets are eliminated (Schur complement) and only a (K + m) system is solved per
resample; the run x prompt coupling is a (K, P) matrix of curvature sums per resample.
"""

from __future__ import annotations

import numpy as np
from scipy import sparse

from rualign.eval.joint import COEF_RIDGE, RIDGE, JointData

PROMPT_RIDGE = 1.0


def _indicators(data: JointData) -> tuple[sparse.csr_matrix, sparse.csr_matrix]:
    """(P, R) prompt indicator and (K*P, R) run-x-prompt cell indicator, to sum row quantities per group."""
    n_rows, n_prompts = len(data.y), len(data.prompts)
    rows = np.arange(n_rows)
    ones = np.ones(n_rows)
    prompt = sparse.csr_matrix((ones, (data.prompt_idx, rows)), shape=(n_prompts, n_rows))
    cell = data.run_idx * n_prompts + data.prompt_idx
    cells = sparse.csr_matrix((ones, (cell, rows)), shape=(len(data.runs) * n_prompts, n_rows))
    return prompt, cells


def newton_difficulty(weights: np.ndarray, data: JointData, z: np.ndarray, *, lam: float = PROMPT_RIDGE,
                      iters: int = 60, tol: float = 1e-7, decrement_tol: float | None = None,
                      start=None) -> tuple[np.ndarray, np.ndarray, np.ndarray, bool]:
    """Weighted fits of theta (B, K), prompt offsets b (B, P) and shared coefficients (B, m), one per row of
    `weights` (B, R). Convergence as joint.newton_batched."""
    n_boot, n_runs, n_prompts, m = weights.shape[0], len(data.runs), len(data.prompts), z.shape[1]
    prompt_ind, cell_ind = _indicators(data)
    theta = np.zeros((n_boot, n_runs)) if start is None else np.repeat(start[0][None], n_boot, 0)
    b = np.zeros((n_boot, n_prompts)) if start is None else np.repeat(start[1][None], n_boot, 0)
    coef = np.zeros((n_boot, m)) if start is None else np.repeat(start[2][None], n_boot, 0)
    z_t = np.ascontiguousarray(z.T)
    pairs = np.einsum("rj,rl->rjl", z, z).reshape(len(z), m * m)
    for _ in range(iters):
        eta = coef @ z_t + theta[:, data.run_idx] + b[:, data.prompt_idx]
        p = 1.0 / (1.0 + np.exp(-np.clip(eta, -35.0, 35.0)))
        resid, curv = (p - data.y) * weights, p * (1.0 - p) * weights
        cell = (cell_ind @ curv.T).T.reshape(n_boot, n_runs, n_prompts)  # H_theta_b
        g_t = (cell_ind @ resid.T).T.reshape(n_boot, n_runs, n_prompts).sum(2) + RIDGE * theta
        g_b = (prompt_ind @ resid.T).T + lam * b
        g_c = resid @ z + COEF_RIDGE * coef
        h_tt, h_bb = cell.sum(2) + RIDGE, cell.sum(1) + lam
        h_tc = np.stack([(cell_ind @ (curv * z[:, j]).T).T.reshape(n_boot, n_runs, n_prompts).sum(2)
                         for j in range(m)], 2) if m else np.zeros((n_boot, n_runs, 0))
        h_bc = np.stack([(prompt_ind @ (curv * z[:, j]).T).T for j in range(m)], 2) if m else \
            np.zeros((n_boot, n_prompts, 0))
        h_cc = (curv @ pairs).reshape(n_boot, m, m) + COEF_RIDGE * np.eye(m)
        # u = (theta, coef): its block minus the prompt block eliminated (h_bb is diagonal).
        h_uu = np.zeros((n_boot, n_runs + m, n_runs + m))
        h_uu[:, np.arange(n_runs), np.arange(n_runs)] = h_tt
        h_uu[:, :n_runs, n_runs:], h_uu[:, n_runs:, :n_runs] = h_tc, h_tc.transpose(0, 2, 1)
        h_uu[:, n_runs:, n_runs:] = h_cc
        h_ub = np.concatenate([cell, h_bc.transpose(0, 2, 1)], 1)  # (B, K + m, P)
        scaled = h_ub / h_bb[:, None, :]
        schur = h_uu - scaled @ h_ub.transpose(0, 2, 1)
        g_u = np.concatenate([g_t, g_c], 1)
        rhs = g_u - np.einsum("bup,bp->bu", scaled, g_b)
        d_u = np.linalg.solve(schur, rhs[:, :, None])[:, :, 0]
        d_b = (g_b - np.einsum("bup,bu->bp", h_ub, d_u)) / h_bb
        d_t, d_c = d_u[:, :n_runs], d_u[:, n_runs:]
        big = np.abs(np.concatenate([d_t, d_b, d_c], 1)).max(1, keepdims=True)
        shrink = np.minimum(1.0, 5.0 / np.maximum(big, 1e-12))
        theta, b, coef = theta - d_t * shrink, b - d_b * shrink, coef - d_c * shrink
        decrement = (d_u * g_u).sum(1) + (d_b * g_b).sum(1)
        if float(big.max()) < tol or (decrement_tol is not None and float(decrement.max()) < decrement_tol):
            return theta, b, coef, True
    return theta, b, coef, False


def estimate_penalty(data: JointData, z: np.ndarray, *, iters: int = 30, tol: float = 1e-3):
    """The prompt-offset penalty lam = 1 / sigma^2 estimated from the data (Laplace-approximate EM for the
    variance of a random intercept: sigma^2 = mean_i (b_i^2 + 1 / h_i), h_i the curvature of prompt i), with the
    full-data fit at that penalty: (lam, theta, b, coef, converged). A judge with no prompt effects drives
    sigma^2 towards 0, i.e. back to the model without the term."""
    ones = np.ones((1, len(data.y)))
    lam, start = PROMPT_RIDGE, None
    for _ in range(iters):
        theta, b, coef, ok = newton_difficulty(ones, data, z, lam=lam, start=start)
        eta = coef[0] @ z.T + theta[0, data.run_idx] + b[0, data.prompt_idx]
        p = 1.0 / (1.0 + np.exp(-np.clip(eta, -35.0, 35.0)))
        h = np.bincount(data.prompt_idx, p * (1.0 - p), minlength=len(data.prompts)) + lam
        new = 1.0 / max(float(np.mean(b[0] ** 2 + 1.0 / h)), 1e-4)
        start = (theta[0], b[0], coef[0])
        if abs(new - lam) <= tol * lam:
            lam = new
            break
        lam = new
    theta, b, coef, ok = newton_difficulty(ones, data, z, lam=lam, start=start)
    return lam, theta, b, coef, ok


def marginal_strength(theta: np.ndarray, b: np.ndarray, prompt_weights: np.ndarray) -> np.ndarray:
    """100 * mean over prompts (weighted: a resample's prompt counts) of sigmoid(theta_k + b_i): (B, K)."""
    eta = np.clip(theta[:, :, None] + b[:, None, :], -35.0, 35.0)
    probs = 1.0 / (1.0 + np.exp(-eta))
    w = prompt_weights / np.maximum(prompt_weights.sum(1, keepdims=True), 1e-12)
    return 100.0 * np.einsum("bkp,bp->bk", probs, w)
