"""Near-duplicate detection with MinHash + LSH banding (numpy, deterministic across processes)."""

from __future__ import annotations

import zlib

import numpy as np

_PRIME = (1 << 61) - 1
_MAX = (1 << 32) - 1


def _shingles(text: str, width: int) -> np.ndarray:
    words = text.split()
    if len(words) < width:
        grams = [" ".join(words)] if words else [""]
    else:
        grams = [" ".join(words[i:i + width]) for i in range(len(words) - width + 1)]
    # crc32 rather than hash(): Python's str hash changes between processes
    return np.fromiter((zlib.crc32(g.encode("utf-8")) for g in set(grams)), dtype=np.uint64)


def signatures(texts: list[str], num_perm: int, shingle_words: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    # a, b < 2^31 and shingles < 2^32 keep a*x + b below 2^64: exact modular arithmetic in uint64
    a = rng.integers(1, 1 << 31, size=num_perm, dtype=np.uint64)
    b = rng.integers(0, 1 << 31, size=num_perm, dtype=np.uint64)
    out = np.empty((len(texts), num_perm), dtype=np.uint64)
    for row, text in enumerate(texts):
        shingles = _shingles(text, shingle_words)
        hashed = (shingles[:, None] * a[None, :] + b[None, :]) % np.uint64(_PRIME)
        out[row] = (hashed & np.uint64(_MAX)).min(axis=0)
    return out


def _bands_for(threshold: float, num_perm: int) -> tuple[int, int]:
    """Pick bands x rows (bands*rows = num_perm) whose S-curve threshold (1/b)^(1/r) is closest."""
    best = (num_perm, 1)
    best_err = float("inf")
    for rows in range(1, num_perm + 1):
        if num_perm % rows:
            continue
        bands = num_perm // rows
        err = abs((1 / bands) ** (1 / rows) - threshold)
        if err < best_err:
            best, best_err = (bands, rows), err
    return best


def near_duplicates(texts: list[str], *, threshold: float = 0.8, num_perm: int = 64, shingle_words: int = 5,
                    seed: int = 0) -> list[int | None]:
    """For each text, the index of an earlier near-duplicate (estimated Jaccard >= threshold), else None."""
    if not texts:
        return []
    sigs = signatures(texts, num_perm, shingle_words, seed)
    bands, rows = _bands_for(threshold, num_perm)
    buckets: dict[tuple[int, bytes], list[int]] = {}
    duplicate_of: list[int | None] = [None] * len(texts)
    for index in range(len(texts)):
        candidates: set[int] = set()
        keys = [(band, sigs[index, band * rows:(band + 1) * rows].tobytes()) for band in range(bands)]
        for key in keys:
            candidates.update(buckets.get(key, ()))
        match = None
        for other in sorted(candidates):
            if float(np.mean(sigs[index] == sigs[other])) >= threshold:
                match = other
                break
        if match is not None:
            duplicate_of[index] = match
            continue  # duplicates are not indexed: later rows compare with the kept originals
        for key in keys:
            buckets.setdefault(key, []).append(index)
    return duplicate_of
