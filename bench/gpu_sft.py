"""SFT throughput and MFU on one CUDA GPU, ours vs TRL, no network: a randomly initialised model with
Qwen2.5-0.5B's shape (24 layers, hidden 896, 14/2 heads, vocab 151,936; built from a config, never
downloaded), full fine-tuning in bf16, the bundled GrandMaster sample rows, batch 8, max_length 1024.

- ours: a rualign `sft` stage with its defaults (precision auto -> bf16 on a bf16 GPU, LM head on trainable
  positions only, length-grouped batches);
- trl:  TRL SFTTrainer on the same tokenized rows and assistant-only labels, bf16, group_by_length, pad to
  8, activation checkpointing off (SFTConfig turns it on by default, which costs speed).

Each contender runs in its own process. tokens/s = non-padding tokens / trainer.train() seconds; MFU =
6 x N x tokens/s / peak bf16 FLOP/s, N = parameters without the input embedding (the attention's
sequence-length term is left out, so MFU is slightly understated for both). Peak: GPU_PEAK_TFLOPS, else a
table of dense bf16 peaks by device name.

    python bench/gpu_sft.py [steps]          (bench/gpu_check.sh runs it)
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
BATCH, MAX_LENGTH, LR, SEED = 8, 1024, 2e-5, 42
PEAKS = {"H200": 989e12, "H100": 989e12, "A100": 312e12, "L40S": 362e12, "A10": 125e12, "L4": 121e12}


def build_model(tokenizer_dir: Path, out: Path) -> Path:
    import torch
    from transformers import AutoTokenizer, Qwen2Config, Qwen2ForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    config = Qwen2Config(vocab_size=151936, hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
                         num_attention_heads=14, num_key_value_heads=2, max_position_embeddings=32768,
                         rope_theta=1e6, tie_word_embeddings=True, bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(SEED)
    Qwen2ForCausalLM(config).save_pretrained(out)
    tokenizer.save_pretrained(out)  # SmolLM2's 49k tokenizer: ids fit the larger vocabulary
    return out


def flops_per_token(model_dir: Path) -> float:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, device_map="meta")
    n = sum(p.numel() for p in model.parameters()) - model.get_input_embeddings().weight.numel()
    if model.config.tie_word_embeddings:  # the tied head still does its matmul
        n += model.get_input_embeddings().weight.numel()
    return 6.0 * n


def _ours(model_dir: Path, train_dir: Path, work: Path, steps: int) -> dict:
    from rualign.train.run import run_stage
    from rualign.train.schema import TrainConfig

    config = TrainConfig.model_validate({"model": str(model_dir), "seed": SEED, "stages": [{
        "name": "sft", "method": "sft", "data": str(train_dir), "max_steps": steps, "batch_size": BATCH,
        "max_length": MAX_LENGTH, "lr": LR, "full": True, "samples": 0, "save_steps": 100_000}]})
    manifest = run_stage(config, config.stages[0], work)
    return {"tokens": manifest["tokens"], "seconds": manifest["timing"]["train_seconds"],
            "precision": manifest["precision"], "train_loss": manifest["train_loss"]}


def _trl(model_dir: Path, train_dir: Path, work: Path, steps: int) -> dict:
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, set_seed
    from trl import SFTConfig, SFTTrainer

    from bench_sft import _tokenized
    from common import no_checkpointing
    from rualign.runs import read_jsonl

    set_seed(SEED)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    encoded = _tokenized(read_jsonl(train_dir / "train.jsonl"), tokenizer)
    ds = Dataset.from_dict({"input_ids": [i for i, _ in encoded], "completion_mask": [m for _, m in encoded]})
    args = SFTConfig(output_dir=str(work / "ckpt"), per_device_train_batch_size=BATCH, max_steps=steps,
                     learning_rate=LR, seed=SEED, data_seed=SEED, logging_steps=1, save_strategy="no",
                     report_to="none", include_num_input_tokens_seen="non_padding", disable_tqdm=True, bf16=True,
                     train_sampling_strategy="group_by_length", pad_to_multiple_of=8, completion_only_loss=True,
                     packing=False, max_length=MAX_LENGTH, **no_checkpointing())
    trainer = SFTTrainer(model=model, args=args, train_dataset=ds, processing_class=tokenizer)
    started = time.perf_counter()
    result = trainer.train()
    return {"tokens": int(trainer.state.num_input_tokens_seen), "seconds": round(time.perf_counter() - started, 2),
            "precision": "bf16", "train_loss": result.training_loss}


def peak_flops() -> tuple[float, str]:
    import torch

    name = torch.cuda.get_device_name(0)
    if os.environ.get("GPU_PEAK_TFLOPS"):
        return float(os.environ["GPU_PEAK_TFLOPS"]) * 1e12, f"{name} (GPU_PEAK_TFLOPS)"
    for key, peak in PEAKS.items():
        if key in name:
            return peak, f"{name} (dense bf16 peak {peak / 1e12:.0f} TFLOP/s)"
    raise SystemExit(f"unknown GPU '{name}': set GPU_PEAK_TFLOPS to its dense bf16 peak")


def main(steps: int) -> None:
    sys.path.insert(0, str(HERE))
    from bench_sft import prepare

    work = Path(tempfile.mkdtemp(prefix="rualign-gpu-sft-"))
    train_dir, _ = prepare(work)
    from rualign.runs import rualign_home

    model_dir = build_model(rualign_home() / "test-models" / "tiny-2l-h64", work / "qwen0.5b-shaped")
    per_token = flops_per_token(model_dir)
    peak, gpu = peak_flops()
    results = {}
    for kind in ("trl", "ours"):  # each in its own process (no shared CUDA caches)
        out = work / f"{kind}.json"
        subprocess.run([sys.executable, __file__, "--worker", kind, str(model_dir), str(train_dir), str(work / kind),
                        str(steps), str(out)], check=True)
        results[kind] = r = json.loads(out.read_text())
        r["tokens_per_s"] = r["tokens"] / r["seconds"]
        r["mfu"] = per_token * r["tokens_per_s"] / peak
    print(f"\nGPU: {gpu}; model: Qwen2.5-0.5B-shaped random init, {per_token / 6e6:.0f}M params (w/o input "
          f"embedding), full FT, batch {BATCH}, max_length {MAX_LENGTH}, {steps} steps")
    for kind, r in results.items():
        print(f"{kind:5s} {r['tokens_per_s']:10.0f} tokens/s   MFU {100 * r['mfu']:5.1f}%   "
              f"({r['tokens']} tokens in {r['seconds']:.1f} s, {r['precision']}, train loss {r['train_loss']:.4f})")
    print(f"ours / trl: {results['ours']['tokens_per_s'] / results['trl']['tokens_per_s']:.2f}x")
    print(json.dumps({"gpu": gpu, "steps": steps, "results": results}))


if __name__ == "__main__":
    if sys.argv[1:2] == ["--worker"]:
        sys.path.insert(0, str(HERE))
        os.environ.setdefault("RUALIGN_QUIET", "1")
        kind, model_dir, train_dir, work, steps, out = sys.argv[2:8]
        run = _ours if kind == "ours" else _trl
        Path(out).write_text(json.dumps(run(Path(model_dir), Path(train_dir), Path(work), int(steps))))
    else:
        main(int(sys.argv[1]) if len(sys.argv) > 1 else 30)
