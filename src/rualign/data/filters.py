"""Row filters. Each is pure: it takes the surviving records and returns, per record, None (keep) or the
reason it is removed. The recipe applies them in `FILTER_ORDER` (cheap ones first, token counting late,
so fewer answers get tokenised) and counts removals per filter.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Callable

import numpy as np

from rualign.data.minhash import near_duplicates
from rualign.data.schema import Filters, TokenWindow
from rualign.data.sources import all_texts, answers_of, prompt_of

Reasons = list[str | None]

_CYRILLIC = re.compile(r"[\u0400-\u04FF]")
_LETTER = re.compile(r"[^\W\d_]")
_SPACES = re.compile(r"\s+")


def bad_by_regex(records: list[dict], enabled: bool) -> Reasons:
    if not enabled:
        return [None] * len(records)
    return ["is_bad_by_regex is true" if r["meta"].get("is_bad_by_regex") is True else None for r in records]


def min_score(records: list[dict], threshold: int) -> Reasons:
    reasons: Reasons = []
    for record in records:
        score = record["meta"].get("opus_score")
        if score is None:
            reasons.append("no opus_score to compare with min_score")
        elif score < threshold:
            reasons.append(f"opus_score {score} < {threshold}")
        else:
            reasons.append(None)
    return reasons


def blacklist(records: list[dict], patterns: list[str]) -> Reasons:
    if not patterns:
        return [None] * len(records)
    # Each pattern on its own (any-of): joining with `|` can fail to compile (an inline flag not at the
    # start) or change a pattern's meaning (back-references renumber).
    compiled = [re.compile(p, re.IGNORECASE) for p in patterns]
    reasons: Reasons = []
    for record in records:
        match = next((m for m in (c.search(a) for a in answers_of(record) for c in compiled) if m), None)
        reasons.append(f"answer matches blacklist: {match.group(0)[:60]!r}" if match else None)
    return reasons


def cyrillic_share(text: str) -> float:
    letters = len(_LETTER.findall(text))
    return len(_CYRILLIC.findall(text)) / letters if letters else 0.0


def min_cyrillic(records: list[dict], threshold: float) -> Reasons:
    reasons: Reasons = []
    for record in records:
        share = cyrillic_share(" ".join(answers_of(record)))
        reasons.append(f"Cyrillic share {share:.2f} < {threshold}" if share < threshold else None)
    return reasons


def max_message_chars(records: list[dict], limit: int) -> Reasons:
    reasons: Reasons = []
    for record in records:
        longest = max(len(t) for t in all_texts(record))
        reasons.append(f"a message has {longest} characters > {limit}" if longest > limit else None)
    return reasons


def normalise_text(text: str) -> str:
    return _SPACES.sub(" ", unicodedata.normalize("NFKC", text).casefold()).strip()


def dedup_key(record: dict) -> str:
    prompt = " ".join(m["content"] for m in prompt_of(record))
    return normalise_text(prompt) + "\x00" + normalise_text(" ".join(answers_of(record)))


def exact_dedup(records: list[dict], seen: dict[str, str]) -> Reasons:
    """Keep the first of identical (normalised prompt + answer) rows; `seen` spans sources of a recipe."""
    reasons: Reasons = []
    for record in records:
        key = dedup_key(record)
        if key in seen:
            reasons.append(f"exact duplicate of {seen[key]}")
        else:
            seen[key] = record["id"]
            reasons.append(None)
    return reasons


def near_dedup(records: list[dict], threshold: float, num_perm: int, shingle_words: int, seed: int) -> Reasons:
    texts = [dedup_key(r).replace("\x00", " ") for r in records]
    duplicate_of = near_duplicates(texts, threshold=threshold, num_perm=num_perm,
                                   shingle_words=shingle_words, seed=seed)
    return [None if d is None else f"near duplicate of {records[d]['id']}" for d in duplicate_of]


def choose_target_window(lengths: np.ndarray, window: TokenWindow) -> tuple[int, int, dict]:
    """Narrowest [lo, hi] whose rows have mean within `tolerance` of `target_mean` and >= min_rows rows.

    Among windows of k consecutive sorted lengths the narrowest one is also the narrowest of all windows
    with >= k rows, so one pass over the k-windows (prefix sums) finds it.
    """
    target, tolerance = float(window.target_mean), window.tolerance
    ordered = np.sort(lengths)
    n = ordered.size
    k = window.min_rows or max(1, n // 4)
    if n < k:
        raise ValueError(f"only {n} rows, fewer than min_rows={k}")
    sums = np.concatenate([[0.0], np.cumsum(ordered, dtype=np.float64)])
    starts = np.arange(0, n - k + 1)
    means = (sums[starts + k] - sums[starts]) / k
    widths = ordered[starts + k - 1] - ordered[starts]
    ok = np.abs(means - target) <= tolerance
    if not ok.any():
        closest = float(means[np.argmin(np.abs(means - target))])
        raise ValueError(f"no window of >= {k} rows has mean within {tolerance} of {target} "
                         f"(closest mean {closest:.1f}); lower min_rows or widen tolerance")
    best = int(starts[ok][np.argmin(widths[ok])])
    lo, hi = int(ordered[best]), int(ordered[best + k - 1])
    inside = ordered[(ordered >= lo) & (ordered <= hi)]
    return lo, hi, {"min": lo, "max": hi, "rows": int(inside.size), "mean": round(float(inside.mean()), 2),
                    "target_mean": target, "tolerance": tolerance, "min_rows": k}


def answer_tokens(records: list[dict], window: TokenWindow, chosen: dict) -> Reasons:
    """Fixed window or one chosen around a target mean (recorded into `chosen`)."""
    lengths = np.array([r["answer_tokens"] for r in records], dtype=np.int64)
    lo, hi = window.min, window.max
    if window.target_mean is not None:
        lo, hi, info = choose_target_window(lengths, window)
        chosen.update(info)
    reasons: Reasons = []
    for length in lengths:
        if lo is not None and length < lo:
            reasons.append(f"answer_tokens {length} < {lo}")
        elif hi is not None and length > hi:
            reasons.append(f"answer_tokens {length} > {hi}")
        else:
            reasons.append(None)
    return reasons


def length_ratio(records: list[dict], limit: float) -> Reasons:
    reasons: Reasons = []
    for record in records:
        rejected = max(1, record.get("rejected_tokens", 1))
        ratio = record["answer_tokens"] / rejected
        reasons.append(f"chosen/rejected length ratio {ratio:.2f} > {limit}" if ratio > limit else None)
    return reasons


def plan(filters: Filters, seed: int, seen: dict[str, str], chosen_window: dict
         ) -> list[tuple[str, Callable[[list[dict]], Reasons], bool]]:
    """The filters a source runs, in order: (name, function, needs token counts)."""
    steps: list[tuple[str, Callable[[list[dict]], Reasons], bool]] = []
    if filters.drop_bad_by_regex:
        steps.append(("drop_bad_by_regex", lambda rs: bad_by_regex(rs, True), False))
    if filters.min_score is not None:
        steps.append(("min_score", lambda rs: min_score(rs, filters.min_score), False))
    if filters.blacklist:
        steps.append(("blacklist", lambda rs: blacklist(rs, filters.blacklist), False))
    if filters.max_message_chars is not None:
        steps.append(("max_message_chars", lambda rs: max_message_chars(rs, filters.max_message_chars), False))
    if filters.min_cyrillic is not None:
        steps.append(("min_cyrillic", lambda rs: min_cyrillic(rs, filters.min_cyrillic), False))
    if filters.dedup:
        steps.append(("dedup", lambda rs: exact_dedup(rs, seen), False))
    if filters.near_dedup is not None:
        nd = filters.near_dedup
        steps.append(("near_dedup", lambda rs: near_dedup(rs, nd.threshold, nd.num_perm, nd.shingle_words, seed),
                      False))
    if filters.answer_tokens is not None:
        steps.append(("answer_tokens", lambda rs: answer_tokens(rs, filters.answer_tokens, chosen_window), True))
    if filters.max_length_ratio is not None:
        steps.append(("max_length_ratio", lambda rs: length_ratio(rs, filters.max_length_ratio), True))
    return steps
