"""One logistic model over every run judged against the same reference: lc and sc with bootstrap CIs.

Each judge call r (run k, prompt i, either order) has a soft label y_r = preference for the model answer and

    logit P(model preferred) = theta_k + delta * order_r + gamma * tanh(dlen_r / s_len) [+ sum_f beta_f * tanh(dstyle_rf / s_f)]

with order_r = +1 when the model answer sat in slot A, dlen_r = model tokens - reference tokens and s_len the
standard deviation of dlen over ALL runs' calls. Only theta_k is per run: the length (and style) slope is
estimated once across runs, so a run cannot explain its own quality away as length (a per-run fit can: on
public AlpacaEval-2 judgments a 68-character model gained 27 points). The transform is bounded (tanh, as
AlpacaEval's GLM) so a run of extreme lengths cannot extrapolate the slope.

    lc_k = 100 * sigmoid(theta_k) of the model without style terms   (zero length difference, neutral order)
    sc_k = 100 * sigmoid(theta_k) of the model with the style terms  (Bradley–Terry with style covariates,
                                                                      arena-hard v2 style, features in style.py)

CIs: percentile bootstrap over PROMPTS (the unit the runs share), refitting the whole model per resample.
A resample is a vector of prompt counts, i.e. row weights on the same design, so all resamples are fitted
at once by batched Newton steps; the per-run block of the Hessian is diagonal, so each step solves only
the small covariate system (Schur complement) per resample.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

CI_LEVEL = 0.95
RIDGE = 1e-4  # on run strengths: keeps a run that wins (or loses) every call finite; negligible otherwise
# On the shared covariates: a weak N(0, 1) prior on log-odds per unit of a bounded (tanh) covariate. Against a
# curvature of thousands per covariate it shifts nothing measurable, but it keeps nearly collinear style
# covariates (list and bold density often move together) well-posed, so the bootstrap refits converge.
COEF_RIDGE = 1.0
BOOT_DECREMENT = 1e-4  # bootstrap refits stop when < 1e-4 of log-likelihood is left to gain
_CHUNK_ROWS = 4_000_000  # resamples x rows per batch: bounds memory (~32 MB per float64 array)


@dataclass
class JointData:
    """Judge calls of several runs against one reference, already paired and with lengths."""

    runs: list[str]
    prompts: list[str]
    run_idx: np.ndarray  # (R,) int
    prompt_idx: np.ndarray  # (R,) int
    y: np.ndarray  # (R,) preference for the model answer, 0..1
    order: np.ndarray  # (R,) +1 model_first, -1 reference_first
    length_diff: np.ndarray  # (R,) model tokens - reference tokens
    style_diff: np.ndarray | None = None  # (R, F) model feature - reference feature
    style_names: tuple[str, ...] = ()

    def __post_init__(self):
        order = np.lexsort((self.prompt_idx, self.run_idx))  # rows grouped by run: per-run sums are slices
        for name in ("run_idx", "prompt_idx", "y", "order", "length_diff"):
            setattr(self, name, np.asarray(getattr(self, name))[order])
        if self.style_diff is not None:
            self.style_diff = np.asarray(self.style_diff, dtype=float)[order]
        self.y = self.y.astype(float)
        self.order = self.order.astype(float)
        self.length_diff = self.length_diff.astype(float)


@dataclass
class Coefficient:
    name: str
    value: float
    ci_low: float
    ci_high: float
    scale: float | None = None  # the std the covariate was divided by before tanh (tokens, or feature units)


@dataclass
class JointFit:
    kind: str  # "lc" or "sc"
    runs: list[str]
    strength: np.ndarray  # (K,) 100 * sigmoid(theta)
    ci: np.ndarray  # (K, 2)
    coefficients: list[Coefficient]
    converged: bool
    boot: np.ndarray = field(repr=False, default=None)  # (B, K) 100 * sigmoid(theta) per resample
    prompt_penalty: float | None = None  # with a difficulty term: the L2 penalty of the prompt offsets used


def _sigmoid(z: np.ndarray) -> np.ndarray:  # for the reported values (float64)
    return 1.0 / (1.0 + np.exp(-np.clip(z, -35.0, 35.0)))


def bounded(values: np.ndarray) -> tuple[np.ndarray | None, float | None]:
    """tanh(x / std(x)) and the std; (None, None) for a constant column (nothing to estimate from it)."""
    scale = float(np.std(values))
    if not np.isfinite(scale) or scale <= 1e-12:
        return None, None
    return np.tanh(values / scale), scale


def design(data: JointData, kind: str) -> tuple[np.ndarray, list[str], list[float | None]]:
    """Shared covariates Z (R, m): order, bounded length, and for sc the bounded style differences."""
    columns, names, scales = [], [], []
    if np.ptp(data.order) > 0:  # one order only: the order term is not estimable (and is neutral anyway)
        columns.append(data.order), names.append("order"), scales.append(None)
    candidates = [("length", data.length_diff)]
    if kind == "sc" and data.style_diff is not None:
        candidates += [(name, data.style_diff[:, j]) for j, name in enumerate(data.style_names)]
    for name, values in candidates:
        col, scale = bounded(values)
        if col is not None:  # a constant difference (e.g. no answer has headers) has no coefficient
            columns.append(col), names.append(name), scales.append(scale)
    if not columns:
        return np.zeros((len(data.y), 0)), names, scales
    return np.column_stack(columns), names, scales


def _run_slices(run_idx: np.ndarray, n_runs: int) -> list[slice]:
    bounds = np.searchsorted(run_idx, np.arange(n_runs + 1))
    return [slice(int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:])]


def _probabilities(theta: np.ndarray, coef: np.ndarray, data: JointData, z_t: np.ndarray, dtype) -> np.ndarray:
    """sigmoid(theta[run] + coef . z) for every resample and row, in place in one (B, R) buffer."""
    eta = coef.astype(dtype) @ z_t
    eta += theta.astype(dtype)[:, data.run_idx]
    with np.errstate(over="ignore"):  # exp overflow gives inf, and 1 / (1 + inf) = 0 is the right limit
        np.negative(eta, out=eta)
        np.exp(eta, out=eta)
    eta += 1.0
    return np.reciprocal(eta, out=eta)


def newton_batched(weights: np.ndarray, data: JointData, z: np.ndarray, *, start=None, iters: int = 40,
                   tol: float = 1e-7, decrement_tol: float | None = None,
                   dtype=np.float64) -> tuple[np.ndarray, np.ndarray, bool]:
    """Weighted logistic fits of theta (B, K) and shared coefficients (B, m), one per row of `weights` (B, R).

    Converged when every Newton step is below `tol`, or, with `decrement_tol`, when every Newton decrement
    (step . gradient, about twice the log-likelihood still to gain) is below it. The bootstrap uses the
    decrement with float32 (B, R) work arrays (twice the speed): rounding noise then only moves the fit along
    directions the data hardly determine (nearly collinear style covariates), which the decrement ignores and
    a step-size test would chase forever. Per-resample sums and the Newton solve are always float64."""
    n_boot, n_runs, m = weights.shape[0], len(data.runs), z.shape[1]
    slices = _run_slices(data.run_idx, n_runs)
    theta = np.zeros((n_boot, n_runs)) if start is None else np.repeat(start[0][None], n_boot, 0)
    coef = np.zeros((n_boot, m)) if start is None else np.repeat(start[1][None], n_boot, 0)
    weights, y, z_d = weights.astype(dtype, copy=False), data.y.astype(dtype), z.astype(dtype)
    z_t = np.ascontiguousarray(z_d.T)
    pairs = np.einsum("rj,rl->rjl", z_d, z_d).reshape(len(z), m * m)
    for _ in range(iters):
        p = _probabilities(theta, coef, data, z_t, dtype)
        resid = p - y
        resid *= weights
        p *= 1.0 - p  # p is now the curvature p (1 - p)
        p *= weights
        curv = p
        g_t = np.stack([resid[:, s].sum(1, dtype=np.float64) for s in slices], 1) + RIDGE * theta
        g_c = (resid @ z_d).astype(np.float64) + COEF_RIDGE * coef
        h_tt = np.stack([curv[:, s].sum(1, dtype=np.float64) for s in slices], 1) + RIDGE  # diagonal (B, K)
        h_tc = np.stack([curv[:, s] @ z_d[s] for s in slices], 1).astype(np.float64)  # (B, K, m)
        h_cc = (curv @ pairs).astype(np.float64).reshape(n_boot, m, m) + COEF_RIDGE * np.eye(m)
        # Schur complement: eliminate the diagonal per-run block, solve the small m x m system per resample.
        scaled = h_tc / h_tt[:, :, None]
        schur = h_cc - np.einsum("bkj,bkl->bjl", h_tc, scaled)
        rhs = g_c - np.einsum("bkj,bk->bj", scaled, g_t)
        d_c = np.linalg.solve(schur, rhs[:, :, None])[:, :, 0] if m else np.zeros((n_boot, 0))
        d_t = (g_t - np.einsum("bkj,bj->bk", h_tc, d_c)) / h_tt
        big = np.abs(np.concatenate([d_t, d_c], 1)).max(1, keepdims=True)
        shrink = np.minimum(1.0, 5.0 / np.maximum(big, 1e-12))  # damp wild first steps on separable data
        theta -= d_t * shrink
        coef -= d_c * shrink
        decrement = (d_t * g_t).sum(1) + (d_c * g_c).sum(1)
        if float(big.max()) < tol or (decrement_tol is not None and float(decrement.max()) < decrement_tol):
            return theta, coef, True
    return theta, coef, False


def bootstrap_counts(n_prompts: int, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """(B, n_prompts) multiplicities of each prompt in each resample (sampling prompts with replacement)."""
    draws = rng.integers(0, n_prompts, size=(n_boot, n_prompts))
    offsets = (np.arange(n_boot) * n_prompts)[:, None]
    return np.bincount((draws + offsets).ravel(), minlength=n_boot * n_prompts).reshape(n_boot, n_prompts)


def _quantiles(boot: np.ndarray, level: float) -> np.ndarray:
    alpha = (1.0 - level) / 2.0
    return np.quantile(boot, [alpha, 1.0 - alpha], axis=0).T


def fit_joint(data: JointData, kind: str = "lc", *, counts: np.ndarray, level: float = CI_LEVEL,
              difficulty: float | str | None = None) -> JointFit:
    """The full-data fit and its bootstrap over the given prompt `counts` (B, n_prompts). `difficulty`: a
    per-prompt offset (eval/joint_difficulty.py) with this L2 penalty, or "auto" to estimate the penalty from the
    data; None fits without one."""
    if difficulty is not None:
        return _fit_with_difficulty(data, kind, counts, level, difficulty)
    z, names, scales = design(data, kind)
    ones = np.ones((1, len(data.y)))
    theta, coef, converged = newton_batched(ones, data, z)
    boot_theta, boot_coef = [], []
    per_chunk = max(1, _CHUNK_ROWS // max(1, len(data.y)))
    for start in range(0, counts.shape[0], per_chunk):
        weights = counts[start:start + per_chunk][:, data.prompt_idx].astype(np.float32)
        t, c, ok = newton_batched(weights, data, z, start=(theta[0], coef[0]), decrement_tol=BOOT_DECREMENT,
                                  dtype=np.float32)
        boot_theta.append(t), boot_coef.append(c)
        converged = converged and ok
    boot_theta, boot_coef = np.concatenate(boot_theta), np.concatenate(boot_coef)
    return _joint_fit(kind, data, 100.0 * _sigmoid(theta[0]), 100.0 * _sigmoid(boot_theta), coef[0], boot_coef,
                      names, scales, converged, level)


def _joint_fit(kind, data, strength, boot, coef, boot_coef, names, scales, converged, level) -> JointFit:
    coef_ci = _quantiles(boot_coef, level)
    coefficients = [Coefficient(name, float(coef[j]), float(coef_ci[j, 0]), float(coef_ci[j, 1]), scales[j])
                    for j, name in enumerate(names)]
    return JointFit(kind, list(data.runs), strength, _quantiles(boot, level), coefficients, converged, boot)


def _fit_with_difficulty(data: JointData, kind: str, counts: np.ndarray, level: float,
                         lam: float | str) -> JointFit:
    from rualign.eval.joint_difficulty import estimate_penalty, marginal_strength, newton_difficulty

    z, names, scales = design(data, kind)
    if lam == "auto":  # estimated once on the full data; the resamples refit at that penalty
        lam, theta, b, coef, converged = estimate_penalty(data, z)
    else:
        theta, b, coef, converged = newton_difficulty(np.ones((1, len(data.y))), data, z, lam=float(lam))
    strength = marginal_strength(theta, b, np.ones((1, len(data.prompts))))[0]
    boots, boot_coefs = [], []
    # (B, K + m, P) work arrays: bound them, as _CHUNK_ROWS bounds the (B, R) ones
    per_chunk = max(1, min(_CHUNK_ROWS // max(1, len(data.y)),
                           _CHUNK_ROWS // max(1, (len(data.runs) + z.shape[1]) * len(data.prompts))))
    for start in range(0, counts.shape[0], per_chunk):
        chunk = counts[start:start + per_chunk].astype(float)
        t, bb, c, ok = newton_difficulty(chunk[:, data.prompt_idx], data, z, lam=lam, start=(theta[0], b[0], coef[0]),
                                         decrement_tol=BOOT_DECREMENT)
        boots.append(marginal_strength(t, bb, chunk)), boot_coefs.append(c)
        converged = converged and ok
    fit = _joint_fit(kind, data, strength, np.concatenate(boots), coef[0], np.concatenate(boot_coefs), names,
                     scales, converged, level)
    fit.prompt_penalty = float(lam)
    return fit


def raw_scores(data: JointData, counts: np.ndarray, level: float = CI_LEVEL) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Raw score per run (mean over prompts of the mean of its orders, x100), CI on the same resamples, n."""
    n_runs, n_prompts = len(data.runs), len(data.prompts)
    sums = np.zeros((n_prompts, n_runs))
    calls = np.zeros((n_prompts, n_runs))
    np.add.at(sums, (data.prompt_idx, data.run_idx), data.y)
    np.add.at(calls, (data.prompt_idx, data.run_idx), 1.0)
    judged = (calls > 0).astype(float)
    values = np.divide(sums, calls, out=np.zeros_like(sums), where=calls > 0)
    score = 100.0 * values.sum(0) / np.maximum(judged.sum(0), 1)
    boot = 100.0 * (counts @ values) / np.maximum(counts @ judged, 1)
    return score, _quantiles(boot, level), judged.sum(0).astype(int)
