"""Shared fixtures. Models are real: the embedded default (converted once into $RUALIGN_HOME) and a tiny
random 2-layer model with the same tokenizer for fast unit tests. Nothing touches the network."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def default_model_dir() -> Path:
    from rualign.models import ensure_default_model

    return ensure_default_model()


@pytest.fixture(scope="session")
def tiny_model_dir() -> Path:
    """A 2-layer random Llama with the SmolLM2 tokenizer, cached across test sessions (built from the
    default model only when not cached, so a GPU machine can run with a carried copy: bench/gpu_check.sh)."""
    from rualign.models import build_tiny_model
    from rualign.runs import rualign_home

    return build_tiny_model(rualign_home() / "test-models" / "tiny-2l-h64")


@pytest.fixture
def write_jsonl(tmp_path: Path):
    """Write rows (dicts, or raw strings for malformed lines) as a JSONL file and return its path."""
    import json

    def _write(name: str, rows: list, encoding: str = "utf-8") -> Path:
        path = tmp_path / name
        lines = [r if isinstance(r, str) else json.dumps(r, ensure_ascii=False) for r in rows]
        path.write_bytes(("\n".join(lines) + "\n").encode(encoding))
        return path

    return _write


@pytest.fixture(autouse=True)
def _terminal_flags_do_not_leak():
    """`rualign -q` / `-v` set RUALIGN_QUIET / RUALIGN_VERBOSE in the process so child processes inherit them;
    a test calling main(["-q", ...]) must not silence a later test's subprocess (a sweep test read no
    "trial" lines after one did). Restore both after every test, so tests don't depend on their order."""
    saved = {key: os.environ.get(key) for key in ("RUALIGN_QUIET", "RUALIGN_VERBOSE")}
    yield
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
