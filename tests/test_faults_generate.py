"""Generation (openai backend) against the fault-injecting server, and kill -9 of a generation run.

The judge's client is covered in test_judge_*; here the same faults hit `rualign generate`, whose resume
goes through the work file (runs.JsonlAppender) instead of the SQLite cache.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from fault_server import FaultServer, request_key

from rualign.cli import main

SRC = str(Path(__file__).resolve().parents[1] / "src")


def _prompts(tmp_path: Path, n: int) -> Path:
    path = tmp_path / "prompts.jsonl"
    path.write_text("".join(json.dumps({"id": f"q{i}", "instruction": f"Вопрос номер {i}?"}, ensure_ascii=False)
                            + "\n" for i in range(n)), encoding="utf-8")
    return path


def _args(server: FaultServer, prompts: Path, out: Path) -> list[str]:
    return ["generate", "--backend", "openai", "--model", "fault", "--base-url", f"{server.base_url}/v1",
            "--prompts", str(prompts), "--out", str(out), "--max-new-tokens", "8", "--batch-size", "2"]


def test_generate_through_faults_answers_every_prompt_once(tmp_path, monkeypatch):
    monkeypatch.setenv("RUALIGN_QUIET", "1")
    prompts = _prompts(tmp_path, 8)
    with FaultServer(fault_rate=0.5, seed=1, faults=("429", "garbage", "truncated", "empty"),
                     retry_after="0", max_faults_per_key=2) as server:
        assert main(_args(server, prompts, tmp_path / "answers.jsonl")) == 0
        ok = server.ok_counts()
        faults = [o for _, o in server.log if o != "ok"]
    rows = [json.loads(line) for line in (tmp_path / "answers.jsonl").read_text(encoding="utf-8").split("\n") if line]
    assert [r["id"] for r in rows] == [f"q{i}" for i in range(8)]
    assert faults and len(ok) == 8 and max(ok.values()) == 1  # faults happened; no prompt answered twice
    assert all(r["answer"] and r["generator"]["backend"] == "openai" for r in rows)
    assert not (tmp_path / "answers.work.jsonl").exists()


def test_generate_refused_key_is_a_clear_error(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("RUALIGN_QUIET", "1")
    prompts = _prompts(tmp_path, 2)
    with FaultServer(status_override=401) as server:  # a refused key: not retried, a user error
        code = main(_args(server, prompts, tmp_path / "answers.jsonl"))
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err and "error:" in err
    assert not (tmp_path / "answers.jsonl").exists()


def test_kill_9_mid_generation_then_rerun_repeats_no_finished_answer(tmp_path):
    prompts, out = _prompts(tmp_path, 12), tmp_path / "answers.jsonl"
    work = tmp_path / "answers.work.jsonl"
    env = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", ""), "RUALIGN_QUIET": "1"}
    with FaultServer(fault_rate=0.0, delay_s=0.3) as server:
        proc = subprocess.Popen([sys.executable, "-m", "rualign", *_args(server, prompts, out)], env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and proc.poll() is None:
            if work.exists() and work.read_text(encoding="utf-8").count("\n") >= 4:
                break
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        assert not out.exists(), "answers.jsonl is written only when every prompt is answered"
        done = {json.loads(line)["id"] for line in work.read_text(encoding="utf-8").split("\n") if line.strip()
                and line.endswith("}")}
        assert 4 <= len(done) < 12
        logged = len(server.log)
        assert main(["-q", *_args(server, prompts, out)]) == 0
        ok = server.ok_counts()
        rerun_keys = {key for key, _ in server.log[logged:]}
    done_keys = {request_key([{"role": "user", "content": f"Вопрос номер {pid[1:]}?"}]) for pid in done}
    all_keys = {request_key([{"role": "user", "content": f"Вопрос номер {i}?"}]) for i in range(12)}
    assert rerun_keys and rerun_keys <= all_keys  # the keys are computed the way the server sees them
    assert not rerun_keys & done_keys, "the rerun asked again for answers that were already on disk"
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").split("\n") if line]
    assert [r["id"] for r in rows] == [f"q{i}" for i in range(12)] and not work.exists()
    # Every prompt reached the server successfully once, except those in flight at the kill (at most a batch).
    assert len(ok) == 12 and sum(ok.values()) - 12 <= 2
