"""Choose the training precision and say why (the reason goes into the stage manifest).

GPU: bf16 when the card supports it, else fp32. CPU: bf16 autocast only when the CPU has bf16 units
(AVX512-BF16 / AMX) *and* a short matmul test shows bf16 is actually faster here; on CPUs without
them bf16 is emulated and slower, so fp32 is kept.
"""

from __future__ import annotations

import functools
import time
from pathlib import Path


def _cpu_flags() -> set[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


def _matmul_seconds(dtype, size: int = 1024, repeats: int = 4) -> float:
    """Best-of-n time of one matmul (the minimum is robust to other processes sharing the CPU)."""
    import torch

    a = torch.randn(size, size).to(dtype)
    b = torch.randn(size, size).to(dtype)
    torch.matmul(a, b)  # warm up kernels (oneDNN JIT)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        torch.matmul(a, b)
        best = min(best, time.perf_counter() - start)
    return best


@functools.lru_cache(maxsize=1)
def detect_cpu_bf16() -> tuple[bool, str]:
    import torch

    flags = _cpu_flags()
    units = sorted(flags & {"avx512_bf16", "amx_bf16"})
    mkldnn = getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", None)
    supported = bool(units) or bool(mkldnn and mkldnn())
    if not supported:
        return False, "CPU has no bf16 units (no avx512_bf16/amx_bf16): fp32"
    fp32, bf16 = _matmul_seconds(torch.float32), _matmul_seconds(torch.bfloat16)
    ratio = fp32 / max(bf16, 1e-9)
    what = ", ".join(units) or "oneDNN bf16"
    if ratio < 1.2:
        return False, f"CPU reports {what} but a bf16 matmul was only {ratio:.2f}x fp32: fp32"
    return True, f"CPU has {what}; bf16 matmul {ratio:.1f}x faster than fp32: bf16 autocast"


def choose_precision(requested: str = "auto") -> tuple[str, str]:
    """Return ("bf16" | "fp32", reason)."""
    import torch

    if requested == "fp32":
        return "fp32", "requested in the stage config"
    if torch.cuda.is_available():
        if torch.cuda.is_bf16_supported():
            return "bf16", f"requested ({requested}); GPU {torch.cuda.get_device_name(0)} supports bf16"
        if requested == "bf16":
            return "fp32", "bf16 requested but the GPU does not support it: fp32"
        return "fp32", "GPU without bf16 support: fp32"
    ok, reason = detect_cpu_bf16()
    if requested == "bf16":
        return "bf16", "requested in the stage config" + ("" if ok else f" (note: {reason})")
    return ("bf16" if ok else "fp32"), reason
