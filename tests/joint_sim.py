"""Simulated judgments with known coefficients, for the joint-fit tests and bench/bench_leaderboard.py.

A judge prefers the model answer with probability sigmoid(theta_k + delta*order + gamma*tanh(dlen/s) + styles);
answers are synthetic Russian texts whose token counts and markdown are set directly, so the truth is known.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rualign.eval.joint import JointData


@dataclass
class Truth:
    theta: np.ndarray
    gamma: float
    delta: float
    mean_tokens: np.ndarray


def simulate(n_runs: int = 6, n_prompts: int = 400, *, theta=None, mean_tokens=None, gamma: float = 0.8,
             delta: float = 0.3, seed: int = 0, soft: bool = False,
             difficulty_sd: float = 0.0) -> tuple[JointData, Truth]:
    """JointData directly (no files): per-run strength theta, shared length slope gamma and order term delta;
    with difficulty_sd > 0 each prompt adds its own offset b_i ~ N(0, difficulty_sd) to the log-odds."""
    rng = np.random.default_rng(seed)
    theta = rng.normal(0, 0.8, n_runs) if theta is None else np.asarray(theta, float)
    mean_tokens = rng.uniform(100, 800, n_runs) if mean_tokens is None else np.asarray(mean_tokens, float)
    ref_tokens = rng.gamma(4.0, 100.0, n_prompts)
    run, prompt, order, dlen = [], [], [], []
    for k in range(len(theta)):
        tokens = rng.gamma(4.0, mean_tokens[k] / 4.0, n_prompts)
        for o in (1.0, -1.0):
            run.append(np.full(n_prompts, k)), prompt.append(np.arange(n_prompts))
            order.append(np.full(n_prompts, o)), dlen.append(tokens - ref_tokens)
    run, prompt, order, dlen = map(np.concatenate, (run, prompt, order, dlen))
    eta = theta[run] + delta * order + gamma * np.tanh(dlen / dlen.std())
    if difficulty_sd > 0:  # drawn only then, so the simulations without it are unchanged
        eta = eta + rng.normal(0.0, difficulty_sd, n_prompts)[prompt]
    p = 1.0 / (1.0 + np.exp(-eta))
    y = p if soft else (rng.random(p.size) < p).astype(float)
    data = JointData([f"run{k}" for k in range(len(theta))], [f"p{i}" for i in range(n_prompts)], run, prompt, y,
                     order, dlen)
    return data, Truth(theta, gamma, delta, mean_tokens)


_WORDS = ("ответ", "пример", "важно", "данные", "модель", "язык", "текст", "вопрос", "решение", "шаг")


def _text(rng: np.random.Generator, tokens: int, markdown: bool) -> str:
    words = [_WORDS[i] for i in rng.integers(0, len(_WORDS), max(1, tokens))]
    if not markdown:
        return " ".join(words)
    head, rest = words[:3], words[3:]
    items = "\n".join(f"- **{w}**" for w in rest[:4])
    return "## " + " ".join(head) + "\n" + items + "\n" + " ".join(rest[4:])


def write_runs(folder: Path, data: JointData, *, markdown_runs=(), tokenizer: str = "default@sha256:abc",
               reference_tokenizer: str | None = None, seed: int = 0) -> tuple[Path, list[dict]]:
    """answers / judgments / reference files for `data` (token counts from its length differences)."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    ref_tokens = {i: int(rng.integers(150, 500)) for i in range(len(data.prompts))}
    ref_rows = [{"id": pid, "prompt": [{"role": "user", "content": f"Вопрос {pid}"}], "answer": _text(rng, 20, False),
                 "answer_tokens": ref_tokens[i], "tokenizer": reference_tokenizer or tokenizer}
                for i, pid in enumerate(data.prompts)]
    reference = folder / "reference.jsonl"
    _dump(reference, ref_rows)
    runs = []
    for k, name in enumerate(data.runs):
        rows = np.flatnonzero(data.run_idx == k)
        answers, judgments, seen = [], [], set()
        for r in rows:
            i = int(data.prompt_idx[r])
            pid = data.prompts[i]
            if i not in seen:
                seen.add(i)
                tokens = max(1, int(round(ref_tokens[i] + data.length_diff[r])))
                answers.append({"id": pid, "prompt": ref_rows[i]["prompt"], "answer_tokens": tokens,
                                "answer": _text(rng, 20, name in markdown_runs), "tokenizer": tokenizer})
            judgments.append({"id": pid, "order": "model_first" if data.order[r] > 0 else "reference_first",
                              "preference": float(data.y[r]), "error": None, "identical": False})
        _dump(folder / f"{name}.answers.jsonl", answers)
        _dump(folder / f"{name}.judgments.jsonl", judgments)
        runs.append({"name": name, "answers": f"{name}.answers.jsonl", "judgments": f"{name}.judgments.jsonl"})
    return reference, runs


def _dump(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
