"""Recipe schema (what `rualign data` reads) and the canonical record kinds (what it writes).

Canonical records are plain dicts (fast for 150k-row datasets) whose shape is documented in
docs/formats.md; data/formats.py's FORMATS table says which kind each source format produces.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from rualign.config import Seed, Strict
from rualign.data.formats import FORMATS
from rualign.paths import SafeName

FormatName = Literal[tuple(FORMATS)]  # type: ignore[valid-type]  # the names of the FORMATS table


class TokenWindow(Strict):
    """Answer length in tokens: a fixed window (min/max) or a window chosen around a target mean."""

    min: int | None = Field(None, ge=0)
    max: int | None = Field(None, ge=1)
    target_mean: float | None = Field(None, gt=0, description="choose the narrowest window with this mean")
    tolerance: float = Field(10.0, gt=0, description="allowed |window mean - target_mean| in tokens")
    min_rows: int | None = Field(None, ge=1, description="window keeps at least this many rows "
                                                         "(default: a quarter of the rows it sees)")

    @model_validator(mode="after")
    def _coherent(self) -> "TokenWindow":
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min ({self.min}) is greater than max ({self.max})")
        if self.target_mean is not None and (self.min is not None or self.max is not None):
            raise ValueError("use either min/max or target_mean, not both")
        if self.target_mean is None and self.min is None and self.max is None:
            raise ValueError("set min, max or target_mean")
        return self


class NearDedup(Strict):
    threshold: float = Field(0.8, gt=0, le=1, description="estimated Jaccard similarity to call a duplicate")
    num_perm: int = Field(64, ge=16, le=512)
    shingle_words: int = Field(5, ge=1, le=20)


class Filters(Strict):
    answer_tokens: TokenWindow | None = None
    min_score: int | None = Field(None, ge=1, le=10, description="saiga_scored opus_score >= this")
    drop_bad_by_regex: bool = False
    blacklist: list[str] = Field(default_factory=list, description="regexes; an answer matching any is dropped")
    min_cyrillic: float | None = Field(None, ge=0, le=1, description="share of Cyrillic among letters in answers")
    max_message_chars: int | None = Field(None, ge=1)
    dedup: bool = False
    near_dedup: NearDedup | None = None
    max_length_ratio: float | None = Field(None, gt=0, description="preference pairs: keep when "
                                           "chosen_tokens / rejected_tokens <= this (guards length bias)")

    @field_validator("blacklist")
    @classmethod
    def _compilable(cls, patterns: list[str]) -> list[str]:
        import re

        for pattern in patterns:
            try:
                re.compile(pattern, re.IGNORECASE)  # compiled exactly as filters.blacklist uses it
            except (re.error, OverflowError, RecursionError, ValueError) as exc:
                raise ValueError(f"blacklist regex {pattern!r} does not compile: {exc}") from exc
        return patterns


class Sample(Strict):
    fraction: float | None = Field(None, gt=0, le=1)
    count: int | None = Field(None, ge=1)
    match: str | None = Field(None, description="as many rows as this other source keeps")

    @model_validator(mode="after")
    def _exactly_one(self) -> "Sample":
        given = [k for k in ("fraction", "count", "match") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(f"sample needs exactly one of fraction, count, match (got {given or 'none'})")
        return self


class Source(Strict):
    name: SafeName
    format: FormatName
    path: str = Field(description="jsonl, json, parquet, a save_to_disk folder, hf:<id>, or bundled:<name>")
    split: str = "train"
    filters: Filters = Field(default_factory=Filters)
    sample: Sample | None = None
    weight: float | None = Field(None, gt=0, description="mixture weight; needs recipe-level `total`")
    on_error: Literal["fail", "quarantine"] | None = None


class Recipe(Strict):
    seed: Seed = 42
    tokenizer: str = Field("default", description="answer lengths are counted in this tokenizer's tokens")
    val_fraction: float = Field(0.05, ge=0, lt=1)
    total: int | None = Field(None, ge=1, description="rows after mixing, shared out by source weights")
    on_error: Literal["fail", "quarantine"] = "fail"
    sources: list[Source] = Field(min_length=1)
    control: Literal["shuffle_answers"] | None = Field(
        None, description="a deliberately broken control set: shuffle_answers gives every chat record the last "
                          "answer of another record (a seeded derangement), so no answer fits its prompt")

    @model_validator(mode="after")
    def _references(self) -> "Recipe":
        names = [s.name for s in self.sources]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"duplicate source names: {duplicates}")
        for source in self.sources:
            if source.sample and source.sample.match:
                if source.sample.match not in names:
                    raise ValueError(f"source '{source.name}' matches unknown source '{source.sample.match}' "
                                     f"(known: {names})")
                if source.sample.match == source.name:
                    raise ValueError(f"source '{source.name}' cannot match itself")
        weighted = [s.name for s in self.sources if s.weight is not None]
        if weighted and self.total is None:
            raise ValueError(f"sources {weighted} have a mixture weight but the recipe sets no `total`")
        kinds = {FORMATS[s.format].kind for s in self.sources}
        if len(kinds) > 1:
            raise ValueError(f"sources mix record kinds {sorted(kinds)}: one data folder holds one kind "
                             "(make one recipe per kind)")
        self.source_order()  # raises on circular `match`
        if self.control and self.kind != "chat":
            raise ValueError(f"control '{self.control}' needs chat records, not {self.kind}")
        return self

    def source_order(self) -> list[Source]:
        """Sources in an order where every `match` target comes first; cycles are an error."""
        by_name = {s.name: s for s in self.sources}
        ordered: list[Source] = []
        visiting: set[str] = set()

        def visit(source: Source) -> None:
            if source in ordered:
                return
            if source.name in visiting:
                raise ValueError(f"circular sample.match involving source '{source.name}'")
            visiting.add(source.name)
            if source.sample and source.sample.match:
                visit(by_name[source.sample.match])
            visiting.discard(source.name)
            ordered.append(source)

        for source in self.sources:
            visit(source)
        return ordered

    @property
    def kind(self) -> str:
        return FORMATS[self.sources[0].format].kind
