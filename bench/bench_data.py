"""Data recipe throughput: tokenise + filter 156k synthetic GrandMaster-shaped rows.

Answers are Russian word sequences (vocabulary of the bundled samples, Zipf-distributed) whose lengths in
tokens of the default tokenizer are log-normal with mean ~540. Ours: `rualign data` end to end (read,
normalise, count answer tokens, filter 470-610, sample 10%, split, write). Peer: the same recipe with the
exact per-text `encode_batch` token counter (what a hand-written datasets.map + tokenizer script does).
Goal: ours <= 60 s on the 2-core machine.
"""

from __future__ import annotations

import json
import re
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from common import Row, peak_rss_mb

ROWS = 156_000
SAMPLES = Path(__file__).resolve().parent.parent / "src" / "rualign" / "data" / "samples"


def _vocabulary() -> list[str]:
    words: dict[str, int] = {}
    for path in SAMPLES.glob("*.jsonl"):
        for word in re.findall(r"[А-Яа-яЁё]+[,.:;!?]?", path.read_text(encoding="utf-8")):
            words[word] = words.get(word, 0) + 1
    ranked = sorted(words, key=words.get, reverse=True)
    return ranked or ["слово", "ответ", "модель"]


def make_dataset(path: Path, rows: int = ROWS, seed: int = 0) -> None:
    from rualign.data.tokens import count_tokens

    rng = np.random.default_rng(seed)
    vocab = _vocabulary()
    per_word = count_tokens([" " + w for w in vocab])
    zipf = 1.0 / np.arange(1, len(vocab) + 1)
    zipf /= zipf.sum()
    sigma = 0.35
    targets = rng.lognormal(np.log(540) - sigma ** 2 / 2, sigma, size=rows)  # mean 540
    with open(path, "w", encoding="utf-8") as handle:
        for i, target in enumerate(targets):
            mean_tokens = float(per_word @ zipf)
            n_words = max(3, int(target / mean_tokens))
            picks = rng.choice(len(vocab), size=n_words, p=zipf)
            answer = " ".join(vocab[j] for j in picks)
            row = {"conversation": [{"role": "user", "content": f"Вопрос {i}: " + " ".join(vocab[j] for j in picks[:8])},
                                    {"role": "assistant", "content": answer}],
                   "source": "synthetic", "prompt_tokens": 12, "answer_tokens": int(target), "cluster": i % 16,
                   "prompt_lang": "ru", "answer_lang": "ru"}
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")


def _run_recipe(path: Path, out: Path, exact: bool) -> tuple[float, dict]:
    import rualign.data.recipe as recipe_mod
    from rualign.config import validate
    from rualign.data import tokens
    from rualign.data.schema import Recipe

    recipe = validate(Recipe, {"seed": 42, "tokenizer": "default", "val_fraction": 0.05, "sources": [
        {"name": "gm", "format": "grandmaster", "path": str(path),
         "filters": {"answer_tokens": {"min": 470, "max": 610}}, "sample": {"fraction": 0.1}}]}, "bench")
    original = tokens.count_tokens
    if exact:
        recipe_mod.count_tokens = lambda texts, tok="default": original(texts, tok, exact=True)
    try:
        started = time.perf_counter()
        manifest = recipe_mod.run_recipe(recipe, out, force=True)
        return time.perf_counter() - started, manifest
    finally:
        recipe_mod.count_tokens = original


def run() -> list[Row]:
    workdir = Path(tempfile.mkdtemp(prefix="rualign-bench-data-"))
    data = workdir / "grandmaster_156k.jsonl"
    started = time.perf_counter()
    make_dataset(data)
    print(f"generated {ROWS} rows in {time.perf_counter() - started:.0f} s ({data.stat().st_size / 2**20:.0f} MiB)")
    ours, manifest = _run_recipe(data, workdir / "ours", exact=False)
    stats = manifest["sources"]["gm"]
    print(f"ours: {ours:.1f} s, kept {stats['kept']}, sampled {stats['sampled']}, "
          f"mean answer tokens before filter {stats['answer_tokens_before_sampling']['mean']}")
    peer, peer_manifest = _run_recipe(data, workdir / "peer", exact=True)
    assert peer_manifest["sources"]["gm"]["kept"] == stats["kept"], "exact and memoised counts disagree"
    print(f"peer (exact encode_batch): {peer:.1f} s")
    return [
        Row("data", "156k rows: read+tokenise+filter+sample+write, seconds", round(ours, 1), None, "",
            "<= 60 s", ours <= 60, f"{ROWS / ours:,.0f} rows/s", peak_rss_mb()),
        Row("data", "156k rows, rows/s (ours vs exact encode_batch counting)", round(ROWS / ours),
            round(ROWS / peer), "same recipe, exact tokenizer.encode_batch", "-", None,
            f"kept {stats['kept']} rows in 470-610", peak_rss_mb()),
    ]


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    for row in run():
        print(row)
