"""Real judges end to end: the embedded SmolLM2 under llama.cpp (in process), and in-process transformers; llama.cpp's
OpenAI server (a local endpoint for the openai backend) is stopped on every way out."""

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
    # Copies get their own prompt text: judge calls are cached by content, so identical copies would be one call.
    prompts = [(f"{pid}-{k}" if k else pid, f"{prompt} (вариант {k})" if k else prompt, good, bad)
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
@pytest.mark.skipif(importlib.util.find_spec("llama_cpp") is None, reason="needs llama-cpp-python (the demo extra)")
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
    assert manifest["client"]["prompt_tokens"] == sum(r["usage"]["prompt_tokens"] for r in rows)
    print(f"llamacpp:default judged 3 prompts x 2 orders in {elapsed:.1f}s")


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
@pytest.mark.skipif(importlib.util.find_spec("llama_cpp") is None, reason="needs llama-cpp-python (the demo extra)")
def test_llamacpp_judge_interrupted_mid_run_keeps_its_finished_calls(tmp_path):
    """Ctrl-C while the in-process llama.cpp judge evaluates: exit 130 with a message within seconds (the call
    in flight is let finish, then the models are freed), no process left behind, finished calls cached."""
    import signal
    import sqlite3
    import sys
    from pathlib import Path

    # 600 distinct judge calls: far more than any machine finishes before the SIGINT, however loaded it is.
    answers, reference = _write(tmp_path, "a.jsonl", True, 100), _write(tmp_path, "r.jsonl", False, 100)
    cache = tmp_path / "c.sqlite"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")}
    # SIGINT back to its default in the child: a shell runs background jobs with SIGINT ignored, and Python then
    # never installs its KeyboardInterrupt handler, so under `ci/run &` the judge would not see Ctrl-C at all.
    proc = subprocess.Popen([sys.executable, "-m", "rualign", "judge", "--answers", str(answers), "--reference",
                             str(reference), "--judge", "llamacpp:default", "--cache", str(cache),
                             "--out", str(tmp_path / "out")], env=env, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))

    def cached_calls() -> int:
        try:
            with sqlite3.connect(cache) as db:
                return db.execute("SELECT COUNT(*) FROM calls").fetchone()[0]
        except sqlite3.Error:  # not created yet
            return 0

    try:
        deadline = time.monotonic() + 120
        while cached_calls() < 2 and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.2)
        assert proc.poll() is None and cached_calls() >= 2, "the judge never got going"
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:  # a failed check never leaves a judge running
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130 and "interrupted" in err
    assert "Traceback" not in err
    assert _children(proc.pid) == []
    assert 2 <= cached_calls() < 600 * 2
