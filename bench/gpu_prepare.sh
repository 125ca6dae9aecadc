#!/usr/bin/env bash
# Run ONCE on a machine with network and rualign installed (this repo's test environment): fills
# bench/gpu_kit/ (git-ignored) with what bench/gpu_check.sh needs on a GPU machine that has torch,
# transformers, peft and accelerate but no network: wheels of the other pure-Python/binary dependencies
# at the versions installed here, and the cached tiny test model (SmolLM2 tokenizer, 2 random layers).
#   bash bench/gpu_prepare.sh                 # wheels for this machine's Python
#   PYVER=3.12 bash bench/gpu_prepare.sh      # wheels for another CPython on the GPU machine
# Then carry it with the command: bench/gpu_kit/wheels + bench/gpu_kit/tokenizer (~25 MiB) and
# bench/gpu_kit/wheels-pyarrow (~53 MiB; only needed where pyarrow does not import). Under a 64 MiB carry
# limit send wheels-pyarrow in a first call and the rest in the second: a warm machine keeps ignored files.
set -euo pipefail
cd "$(dirname "$0")/.."
KIT=bench/gpu_kit
rm -rf "$KIT" && mkdir -p "$KIT/wheels"
# trl + datasets and their dependencies that the torch/transformers stack does not bring, rualign's own
# light dependencies, and pytest: pinned to what this environment runs, without their (heavy) deps.
PKGS="trl datasets pyarrow dill multiprocess xxhash pandas fsspec pydantic pydantic-core annotated-types
typing-inspection pyyaml rich markdown-it-py mdurl pygments pytest pluggy iniconfig pytest-timeout tzdata
python-dateutil pytz six"
PINNED=""
for p in $PKGS; do
  if v=$(python -c "import importlib.metadata as m; print(m.version('$p'))" 2>/dev/null); then
    PINNED="$PINNED $p==$v"
  else
    echo "not installed here, not carried: $p"
  fi
done
EXTRA=()
if [ -n "${PYVER:-}" ]; then EXTRA=(--python-version "$PYVER" --only-binary=:all: --platform manylinux2014_x86_64 --platform manylinux_2_28_x86_64); fi
pip download --no-deps -d "$KIT/wheels" "${EXTRA[@]}" $PINNED
# the tokenizer of the tiny test model (gpu_check.sh rebuilds the same random tiny model from it)
PYTHONPATH=src python - "$KIT" <<'PY'
import sys
from pathlib import Path
from transformers import AutoTokenizer
from rualign.models import ensure_default_model
AutoTokenizer.from_pretrained(ensure_default_model()).save_pretrained(Path(sys.argv[1]) / "tokenizer")
PY
# pyarrow alone is ~53 MiB: its own folder, so the kit can travel in two calls under a 64 MiB carry limit
mkdir -p "$KIT/wheels-pyarrow" && mv "$KIT"/wheels/pyarrow-*.whl "$KIT/wheels-pyarrow/"
du -sh "$KIT" "$KIT"/*
