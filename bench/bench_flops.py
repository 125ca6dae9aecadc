"""Hardware efficiency of rualign's SFT step: useful training FLOP/s over a bf16 matmul peak measured in the
same process (torch.matmul on 2048x2048 bf16 matrices, best of several, before and after the steps).

The step is rualign's default SFT path on the embedded default: LoRA r16 all-linear, bf16 autocast, LM head
on trainable positions only (chunked), fast LoRA dropout, length-grouped batches of 4 GrandMaster rows. Useful FLOPs per batch
(T = real tokens, T_train = trainable next-token positions, L_i = real length of row i):

    4 * N_body * T          frozen decoder linears: forward 2NT + activation gradients 2NT (no weight grads)
  + 6 * N_lora * T          LoRA A/B: forward 2NT, activation grads 2NT, weight grads 2NT
  + 4 * V * d * T_train     LM head on trainable positions: forward + activation gradients
  + 6 * layers * d * sum_i L_i^2   causal attention (QK^T and AV, half the square): forward 2, backward 4

Padding, prompt-position logits and elementwise work count as zero useful FLOPs. A torch.profiler table of
one step is written to bench/results/flops_profile.txt (where the time goes).

    python bench/bench_flops.py [steps]
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from common import RESULTS, Row, bench_threads, default_lora_model, peak_rss_mb

SIZE = 2048


def matmul_peak(repeats: int = 6) -> float:
    import torch

    a, b = (torch.randn(SIZE, SIZE, dtype=torch.bfloat16) for _ in range(2))
    torch.matmul(a, b)
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        torch.matmul(a, b)
        best = min(best, time.perf_counter() - started)
    return 2 * SIZE ** 3 / best


def model_sizes(model) -> dict:
    """N_body (frozen decoder linears), N_lora, vocabulary, hidden size, layers."""
    import torch

    body = lora = 0
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear) and "lm_head" not in name:
            if "lora_" in name:
                lora += module.weight.numel()
            else:
                body += module.weight.numel()
    config = model.config
    return {"body": body, "lora": lora, "vocab": config.vocab_size, "hidden": config.hidden_size,
            "layers": config.num_hidden_layers}


def batch_flops(batch: dict, sizes: dict) -> float:
    mask = batch["attention_mask"]
    tokens = int(mask.sum())
    trainable = int((batch["labels"][:, 1:] != -100).sum())
    squares = int((mask.sum(dim=1) ** 2).sum())
    return (4 * sizes["body"] * tokens + 6 * sizes["lora"] * tokens
            + 4 * sizes["vocab"] * sizes["hidden"] * trainable + 6 * sizes["layers"] * sizes["hidden"] * squares)


def run(steps: int = 2) -> list[Row]:
    import torch
    from torch.profiler import ProfilerActivity, profile

    import bench_sft_levers as levers

    from rualign.train.dropout import use_fast_lora_dropout
    from rualign.train.fast import add_trainable_head

    threads = bench_threads()  # the peak is measured with the same thread count as the steps
    tokenizer, model = default_lora_model()
    add_trainable_head(model.get_base_model())
    use_fast_lora_dropout(model)  # as a rualign stage does (train/run.py)
    model.train()
    sizes = model_sizes(model)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=0.0)
    batches = levers._batches(levers._encoded(tokenizer), tokenizer.pad_token_id)["grouped"]
    peaks = [matmul_peak()]
    for batch in batches:  # warm-up: oneDNN primitives for these shapes
        levers._step(model, optimizer, batch, True, True)
    seconds = flops = 0.0
    for _ in range(steps):
        for batch in batches:
            seconds += levers._step(model, optimizer, batch, True, True)
            flops += batch_flops(batch, sizes)
    peaks.append(matmul_peak())
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        levers._step(model, optimizer, batches[-1], True, True)
    table = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=25)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "flops_profile.txt").write_text(table + "\n", encoding="utf-8")
    achieved, peak = flops / seconds, max(peaks)
    print(f"sizes {sizes}; {flops / 1e12:.2f} TFLOP in {seconds:.1f} s = {achieved / 1e9:.1f} GFLOP/s; "
          f"bf16 matmul peak {peak / 1e9:.1f} GFLOP/s (runs {[round(p / 1e9, 1) for p in peaks]})")
    print(table)
    return [Row("flops", "SFT training GFLOP/s (useful, formula in NOTES) vs bf16 matmul peak, default model",
                round(achieved / 1e9, 1), round(peak / 1e9, 1), f"torch.matmul bf16 {SIZE}^2, same run",
                ">= 50%", achieved >= 0.5 * peak,
                f"{achieved / peak:.0%} of peak; {threads} thread(s); {flops / 1e12:.2f} TFLOP in {seconds:.1f} s; profile in "
                "bench/results/flops_profile.txt", peak_rss_mb(),
                extra={"sizes": sizes, "peaks_gflops": [p / 1e9 for p in peaks]})]


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    for row in run(*(int(a) for a in sys.argv[1:2])):
        print(row)
