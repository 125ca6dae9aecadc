"""`rualign data`: run a recipe — read sources, normalise, filter, sample, mix, split, write.

For every source, rows_in = kept + sum(removed) + quarantined; every removed or quarantined row is in
rejected.jsonl with its reason. The train/val split hashes the prompt, so adding rows never moves old
rows between splits.
"""

from __future__ import annotations

import hashlib
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from rualign.data import filters as F
from rualign.data.schema import Recipe, Source
from rualign.data.formats import RowError, check_columns, normalise
from rualign.data.sources import RawRow, answers_of, bundled_path, prompt_of, read_rows
from rualign.data.tokens import count_tokens, length_stats
from rualign.errors import DataError
from rualign.paths import out_folder, refuse_overlap
from rualign.progress import progress
from rualign.runs import MANIFEST, file_hash, files_record, is_finished, read_manifest, stable_hash, write_jsonl, write_manifest


@dataclass
class SourceResult:
    source: Source
    rows_in: int = 0
    quarantined: int = 0
    removed: dict[str, int] = field(default_factory=dict)
    kept: list[dict] = field(default_factory=list)
    sampled: list[dict] = field(default_factory=list)
    rejected: list[dict] = field(default_factory=list)
    window: dict = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    def summary(self, input_hash: str) -> dict:
        return {
            "format": self.source.format, "path": self.source.path, "split": self.source.split,
            "input_hash": input_hash, "rows_in": self.rows_in, "quarantined": self.quarantined,
            "removed": self.removed, "kept": len(self.kept), "sampled": len(self.sampled),
            "answer_tokens": length_stats([r["answer_tokens"] for r in self.sampled]),
            "answer_tokens_before_sampling": length_stats([r["answer_tokens"] for r in self.kept]),
            "chosen_window": self.window or None, "warnings": self.warnings,
        }


def _input_hash(source: Source) -> str:
    if source.path.startswith("hf:"):
        return "hub:" + source.path[3:] + ":" + source.split
    path = bundled_path(source.path.split(":", 1)[1], source.split) if source.path.startswith(
        "bundled:") else Path(source.path)
    if not path.exists():
        raise DataError("data path does not exist", path=path,
                        expected="a .jsonl/.json/.parquet file, a save_to_disk folder, hf:<id> or bundled:<name>")
    return file_hash(path)


def _record_id(source: str, record: dict, taken: set[str], index: int) -> str:
    digest = stable_hash([prompt_of(record), answers_of(record)], length=10)
    rid = f"{source}-{digest}"
    if rid in taken:  # identical rows kept on purpose (no dedup): still unique ids
        rid = f"{rid}-{index}"
    taken.add(rid)
    return rid


def _load(source: Source, on_error: str, result: SourceResult) -> list[dict]:
    """Read and normalise every row; bad rows raise (naming file and line) or are quarantined."""
    unreadable: list[tuple[RawRow, str]] = []
    errors: list[tuple[RawRow, str]] = []
    records: list[dict] = []
    taken: set[str] = set()
    checked = False
    for raw in read_rows(source.path, source.split, on_error, unreadable):
        result.rows_in += 1
        if not checked and on_error == "fail":
            check_columns(source.format, raw.data, source.path, raw.line)
            checked = True
        try:
            if not isinstance(raw.data, dict):
                raise RowError(f"row is a {type(raw.data).__name__}, not an object")
            record = normalise(source.format, raw.data)
        except RowError as exc:
            if on_error == "fail":
                raise DataError(f"row {raw.index}: {exc}", path=source.path, line=raw.line,
                                hint="fix the row, or set on_error: quarantine to set such rows aside") from exc
            errors.append((raw, str(exc)))
            continue
        record["id"] = _record_id(source.name, record, taken, raw.index)
        record["source"] = source.name
        record["_row"], record["_line"], record["_file"] = raw.index, raw.line, source.path
        records.append(record)
    result.rows_in += len(unreadable)  # malformed lines never reach the loop above
    errors = unreadable + errors
    for raw, reason in errors:
        result.quarantined += 1
        result.rejected.append({"source": source.name, "file": source.path, "row": raw.index, "line": raw.line,
                                "filter": "quarantine", "reason": reason})
    if result.rows_in == 0:
        raise DataError(f"source '{source.name}' has no rows", path=source.path)
    if not records:
        reasons = [reason for _, reason in errors]
        common = max(set(reasons), key=reasons.count)
        raise DataError(f"every row of source '{source.name}' is unusable; most common reason: {common} "
                        f"({reasons.count(common)} of {len(reasons)})", path=source.path,
                        expected=f"rows in format '{source.format}'")
    return records


def _count_answer_tokens(records: list[dict], tokenizer: str) -> None:
    todo = [r for r in records if "answer_tokens" not in r]
    if not todo:
        return
    if tokenizer == "column":  # the dataset's own counts (GrandMaster: tiktoken gpt-4-turbo)
        for record in todo:
            value = record["meta"].get("answer_tokens")
            if not isinstance(value, int):
                raise DataError(f"tokenizer: column needs an integer answer_tokens column (row {record['_row']} has "
                                f"{value!r})", path=record["_file"], line=record["_line"])
            record["answer_tokens"] = value
        return
    spans = [answers_of(r) for r in todo]
    flat = [text for texts in spans for text in texts]
    counts = count_tokens(flat, tokenizer)
    position = 0
    for record, texts in zip(todo, spans):
        record["answer_tokens"] = int(counts[position:position + len(texts)].sum())
        position += len(texts)
    preference = [r for r in todo if r["kind"] == "preference"]
    if preference:
        rejected = count_tokens([r["rejected"][0]["content"] for r in preference], tokenizer)
        for record, value in zip(preference, rejected):
            record["rejected_tokens"] = int(value)


def _filter(source: Source, records: list[dict], result: SourceResult, recipe: Recipe,
            seen: dict[str, str]) -> list[dict]:
    for name, apply, needs_tokens in F.plan(source.filters, recipe.seed, seen, result.window):
        if needs_tokens:
            _count_answer_tokens(records, recipe.tokenizer)
        before = len(records)
        try:
            reasons = apply(records)
        except ValueError as exc:  # e.g. no window reaches the target mean
            raise DataError(f"filter '{name}' of source '{source.name}': {exc}", path=source.path) from exc
        survivors = []
        for record, reason in zip(records, reasons):
            if reason is None:
                survivors.append(record)
            else:
                result.rejected.append({"source": source.name, "file": source.path, "row": record["_row"],
                                        "line": record["_line"], "id": record["id"], "filter": name,
                                        "reason": reason})
        result.removed[name] = before - len(survivors)
        if before and not survivors:
            raise DataError(f"filter '{name}' removed all {before} remaining rows of source '{source.name}'",
                            path=source.path, hint="loosen that filter or check the data")
        records = survivors
    _count_answer_tokens(records, recipe.tokenizer)
    return records


def _sample_size(source: Source, available: int, results: dict[str, SourceResult], recipe: Recipe,
                 warnings: list[str]) -> int:
    wanted = available
    if source.sample is not None:
        if source.sample.fraction is not None:
            wanted = int(round(source.sample.fraction * available))
        elif source.sample.count is not None:
            wanted = source.sample.count
        else:
            wanted = len(results[source.sample.match].sampled)
    if source.weight is not None and recipe.total is not None:
        total_weight = sum(s.weight or 0 for s in recipe.sources)
        wanted = min(wanted, int(round(recipe.total * source.weight / total_weight)))
    if wanted > available:
        warnings.append(f"asked for {wanted} rows, only {available} available after filters: took all")
        wanted = available
    return wanted


def _sample(records: list[dict], size: int, seed: int, name: str) -> list[dict]:
    if size >= len(records):
        return list(records)
    rng = np.random.default_rng([seed, zlib.crc32(name.encode())])
    chosen = np.sort(rng.permutation(len(records))[:size])
    return [records[i] for i in chosen]


def shuffle_answers(rows: list[dict], seed: int) -> list[dict]:
    """The control recipe: record i gets the last assistant turn (and its token count) of the next record in
    a seeded permutation, a cycle, so no record keeps its own answer while the answers' texts, lengths and
    language stay exactly those of the real data. Only the prompt-answer fit is broken. answer_tokens moves
    with the answer (exact for single-turn records; for multi-turn ones it is the donor's total)."""
    if len(rows) < 2:
        return list(rows)
    perm = np.random.default_rng([seed, 1]).permutation(len(rows))
    out = [dict(r) for r in rows]
    for i, j in zip(perm, np.roll(perm, -1)):
        messages = [dict(m) for m in rows[i]["messages"]]
        cut = max(k for k, m in enumerate(messages) if m["role"] == "assistant")
        donor = rows[j]["messages"]
        messages[cut] = {**messages[cut], "content": donor[max(k for k, m in enumerate(donor)
                                                               if m["role"] == "assistant")]["content"]}
        out[i]["messages"] = messages
        out[i]["answer_tokens"] = rows[j]["answer_tokens"]
    return out


def split_of(record: dict, val_fraction: float) -> str:
    """Stable split: a hash of the normalised prompt, independent of every other row."""
    prompt = " ".join(F.normalise_text(m["content"]) for m in prompt_of(record))
    bucket = int.from_bytes(hashlib.sha256(prompt.encode("utf-8")).digest()[:8], "big") / 2 ** 64
    return "val" if bucket < val_fraction else "train"


_FIRST_KEYS = ("id", "source", "kind")


def _public(record: dict) -> dict:
    """The written record: id/source/kind first (readable files), private _row/_line dropped."""
    ordered = {k: record[k] for k in _FIRST_KEYS}
    ordered.update((k, v) for k, v in record.items() if k not in _FIRST_KEYS and not k.startswith("_"))
    return ordered


DATA_FILES = ("train.jsonl", "val.jsonl", "rejected.jsonl", MANIFEST)


def config_hash(recipe: Recipe) -> str:
    inputs = {s.name: _input_hash(s) for s in recipe.sources}
    # `control` only enters the hash when set: recipes without it keep the hashes they always had.
    dumped = recipe.model_dump(mode="json", exclude=None if recipe.control else {"control"})
    return stable_hash({"recipe": dumped, "inputs": inputs, "version": 1})


def run_recipe(recipe: Recipe, out_dir: str | Path | None, *, dry_run: bool = False, force: bool = False) -> dict:
    """Execute a recipe; returns the manifest (also for a cached or dry run)."""
    started = time.time()
    if out_dir is not None and not dry_run:  # checked before any work: outputs never replace inputs
        out_folder(out_dir)
        refuse_overlap([s.path for s in recipe.sources], files=[Path(out_dir) / n for n in DATA_FILES])
    chash = config_hash(recipe)
    if out_dir is not None and not dry_run and not force and is_finished(out_dir, chash):
        return {**read_manifest(out_dir).dump(), "cached": True}
    results: dict[str, SourceResult] = {}
    seen: dict[str, str] = {}
    with progress() as bar:
        task = bar.add_task("data recipe", total=len(recipe.sources))
        for source in recipe.source_order():
            bar.update(task, description=f"source {source.name}")
            result = SourceResult(source)
            records = _load(source, source.on_error or recipe.on_error, result)
            result.kept = _filter(source, records, result, recipe, seen)
            size = _sample_size(source, len(result.kept), results, recipe, result.warnings)
            result.sampled = _sample(result.kept, size, recipe.seed, source.name)
            results[source.name] = result
            bar.advance(task)
    rows = [r for s in recipe.sources for r in results[s.name].sampled]
    if recipe.control == "shuffle_answers":
        rows = shuffle_answers(rows, recipe.seed)
    order = np.random.default_rng(recipe.seed).permutation(len(rows))
    train, val = [], []
    for index in order:
        record = rows[index]
        (val if split_of(record, recipe.val_fraction) == "val" else train).append(_public(record))
    manifest = {
        "kind": recipe.kind, "recipe": recipe.model_dump(mode="json"), "tokenizer": recipe.tokenizer,
        "counts": {"train": len(train), "val": len(val), "total": len(rows),
                   "rejected": sum(len(r.rejected) for r in results.values())},
        "sources": {name: r.summary(_input_hash(r.source)) for name, r in results.items()},
        "answer_tokens": length_stats([r["answer_tokens"] for r in rows]),
        "seconds": round(time.time() - started, 2), "dry_run": dry_run,
    }
    _check_counts(manifest)
    if dry_run or out_dir is None:
        return manifest
    out = Path(out_dir)
    # An old manifest must not vouch for files this run is about to replace (a crash midway would mix them).
    (out / MANIFEST).unlink(missing_ok=True)
    write_jsonl(out / "train.jsonl", train)
    write_jsonl(out / "val.jsonl", val)
    write_jsonl(out / "rejected.jsonl", [rej for r in results.values() for rej in r.rejected])
    files = files_record(out, DATA_FILES[:3])  # verified whenever a later stage reads this folder
    return write_manifest(out, stage="data", config_hash=chash, files=files, **manifest).dump()


def _check_counts(manifest: dict) -> None:
    """The invariant users rely on: no row disappears without a count and a reason."""
    for name, source in manifest["sources"].items():
        accounted = source["kept"] + sum(source["removed"].values()) + source["quarantined"]
        if accounted != source["rows_in"]:
            raise AssertionError(f"source {name}: rows_in {source['rows_in']} != accounted {accounted}")
