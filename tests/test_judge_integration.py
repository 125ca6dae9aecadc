"""Real judges end to end: the embedded SmolLM2 under llama.cpp's server, and in-process transformers."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import time

import httpx
import pytest

from rualign.eval.judge import run_judge
from rualign.eval.schema import parse_judge_spec

PROMPTS = [
    ("q1", "Как называется столица России?", "Столица России — Москва.", "Не знаю."),
    ("q2", "Сколько будет 2 + 2?", "2 + 2 = 4.", "Пять."),
    ("q3", "Назови цвет неба в ясный день.", "Небо в ясный день голубое.", "Зелёное, как трава."),
]


def _write(tmp_path, name, model: bool, copies: int = 1):
    path = tmp_path / name
    prompts = [(f"{pid}-{k}" if k else pid, prompt, good, bad)
               for k in range(copies) for pid, prompt, good, bad in PROMPTS]
    with open(path, "w", encoding="utf-8") as handle:
        for pid, prompt, good, bad in prompts:
            answer = good if model else bad
            handle.write(json.dumps({"id": pid, "prompt": [{"role": "user", "content": prompt}], "category": None,
                                     "answer": answer, "answer_tokens": len(answer.split()), "tokenizer": "t",
                                     "finish_reason": "stop", "generator": {}, "params": {}},
                                    ensure_ascii=False) + "\n")
    return path


def _check_logprob_run(rows: list[dict], score: dict) -> None:
    assert len(rows) == 6 and [r["id"] for r in rows] == ["q1", "q1", "q2", "q2", "q3", "q3"]
    for row in rows:
        # "constrained": the letters carried < min_verdict_mass, so the first token was constrained to A/B/C
        assert row["mode"] in ("logprob", "constrained") and row["verdict_mass"] is not None
        assert (row["mode"] == "constrained") == (row["verdict_mass"] < 0.5)
        if row["error"] is None:
            assert 0.0 <= row["preference"] <= 1.0 and sum(row["probs"].values()) == pytest.approx(1.0)
            assert row["usage"]["prompt_tokens"] > 50
        else:
            assert row["preference"] is None and row["error"].startswith("parse:")
    assert score["n_prompts"] == 3 and score["n"] + score["failures"]["count"] == 3


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("llama_cpp") is None or importlib.util.find_spec("uvicorn") is None,
                    reason="needs llama-cpp-python[server] (the demo extra)")
def test_llamacpp_default_logprob_end_to_end(tmp_path):
    answers, reference = _write(tmp_path, "a.jsonl", True), _write(tmp_path, "r.jsonl", False)
    cfg = parse_judge_spec("llamacpp:default").model_copy(update={"cache": str(tmp_path / "c.sqlite"),
                                                                   "concurrency": 1})
    started = time.monotonic()
    score = run_judge(answers, reference, cfg, tmp_path / "out").dump()
    elapsed = time.monotonic() - started
    rows = [json.loads(line) for line in (tmp_path / "out" / "judgments.jsonl").read_text().splitlines()]
    _check_logprob_run(rows, score)
    assert set(score["judge"]["mode"].split("+")) <= {"logprob", "constrained"}
    assert score["judge"]["model"] == "default"
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["client"]["requests"] >= 6
    print(f"llamacpp:default judged 3 prompts x 2 orders in {elapsed:.1f}s")
    # The server was stopped: no llama_cpp.server child of this process is left.
    ps = subprocess.run(["ps", "-eo", "ppid=,args="], capture_output=True, text=True).stdout
    children = [line for line in ps.splitlines() if line.split(None, 1)[0] == str(os.getpid())]
    assert not [line for line in children if "llama_cpp.server" in line]


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("llama_cpp") is None or importlib.util.find_spec("uvicorn") is None,
                    reason="needs llama-cpp-python[server] (the demo extra)")
def test_llamacpp_server_stopped_on_exception(tmp_path):
    from rualign.eval.server import LlamaServer, resolve_gguf

    with pytest.raises(RuntimeError, match="boom"):
        with LlamaServer(resolve_gguf("default"), n_ctx=1024) as server:
            pid, url = server.process.pid, server.base_url
            assert httpx.get(f"{url}/models", timeout=5).status_code == 200
            raise RuntimeError("boom")
    with pytest.raises(ProcessLookupError):  # stopped and reaped by its pid
        os.kill(pid, 0)
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"{url}/models", timeout=2)


@pytest.mark.slow
def test_local_default_logprob_end_to_end(tmp_path, default_model_dir):
    answers, reference = _write(tmp_path, "a.jsonl", True), _write(tmp_path, "r.jsonl", False)
    cfg = parse_judge_spec("local:default").model_copy(update={"cache": str(tmp_path / "c.sqlite")})
    score = run_judge(answers, reference, cfg, tmp_path / "out").dump()
    rows = [json.loads(line) for line in (tmp_path / "out" / "judgments.jsonl").read_text().splitlines()]
    _check_logprob_run(rows, score)
    assert score["judge"]["name"] == "local:default"
    top = json.loads(rows[0]["raw"])["top_logprobs"]  # the in-process next-token distribution, sorted
    assert len(top) == 20 and top[0]["logprob"] >= top[-1]["logprob"]


def _children(pid: int) -> list[tuple[int, str]]:
    ps = subprocess.run(["ps", "-eo", "pid=,ppid=,args="], capture_output=True, text=True).stdout
    rows = [line.split(None, 2) for line in ps.splitlines()]
    return [(int(r[0]), r[2]) for r in rows if len(r) == 3 and r[1] == str(pid)]


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("llama_cpp") is None or importlib.util.find_spec("uvicorn") is None,
                    reason="needs llama-cpp-python[server] (the demo extra)")
def test_llamacpp_server_stopped_on_ctrl_c(tmp_path):
    import signal
    import sys
    from pathlib import Path

    # 600 judge calls: far more than any machine finishes between the server coming up and the SIGINT, so
    # the interrupt always lands mid-judging however loaded the machine is (3 prompts once raced to exit 0).
    answers, reference = _write(tmp_path, "a.jsonl", True, 100), _write(tmp_path, "r.jsonl", False, 100)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")}
    proc = subprocess.Popen([sys.executable, "-m", "rualign", "judge", "--answers", str(answers), "--reference",
                             str(reference), "--judge", "llamacpp:default", "--cache", str(tmp_path / "c.sqlite"),
                             "--out", str(tmp_path / "out")], env=env, stderr=subprocess.PIPE, text=True)
    server_pid, deadline = None, time.monotonic() + 60
    while server_pid is None and time.monotonic() < deadline and proc.poll() is None:
        server_pid = next((pid for pid, args in _children(proc.pid) if "llama_cpp.server" in args), None)
        time.sleep(0.1)
    assert server_pid is not None, "the judge never started its llama.cpp server"
    time.sleep(0.5)
    proc.send_signal(signal.SIGINT)  # to the judge only: it must stop its server itself
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "interrupted" in err
    with pytest.raises(ProcessLookupError):
        os.kill(server_pid, 0)
