"""Security rules: no remote code unless asked, safetensors by default, API keys never written anywhere,
local servers bound to loopback and gone when rualign is done with them."""

from __future__ import annotations

import ast
import importlib.util
import json
import os
import socket
from pathlib import Path

import pytest

from rualign.cli import main

SRC = Path(__file__).resolve().parents[1] / "src" / "rualign"
KEY = "sk-test-PLANTED-123"


# ------------------------------------------------------------------ remote code and weight formats

def _calls(name: str):
    """(file, enclosing function source, call node) for every `X.<name>(...)` call in src/."""
    for file in sorted(SRC.rglob("*.py")):
        text = file.read_text(encoding="utf-8")
        tree = ast.parse(text)
        for func in [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]:
            for node in ast.walk(func):
                if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == name:
                    yield file, ast.get_source_segment(text, func), node


def test_no_source_turns_remote_code_on():
    for file in SRC.rglob("*.py"):
        for node in ast.walk(ast.parse(file.read_text(encoding="utf-8"))):
            if isinstance(node, ast.keyword) and node.arg == "trust_remote_code":
                assert not (isinstance(node.value, ast.Constant) and node.value.value is True), file
            if isinstance(node, ast.Dict):
                for key, value in zip(node.keys, node.values):
                    if isinstance(key, ast.Constant) and key.value == "trust_remote_code":
                        assert not (isinstance(value, ast.Constant) and value.value is True), file
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):  # parameters default to False
                args = node.args.args + node.args.kwonlyargs
                defaults = [None] * (len(node.args.args) - len(node.args.defaults)) + node.args.defaults \
                    + node.args.kw_defaults
                for arg, default in zip(args, defaults):
                    if arg.arg == "trust_remote_code":
                        assert isinstance(default, ast.Constant) and default.value is False, (file, node.name)


def test_every_model_load_passes_the_remote_code_setting_and_safetensors():
    checked = 0
    for file, source, call in _calls("from_pretrained"):
        owner = ast.unparse(call.func.value)
        keywords = {k.arg for k in call.keywords}
        if "gguf_file" in keywords or owner in ("PeftModel",):
            continue  # the embedded GGUF conversion and adapters: no remote code path in either
        passes_kwargs = None in keywords  # from_pretrained(x, **kwargs) with kwargs built in the function
        has = (lambda key: key in keywords or (passes_kwargs and f'"{key}"' in source))
        assert has("trust_remote_code") or owner == "AutoTokenizer", (file, ast.unparse(call))
        if owner.startswith("AutoModel"):
            assert has("use_safetensors") and "use_safetensors\": False" not in source, (file, ast.unparse(call))
        checked += 1
    assert checked >= 5


def test_schemas_default_to_no_remote_code():
    from rualign.pipeline.schema import Experiment
    from rualign.train.schema import TrainConfig

    assert TrainConfig.model_fields["trust_remote_code"].default is False
    assert Experiment.model_fields["trust_remote_code"].default is False


def test_pickle_weights_are_refused(tmp_path, tiny_model_dir):
    """A folder with only pytorch_model.bin (pickle: can run code on load) is not loaded by default."""
    import shutil

    import torch
    from safetensors.torch import load_file

    from rualign.errors import RualignError
    from rualign.models import load_model

    folder = tmp_path / "pickled"
    shutil.copytree(tiny_model_dir, folder)
    torch.save(load_file(folder / "model.safetensors"), folder / "pytorch_model.bin")
    (folder / "model.safetensors").unlink()
    with pytest.raises((RualignError, OSError, ValueError), match="safetensors|model.safetensors"):
        load_model(str(folder))


# ------------------------------------------------------------------ API keys

def _answer_rows(n: int, model: bool) -> str:
    rows = [{"id": f"q{i}", "prompt": [{"role": "user", "content": f"Вопрос {i}?"}], "category": "c",
             "answer": ("Длинный ответ модели. " * 3 if model and i % 2 == 0 else "Кратко."), "answer_tokens": 5,
             "tokenizer": "default", "finish_reason": "stop", "generator": {}, "params": {}} for i in range(n)]
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)


def test_planted_api_key_is_never_written(tmp_path, monkeypatch, capfd):
    """Generate (openai backend) and judge against the local test server with a key from the environment,
    then build a report, all with --debug logging; the key must be in no file and no output."""
    from fault_server import FaultServer

    monkeypatch.setenv("JUDGE_API_KEY", KEY)
    run = tmp_path / "run"
    run.mkdir()
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"id": f"q{i}", "instruction": f"Вопрос {i}?", "category": "c"},
                                          ensure_ascii=False) + "\n" for i in range(4)), encoding="utf-8")
    (tmp_path / "reference.jsonl").write_text(_answer_rows(4, model=False), encoding="utf-8")
    with FaultServer(fault_rate=0.0) as server:  # faults and retries are covered in test_judge_*
        url = f"{server.base_url}/v1"
        assert main(["--debug", "generate", "--backend", "openai", "--model", "fault", "--base-url", url,
                     "--api-key-env", "JUDGE_API_KEY", "--prompts", str(prompts), "--out",
                     str(run / "answers.jsonl"), "--max-new-tokens", "8"]) == 0
        (tmp_path / "judge.yaml").write_text(f"base_url: {url}\nmodel: fault\napi_key_env: JUDGE_API_KEY\n"
                                             "backoff_base_s: 0.01\nbackoff_max_s: 0.02\n", encoding="utf-8")
        # The reference must share the prompts of the generated answers: reuse them with other answers.
        generated = [json.loads(line) for line in (run / "answers.jsonl").read_text(encoding="utf-8").splitlines()]
        (tmp_path / "reference.jsonl").write_text("".join(
            json.dumps({**r, "answer": "Эталон."}, ensure_ascii=False) + "\n" for r in generated), encoding="utf-8")
        assert main(["--debug", "judge", "--answers", str(run / "answers.jsonl"), "--reference",
                     str(tmp_path / "reference.jsonl"), "--judge", str(tmp_path / "judge.yaml"),
                     "--out", str(run / "judge"), "--cache", str(tmp_path / "judge_cache.sqlite")]) == 0
        authorised = [h.get("Authorization") for h in server.headers]
    assert authorised and set(authorised) == {f"Bearer {KEY}"}  # the key was really used...
    (run / "run.json").write_text(json.dumps({
        "name": "keyed", "description": "key test", "model": "fault", "stages": [],
        "reference_answers": str(tmp_path / "reference.jsonl"), "target": 540,
        "judge": json.loads((run / "judge" / "score.json").read_text())["judge"], "config_hash": "x"}))
    assert main(["--debug", "report", str(run), "--out", str(tmp_path / "report")]) == 0
    captured = capfd.readouterr()
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert (tmp_path / "judge_cache.sqlite").exists() and (tmp_path / "report" / "report.html").exists()
    assert any(p.name == "manifest.json" for p in written) and len(written) >= 10
    leaks = [str(p) for p in written if KEY.encode() in p.read_bytes()]
    assert not leaks, f"the API key was written to {leaks}"  # ...and is in no file,
    assert KEY not in captured.out and KEY not in captured.err  # no log line and no printed output
    assert "JUDGE_API_KEY" in (run / "judge" / "manifest.json").read_text()  # only the variable's NAME is kept


# ------------------------------------------------------------------ local servers

def _listening(port: int) -> list[str]:
    """Local addresses (hex, as in /proc/net/tcp{,6}) that listen on `port`."""
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table, encoding="ascii") as handle:
            for line in list(handle)[1:]:
                local, state = line.split()[1], line.split()[3]
                address, hex_port = local.split(":")
                if int(hex_port, 16) == port and state == "0A":  # 0A = LISTEN
                    found.append(address)
    return found


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("llama_cpp") is None or importlib.util.find_spec("uvicorn") is None,
                    reason="needs llama-cpp-python[server] (the demo extra)")
def test_llamacpp_server_binds_loopback_only_and_frees_its_port_on_error():
    from rualign.eval.server import LlamaServer, resolve_gguf

    with pytest.raises(RuntimeError, match="stage failed"):
        with LlamaServer(resolve_gguf("default"), n_ctx=512) as server:
            pid, port = server.process.pid, server.port
            assert server.base_url == f"http://127.0.0.1:{port}/v1"
            assert _listening(port) == ["0100007F"]  # 127.0.0.1 only: not 0.0.0.0, not ::
            raise RuntimeError("stage failed")
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    assert _listening(port) == []
    with socket.socket() as sock:  # the port is free again
        sock.bind(("127.0.0.1", port))
