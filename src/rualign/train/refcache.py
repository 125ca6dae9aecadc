"""Reference log-prob cache: DPO/KTO need the frozen reference model's log-prob of every completion.

They are computed once, before training, and saved on disk under
`$RUALIGN_HOME/refcache/<key>/` (or `$RUALIGN_REFCACHE/<key>/`): a parquet file of the reference
columns + meta.json, keyed by
  - the reference model's content hash (its files),
  - the tokenized dataset's content hash (so tokenizer, chat template, max_length and truncation are in it),
  - the trainer and the arguments that change the numbers (precision, ld_alpha, padding-free, ...).
A rerun of the stage, or a later stage with the same reference and data, reads them back and makes no
reference forward pass. TRL's own `precompute_ref_log_probs` keeps its result in a temporary datasets
cache only, so the trainers below replace its precompute step: on a miss they run TRL's own
`compute_ref_log_probs` batch by batch (same collation as training, so the loss is unchanged), then save.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from trl import DPOTrainer, KTOTrainer

from rualign.errors import RualignError
from rualign.runs import atomic_open, canonical_json, file_hash, rualign_home, stable_hash, write_json

_IDENTITY_MEMO: dict[tuple, str] = {}

# Training arguments that change the reference numbers (those absent from a config are skipped).
_ARG_KEYS = ("max_length", "truncation_mode", "padding_free", "pad_to_multiple_of", "ld_alpha",
             "use_logits_to_keep", "bf16", "fp16", "max_prompt_length", "max_completion_length")


def model_identity(location: str | Path) -> str:
    """Content hash of a model folder's weights + config + tokenizer files, memoised per process."""
    folder = Path(location)
    if not folder.is_dir():
        return stable_hash({"model_id": str(location)})  # an HF id: its name is all we have offline
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.name != "manifest.json")
    stamp = (str(folder.resolve()), tuple((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in files))
    if stamp not in _IDENTITY_MEMO:
        _IDENTITY_MEMO[stamp] = stable_hash({p.name: file_hash(p) for p in files})
    return _IDENTITY_MEMO[stamp]


def dataset_hash(dataset: Any) -> str:
    """Content hash of a (tokenized) datasets.Dataset, independent of Arrow chunking and buffer layout:
    integer list columns (token ids) are hashed as values + lengths, anything else as canonical JSON."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    if getattr(dataset, "_indices", None) is not None:
        dataset = dataset.flatten_indices()
    table = dataset.data.table if hasattr(dataset.data, "table") else dataset.data
    digest = hashlib.sha256(str(len(dataset)).encode())
    for name in sorted(table.column_names):
        column = table.column(name).combine_chunks()
        digest.update(f"|{name}:{column.type}|".encode())
        if pa.types.is_list(column.type) and pa.types.is_integer(column.type.value_type):
            digest.update(np.ascontiguousarray(pc.list_flatten(column).to_numpy(), dtype=np.int64).tobytes())
            digest.update(np.ascontiguousarray(pc.list_value_length(column).to_numpy(zero_copy_only=False),
                                               dtype=np.int64).tobytes())
        else:
            digest.update(canonical_json(column.to_pylist()).encode())
    return digest.hexdigest()[:16]


def default_root() -> Path:
    """$RUALIGN_REFCACHE, else $RUALIGN_HOME/refcache: shared by every run, since keys are content hashes."""
    return Path(os.environ["RUALIGN_REFCACHE"]) if os.environ.get("RUALIGN_REFCACHE") else \
        rualign_home() / "refcache"


class RefCache:
    """One reference model's cached log-probs; `info` (the stage's manifest info) records hits and misses."""

    def __init__(self, *, identity: str, precision: str, root: str | Path | None = None,
                 info: dict | None = None):
        self.identity = identity
        self.precision = precision
        self.root = Path(root) if root is not None else default_root()
        self.info = info if info is not None else {}

    def parts(self, dataset: Any, trainer: str, args: dict) -> dict:
        return {"reference": self.identity, "data": dataset_hash(dataset), "trainer": trainer,
                "precision": self.precision, "args": args, "rows": len(dataset)}

    def key(self, dataset: Any, trainer: str, args: dict) -> str:
        return stable_hash(self.parts(dataset, trainer, args), length=24)

    def load(self, key: str, rows: int, columns: tuple[str, ...]):
        from datasets import Dataset

        folder = self.root / key
        meta_path = folder / "meta.json"
        if not meta_path.exists():
            return None
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        import pyarrow.parquet as pq

        # Read with pyarrow, not Dataset.from_parquet, which would copy it into the HF datasets cache.
        cached = Dataset.from_dict(pq.read_table(folder / "ref_logps.parquet").to_pydict())
        if len(cached) != rows or meta.get("rows") != rows or not set(columns) <= set(cached.column_names):
            raise RualignError("reference log-prob cache entry does not match its data (rows or columns)",
                               path=folder, hint="delete this folder; it is recomputed on the next run")
        return cached.select_columns(list(columns))

    def save(self, key: str, columns: dict[str, list[float]], meta: dict) -> Path:
        import pyarrow as pa
        import pyarrow.parquet as pq

        folder = self.root / key
        folder.mkdir(parents=True, exist_ok=True)
        with atomic_open(folder / "ref_logps.parquet", "wb") as handle:
            pq.write_table(pa.table(columns), handle)
        write_json(folder / "meta.json", meta)  # written last: its presence marks the entry complete
        return folder


class RefCacheMixin:
    """Replaces TRL's `_precompute_ref_logps` with a disk-cached one; counts reference forward batches."""

    _ref_columns: tuple[str, ...] = ()
    _trl_name = ""

    def __init__(self, *args: Any, ref_cache: RefCache | None = None, **kwargs: Any):
        self.ref_cache = ref_cache
        self.ref_forward_batches = 0
        super().__init__(*args, **kwargs)

    def compute_ref_log_probs(self, model, inputs):
        self.ref_forward_batches += 1
        return super().compute_ref_log_probs(model, inputs)

    def _ref_key_args(self) -> dict:
        args = {k: getattr(self.args, k) for k in _ARG_KEYS if hasattr(self.args, k)}
        args["calculate_KL"] = getattr(self, "calculate_KL", None)
        return args

    def _precompute_ref_logps(self, dataset, name: str, batch_size: int):
        from datasets import Dataset, concatenate_datasets

        if self.ref_cache is None:
            return super()._precompute_ref_logps(dataset, name, batch_size)
        cache, trainer = self.ref_cache, self._trl_name
        key = cache.key(dataset, trainer, self._ref_key_args())
        record = cache.info.setdefault("ref_cache", {})
        columns = self._ref_columns if getattr(self, "calculate_KL", True) else self._ref_columns[:1]
        cached = cache.load(key, len(dataset), columns)
        if cached is None:
            before = self.ref_forward_batches
            values = self._compute_ref_columns(dataset, batch_size, columns)
            if self.accelerator.is_main_process:
                cache.save(key, values, {"key": key, "rows": len(dataset), "trainer": trainer,
                                         "reference": cache.identity, "split": name, "columns": list(columns)})
            cached = Dataset.from_dict(values)
            record[name] = {"key": key, "hit": False, "forward_batches": self.ref_forward_batches - before}
        else:
            record[name] = {"key": key, "hit": True, "forward_batches": 0}
        self.accelerator.wait_for_everyone()
        return concatenate_datasets([dataset, cached], axis=1)

    def _compute_ref_columns(self, dataset, batch_size: int, columns: tuple[str, ...]) -> dict[str, list]:
        """TRL's precompute loop (same collator and reference forward as training), without its temp cache."""
        import torch
        from torch.utils.data import DataLoader

        loader = self.accelerator.prepare(DataLoader(dataset, batch_size=batch_size, collate_fn=self.data_collator,
                                                     num_workers=0, shuffle=False))
        if self.ref_model is None and self.is_deepspeed_enabled:
            raise RualignError("the on-disk reference cache does not support DeepSpeed without a ref_model",
                               hint="set ref_cache: false for this stage")
        model = self.ref_model or self.model
        parts: list[list] = [[] for _ in columns]
        for batch in loader:
            out = self.compute_ref_log_probs(model, batch)
            gathered = self.accelerator.gather_for_metrics(tuple(out[: len(columns)]))
            for part, tensor in zip(parts, gathered):
                part.append(tensor.float().cpu())
        return {c: torch.cat(p).tolist() for c, p in zip(columns, parts)}


class CachedDPOTrainer(RefCacheMixin, DPOTrainer):
    _ref_columns = ("ref_chosen_logps", "ref_rejected_logps")
    _trl_name = "DPOTrainer"


class CachedKTOTrainer(RefCacheMixin, KTOTrainer):
    _ref_columns = ("ref_logps", "ref_KL_logps")
    _trl_name = "KTOTrainer"
