"""Tokenizer identity of answer lengths: answers counted in different tokenizers are not comparable.

New answer files record `tokenizer` as "NAME@sha256:HASH" (HASH = content hash of the tokenizer's vocabulary
and merges), so two tokenizers that share a name ("default") but differ in content are told apart. Files
written by older versions or other tools carry only a name (or nothing) and are compared by name.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Iterable

from rualign.errors import DataError

_SEP = "@sha256:"


def identity(name: str, tokenizer: Any) -> str:
    """"NAME@sha256:HASH" for a Hugging Face tokenizer; the hash covers its vocabulary and added tokens."""
    digest = hashlib.sha256()
    vocab = tokenizer.get_vocab() if hasattr(tokenizer, "get_vocab") else {}
    digest.update(json.dumps(sorted(vocab.items()), ensure_ascii=False).encode("utf-8"))
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:  # merges / normalizer / pre-tokenizer: same vocab, different splits is possible
        digest.update(backend.to_str().encode("utf-8"))
    return f"{name}{_SEP}{digest.hexdigest()[:16]}"


def split(value: str) -> tuple[str, str | None]:
    name, sep, digest = value.partition(_SEP)
    return name, (digest or None) if sep else None


def same(a: str, b: str) -> bool:
    """Equal identities; when either side is a bare name (an older file), the names decide."""
    (name_a, hash_a), (name_b, hash_b) = split(a), split(b)
    if hash_a and hash_b:
        return hash_a == hash_b
    return name_a == name_b


def file_tokenizers(records: Iterable[Any]) -> set[str]:
    """Tokenizer identities named in an answers file's records (records without one are not counted)."""
    return {str(r.tokenizer) for r in records if r.tokenizer}


def check_same(model_path: str | Path, model_records: Iterable[Any], reference_path: str | Path,
               reference_records: Iterable[Any]) -> str | None:
    """Raise when model and reference answer lengths were counted in different tokenizers.

    Returns the shared identity (None when neither file names one: nothing to compare)."""
    mine, theirs = file_tokenizers(model_records), file_tokenizers(reference_records)
    for where, found in ((model_path, mine), (reference_path, theirs)):
        if len({split(t)[0] for t in found}) > 1 or len({t for t in found if split(t)[1]}) > 1:
            raise DataError(f"answer lengths in one file were counted in several tokenizers: {sorted(found)}",
                            path=where, expected="one tokenizer per answers file")
    if not mine or not theirs:
        return next(iter(mine or theirs), None)
    a, b = next(iter(mine)), next(iter(theirs))
    if not same(a, b):
        raise DataError(f"model answers were counted in tokenizer '{a}' ({model_path}) but reference answers in "
                        f"'{b}' ({reference_path}): their lengths are not comparable",
                        path=f"{model_path} vs {reference_path}",
                        expected="answer_tokens of both files counted in the same tokenizer",
                        hint="regenerate (or re-count) one of them with --tokenizer set to the other's")
    return a
