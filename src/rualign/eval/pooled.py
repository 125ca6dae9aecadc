"""The pooled score of one model judged against several references (the study's final evaluation used four).

Definition (README, "Can I trust this score?"): let v_ir be prompt i's value against reference r (score.json
per_prompt: the mean of its judged orders, 0..1; failures have none). Then

    pooled = 100 * mean of v_ir over every (prompt, reference) pair that has a value

i.e. the mean preference over all (prompt, reference) judgments; with no failures it is the mean of the
per-reference scores. Its CI is a percentile bootstrap over PROMPTS: a resampled prompt brings its values
against every reference with it, so the CI accounts for the references sharing the same prompts (a
bootstrap over (prompt, reference) pairs would treat them as independent and come out too narrow).

    pooled_b = sum_i c_bi * S_i / sum_i c_bi * N_i      S_i = sum_r v_ir, N_i = number of r with a value

where c_bi is how often prompt i was drawn in resample b.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from pydantic import Field

from rualign.errors import DataError
from rualign.records import Count, Part, Points, Record, Score

N_BOOT = 2000
CI_LEVEL = 0.95
DEFINITION = ("100 x mean preference over all (prompt, reference) pairs with a value; 95% percentile bootstrap "
              "over prompts, each resampled prompt keeping its values against every reference")


class ReferenceScore(Part):
    name: str
    score: Points | None = None
    ci_low: Points | None = None
    ci_high: Points | None = None
    n: Count = 0


class PooledScore(Record):
    """pooled.json of a run folder judged against several references."""

    score: Points | None = Field(None, description="pooled over references, 0..100")
    ci_low: Points | None = None
    ci_high: Points | None = None
    ci_level: float = CI_LEVEL
    n_prompts: Count = Field(0, description="prompts with a value against at least one reference")
    n_pairs: Count = Field(0, description="(prompt, reference) pairs with a value")
    references: list[ReferenceScore] = Field(default_factory=list, description="each reference's own score")
    definition: str = DEFINITION
    n_boot: int = N_BOOT
    seed: int = 0


def value_table(scores: dict[str, Score]) -> tuple[list[str], np.ndarray]:
    """(prompt ids, (prompts, references) values with NaN where a prompt has no value against a reference)."""
    ids: list[str] = []
    seen: set[str] = set()
    for score in scores.values():
        for entry in score.per_prompt:
            if entry.id not in seen:
                seen.add(entry.id)
                ids.append(entry.id)
    row = {pid: i for i, pid in enumerate(ids)}
    table = np.full((len(ids), len(scores)), np.nan)
    for j, score in enumerate(scores.values()):
        for entry in score.per_prompt:
            if entry.value is not None:
                table[row[entry.id], j] = entry.value
    return ids, table


def pooled_score(scores: dict[str, Score], *, seed: int = 0, n_boot: int = N_BOOT) -> PooledScore:
    """The pooled score over the references in `scores` ({reference name: its Score})."""
    if len(scores) < 2:
        raise DataError(f"a pooled score needs at least two references, got {len(scores)}")
    _, table = value_table(scores)
    has = ~np.isnan(table)
    sums, counts = np.where(has, table, 0.0).sum(1), has.sum(1).astype(float)
    keep = counts > 0
    sums, counts = sums[keep], counts[keep]
    refs = [ReferenceScore(name=name, score=s.score, ci_low=s.ci_low, ci_high=s.ci_high, n=s.n)
            for name, s in scores.items()]
    if not keep.any():
        return PooledScore(references=refs, n_boot=n_boot, seed=seed)
    value = float(sums.sum() / counts.sum())
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, len(sums), size=(n_boot, len(sums)))
    boot = sums[draws].sum(1) / counts[draws].sum(1)
    alpha = (1.0 - CI_LEVEL) / 2.0
    low, high = np.quantile(boot, [alpha, 1.0 - alpha])
    # Rounded like score.json; the clamp keeps low <= score <= high after rounding.
    point = round(100.0 * value, 2)
    return PooledScore(score=point, ci_low=min(point, round(100.0 * float(low), 2)),
                       ci_high=max(point, round(100.0 * float(high), 2)), n_prompts=int(keep.sum()),
                       n_pairs=int(counts.sum()), references=refs, n_boot=n_boot, seed=seed)


def write_pooled(path: Path, pooled: PooledScore) -> None:
    from rualign.runs import write_json

    write_json(path, pooled.dump())


def read_pooled(path: Path) -> PooledScore:
    from rualign.records import validated
    from rualign.textio import read_json

    expected = "pooled.json of docs/formats.md"
    return validated(PooledScore, read_json(Path(path), expected=expected), path=Path(path), what="pooled.json",
                     expected=expected)
