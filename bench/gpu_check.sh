#!/usr/bin/env bash
# The GPU check: one command, no network, <= 10 minutes on one GPU. Needs bench/gpu_kit from
# bench/gpu_prepare.sh (run beforehand where there is network) carried along.
#   bash bench/gpu_check.sh
# 1. installs from the carried wheels only what does not import here (trl, datasets, pydantic, ...);
# 2. the GPU suite: python -m pytest -m gpu tests/test_gpu.py (bf16 SFT + DPO stages, merged export,
#    continuous batching == one at a time on CUDA, QLoRA if bitsandbytes imports, vLLM if vllm imports);
# 3. bench/gpu_sft.py: SFT tokens/s and MFU, ours vs TRL, Qwen2.5-0.5B-shaped random model, full FT, bf16.
set -uo pipefail
cd "$(dirname "$0")/.."
KIT=bench/gpu_kit
[ -d "$KIT/wheels" ] && [ -d "$KIT/tokenizer" ] || {
  echo "bench/gpu_kit missing: run bench/gpu_prepare.sh first (needs network)"; exit 2; }
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
export PYTHONPATH="$PWD/src:$PWD/tests:${PYTHONPATH:-}" RUALIGN_HOME="$PWD/$KIT/home" RUALIGN_QUIET=1
MISSING=$(python - <<'PY'
import importlib.util
need = {"trl": "trl", "datasets": "datasets", "pyarrow": "pyarrow", "dill": "dill", "multiprocess": "multiprocess",
        "xxhash": "xxhash", "pandas": "pandas", "fsspec": "fsspec", "pydantic": "pydantic", "yaml": "pyyaml",
        "rich": "rich", "pytest": "pytest", "pytest_timeout": "pytest-timeout"}
print(" ".join(pkg for module, pkg in need.items() if importlib.util.find_spec(module) is None))
PY
)
if [ -n "$MISSING" ]; then
  echo "installing from $KIT/wheels: $MISSING"
  pip install -q --no-index --find-links "$KIT/wheels" --find-links "$KIT/wheels-pyarrow" $MISSING || exit 2
fi
# the tiny random test model, rebuilt from the carried tokenizer (same seed and shape as tests/conftest.py's)
python -c "import os; from rualign.models import build_tiny_model; from rualign.runs import rualign_home; \
build_tiny_model(rualign_home() / 'test-models' / 'tiny-2l-h64', tokenizer_dir='$KIT/tokenizer')" || exit 2
python -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'no CUDA device visible to torch')" || exit 2
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python -c "import torch, transformers, trl, peft; print('torch', torch.__version__, 'cuda', torch.version.cuda, \
'transformers', transformers.__version__, 'trl', trl.__version__, 'peft', peft.__version__)"
status=0
echo "== GPU suite"
timeout 300 python -m pytest -q -m gpu tests/test_gpu.py -p no:cacheprovider -rs || status=1
echo "== SFT throughput, ours vs TRL"
timeout 330 python bench/gpu_sft.py "${GPU_SFT_STEPS:-30}" || status=1
exit $status
