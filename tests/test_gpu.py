"""The GPU suite (`python -m pytest -m gpu`): skipped where torch sees no CUDA device, collected everywhere.
bench/gpu_check.sh runs it on a GPU machine with no network (tiny random models, carried wheels).

What it checks on CUDA: SFT and DPO stages train in bf16 (chosen by precision: auto) and their merged export
gives the adapter model's logits; continuous-batching generation equals one-at-a-time `generate`; a QLoRA
stage when bitsandbytes imports; the vLLM backend on a tiny model when vllm imports; the shipped fsdp.yaml and
deepspeed-zero3.yaml (bf16) launched on one GPU, their gathered export loading."""

from __future__ import annotations

import json

import pytest

torch = pytest.importorskip("torch")

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (torch.cuda.is_available() "
                                                                     "is False here)")]

LORA = {"r": 8, "alpha": 16, "dropout": 0.0}


@pytest.fixture(scope="module")
def trained(tiny_model_dir, tmp_path_factory):
    """sft (LoRA) then dpo (LoRA, on the sft stage's merged model), precision auto = bf16 on a bf16 GPU."""
    from test_train_pref import data_folder, pref_rows
    from test_train_sft import chat_rows, make_data

    from rualign.train.run import run_training
    from rualign.train.schema import TrainConfig

    root = tmp_path_factory.mktemp("gpu")
    chat = make_data(root / "chat", chat_rows(16))
    pref = data_folder(root / "pref", pref_rows(8), "preference")
    common = {"max_steps": 6, "batch_size": 4, "lr": 5e-3, "max_length": 128, "samples": 1,
              "sample_max_new_tokens": 4, "save_steps": 1000, "lora": LORA}
    config = TrainConfig.model_validate({"model": str(tiny_model_dir), "seed": 3, "stages": [
        {"name": "sft", "method": "sft", "data": str(chat), **common},
        {"name": "dpo", "method": "dpo", "data": str(pref), **common}]})
    return root, run_training(config, root / "out")


@pytest.mark.parametrize("name", ["sft", "dpo"])
def test_gpu_stage_trains_in_bf16(trained, name):
    root, manifests = trained
    manifest = manifests[name]
    assert manifest["precision"] == "bf16" and "GPU" in manifest["precision_reason"]
    assert manifest["steps"] == 6 and manifest["tokens"] > 0
    losses = [json.loads(line)["loss"] for line in (root / "out" / name / "train_log.jsonl").read_text().splitlines()
              if "loss" in json.loads(line)]
    assert len(losses) == 6 and all(loss == loss for loss in losses)  # no NaN in bf16
    assert losses[-1] < losses[0]


def test_gpu_merged_export_equals_adapter_on_base(trained):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    root, manifests = trained
    manifest = manifests["sft"]
    ids = torch.tensor([[1, 300, 301, 302, 303, 304]], device="cuda")
    base = AutoModelForCausalLM.from_pretrained(manifest["adapter_base"], dtype=torch.float32).cuda()
    with_adapter = PeftModel.from_pretrained(base, manifest["adapter_path"]).eval()
    merged = AutoModelForCausalLM.from_pretrained(manifest["model_path"], dtype=torch.float32).cuda().eval()
    with torch.no_grad():
        torch.testing.assert_close(merged(ids).logits, with_adapter(ids).logits, atol=1e-4, rtol=1e-4)


def test_gpu_continuous_batching_equals_one_at_a_time():
    """tests/test_decode.py's check on CUDA (fp32: greedy ties must not depend on the batch's kernels)."""
    from test_decode import _alone, _decode, _prompts, _stops_that_end_some_rows_early
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(1)
    config = LlamaConfig(vocab_size=96, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                         tie_word_embeddings=False, initializer_range=0.5)
    model = LlamaForCausalLM(config).cuda().eval()
    prompts = _prompts([5, 40, 3, 17, 60, 9, 2, 33])
    stops = _stops_that_end_some_rows_early(_OnCuda(model), prompts, 12)
    finished = _decode(model, prompts, slots=3, max_new=12, stops=stops)
    got = {index: (tokens, reason) for index, tokens, reason in finished}
    assert got == {i: _alone(_OnCuda(model), p, 12, stops) for i, p in enumerate(prompts)}


class _OnCuda:
    """`model.generate` with the CPU tensors test_decode builds moved to the model's device."""

    def __init__(self, model):
        self.model = model

    def generate(self, input_ids, attention_mask, **kwargs):
        return self.model.generate(input_ids.cuda(), attention_mask=attention_mask.cuda(), **kwargs).cpu()


def test_gpu_qlora_stage(tiny_model_dir, tmp_path):
    pytest.importorskip("bitsandbytes", reason="QLoRA needs bitsandbytes (pip install 'rualign[gpu]')")
    from test_train_sft import chat_rows, make_data

    from rualign.train.run import run_training
    from rualign.train.schema import TrainConfig

    data = make_data(tmp_path / "chat", chat_rows(8))
    config = TrainConfig.model_validate({"model": str(tiny_model_dir), "stages": [
        {"name": "q", "method": "sft", "data": str(data), "max_steps": 4, "batch_size": 4, "lr": 5e-3,
         "max_length": 64, "samples": 0, "qlora": {"r": 8, "alpha": 16, "dropout": 0.0}}]})
    manifest = run_training(config, tmp_path / "out")["q"]
    assert manifest["adapter"] == "qlora" and manifest["steps"] == 4
    assert (tmp_path / "out" / "q" / "merged" / "model.safetensors").exists()


def test_gpu_vllm_backend_on_a_tiny_model(tiny_model_dir, tmp_path):
    pytest.importorskip("vllm", reason="the vllm backend needs vllm (pip install 'rualign[gpu]')")
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from rualign.eval.backends import GenParams, VLLMBackend

    # head_dim 64: vLLM's attention kernels do not take the unit-test model's head_dim of 16
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=128, intermediate_size=256, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=1024,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
    LlamaForCausalLM(config).save_pretrained(tmp_path / "m")
    tokenizer.save_pretrained(tmp_path / "m")
    backend = VLLMBackend(str(tmp_path / "m"), batch_size=4)
    batch = [[{"role": "user", "content": f"Вопрос {i}?"}] for i in range(3)]
    completions = backend.generate(batch, GenParams(max_new_tokens=8))
    assert len(completions) == 3
    for completion in completions:
        assert completion.finish_reason in ("stop", "length") and 0 < completion.completion_tokens <= 8
    again = backend.generate(batch, GenParams(max_new_tokens=8))
    assert [c.text for c in again] == [c.text for c in completions]  # greedy is deterministic


@pytest.mark.parametrize("shipped", ["fsdp.yaml", "deepspeed-zero3.yaml"])
def test_gpu_fsdp_and_zero3_shipped_configs_bf16_export(shipped, tiny_model_dir, tmp_path):
    """The shipped GPU configs as they are (bf16 mixed precision), on one GPU: full + LoRA stages train and
    the gathered export loads (tests/test_train_sharded.py checks the gathered values on 2 CPU ranks)."""
    if shipped.startswith("deepspeed"):
        pytest.importorskip("deepspeed", reason="needs deepspeed (pip install 'rualign[gpu]')")
    from test_train_sharded import ROOT, _config, _data, _launch, _write_config
    from transformers import AutoModelForCausalLM

    cfg = _config(tiny_model_dir, _data(tmp_path / "data"), 4)
    for stage in cfg["stages"]:
        stage["precision"] = "auto"  # bf16 on a bf16 GPU, as the shipped configs' mixed_precision
    config = _write_config(tmp_path / "train.yaml", cfg)
    _launch(["--num_processes", "1", "-m", "rualign", "train", str(config), "--out", str(tmp_path / "out")],
            accelerate_config=ROOT / "configs" / "accelerate" / shipped)
    kind = "fsdp2" if shipped == "fsdp.yaml" else "zero3"
    for stage in ("full", "lora"):
        manifest = json.loads((tmp_path / "out" / stage / "manifest.json").read_text())
        assert manifest["sharding"] == kind and manifest["steps"] == 2
        model = AutoModelForCausalLM.from_pretrained(manifest["model_path"]).cuda()
        with torch.no_grad():
            assert torch.isfinite(model(torch.tensor([[1, 300, 301]], device="cuda")).logits).all()
