"""The judge stage end to end against the fault-injecting server: outputs, failures, cache, concurrency, kill -9."""

from __future__ import annotations

import json
import logging
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from fault_server import FAIL_MARKER, UNPARSEABLE_MARKER, LETTER_PROBS, FaultServer, request_key

from rualign.cli import main
from rualign.errors import RualignError
from rualign.eval.endpoint import endpoint_key
from rualign.eval.judge import build_jobs, call_key, load_template, pair_answers, render, run_judge
from rualign.eval.schema import JudgeConfig, parse_judge_spec

SRC = str(Path(__file__).resolve().parents[1] / "src")


def answer_rows(n: int, *, model: bool, marker_ids: dict[int, str] | None = None) -> list[dict]:
    """Prompt i: the model's answer is longer for even i, shorter for odd i (the fake judge prefers length)."""
    rows = []
    for i in range(n):
        prompt = f"Вопрос номер {i}: расскажи про реку {i}. {(marker_ids or {}).get(i, '')}".strip()
        long, short = "Подробный ответ. " * 3 + str(i), f"Кратко {i}."
        text = (long if i % 2 == 0 else short) if model else (short if i % 2 == 0 else long)
        rows.append({"id": f"p{i}", "prompt": [{"role": "user", "content": prompt}], "category": "geo" if i % 3 else
                     "misc", "answer": text, "answer_tokens": len(text) // 3, "tokenizer": "t",
                     "finish_reason": "stop", "generator": {"backend": "test", "model": "m", "adapter": None},
                     "params": {}})
    return rows


@pytest.fixture
def pair_files(write_jsonl):
    def make(n: int = 12, marker_ids: dict[int, str] | None = None, prefix: str = ""):
        return (write_jsonl(f"{prefix}answers.jsonl", answer_rows(n, model=True, marker_ids=marker_ids)),
                write_jsonl(f"{prefix}reference.jsonl", answer_rows(n, model=False, marker_ids=marker_ids)))
    return make


def fast_cfg(server: FaultServer, tmp_path: Path, **overrides) -> JudgeConfig:
    fields = {"backend": "openai", "base_url": server.base_url, "model": "fault", "concurrency": 8,
              "timeout_s": 3.0, "backoff_base_s": 0.01, "backoff_max_s": 0.05, "max_retries": 6,
              "cache": str(tmp_path / "cache.sqlite"), **overrides}
    return JudgeConfig(**fields)


def read_rows(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "judgments.jsonl").read_text(encoding="utf-8").splitlines()]


def strip_cached(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k != "cached"} for r in rows]


def test_faulty_run_completes_with_verdicts_and_counted_failures(tmp_path, pair_files):
    answers, reference = pair_files(12, marker_ids={5: FAIL_MARKER})
    with FaultServer(fault_rate=0.3, seed=3) as server:
        score = run_judge(answers, reference, fast_cfg(server, tmp_path), tmp_path / "out").dump()
        ok = server.ok_counts()
        assert ok and max(ok.values()) == 1  # no call repeated after it succeeded
        failed_keys = [k for k, o in server.log if o == "500"]
    rows = read_rows(tmp_path / "out")
    assert len(rows) == 24 and [r["order"] for r in rows[:2]] == ["model_first", "reference_first"]
    failed = [r for r in rows if r["error"]]
    assert {r["id"] for r in failed} == {"p5"} and all(r["preference"] is None for r in failed)
    assert all("api: gave up after 7 attempts" in r["error"] for r in failed) and len(failed_keys) >= 14
    expected = (LETTER_PROBS["win"] + LETTER_PROBS["win_space"]) / 0.95 + 0.5 * LETTER_PROBS["tie"] / 0.95
    for row in rows:
        if row["error"]:
            continue
        i = int(row["id"][1:])
        model_wins = i % 2 == 0
        assert row["verdict"] == ("model" if model_wins else "reference")
        assert row["preference"] == pytest.approx(expected if model_wins else 1 - expected)
        assert sum(row["probs"].values()) == pytest.approx(1.0) and row["mode"] == "logprob"
        assert json.loads(row["raw"])["top_logprobs"] and row["usage"]["completion_tokens"] == 1
    # Failures are counted, never scored as losses: 11 prompts scored, 6 even (wins) and 5 odd (losses).
    assert score["n"] == 11 and score["n_prompts"] == 12 and score["failures"]["ids"] == ["p5"]
    assert (score["wins"], score["losses"]) == (6, 5)
    assert score["judge"] == {"name": f"openai:fault@{server.base_url}", "model": "fault", "mode": "logprob",
                              "template_version": "judge_pairwise_v1"}
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["stage"] == "judge" and manifest["failed_calls"] == 2 and manifest["calls"] == 24


def test_rerun_from_cache_makes_zero_http_calls(tmp_path, pair_files):
    answers, reference = pair_files(8)
    with FaultServer(fault_rate=0.3, seed=4) as server:
        cfg = fast_cfg(server, tmp_path)
        first = run_judge(answers, reference, cfg, tmp_path / "a").dump()
        before = server.requests()
        assert before >= 16
        second = run_judge(answers, reference, cfg, tmp_path / "b").dump()  # a fresh folder: only the cache helps
        assert server.requests() == before
    assert all(r["cached"] for r in read_rows(tmp_path / "b"))
    assert not any(r["cached"] for r in read_rows(tmp_path / "a"))
    assert strip_cached(read_rows(tmp_path / "a")) == strip_cached(read_rows(tmp_path / "b"))
    assert first["score"] == second["score"]


def test_pairing_errors_name_both_files_and_ids(tmp_path, write_jsonl):
    model = answer_rows(9, model=True)
    reference = answer_rows(9, model=False)
    a = write_jsonl("a.jsonl", model[:8])
    r = write_jsonl("r.jsonl", reference[1:])
    with pytest.raises(RualignError) as err:
        pair_answers(a, r)
    text = str(err.value)
    assert str(a) in text and str(r) in text and "only in" in text and "p0" in text and "p8" in text
    reference[2]["prompt"] = [{"role": "user", "content": "другой вопрос"}]
    r2 = write_jsonl("r2.jsonl", reference)
    a2 = write_jsonl("a2.jsonl", model)
    with pytest.raises(RualignError, match=r"1 id\(s\) with different prompts: p2"):
        pair_answers(a2, r2)
    dup = write_jsonl("dup.jsonl", model[:3] + [model[1]])
    with pytest.raises(RualignError, match=r"dup.jsonl:4: duplicate id 'p1' \(first on line 2\)"):
        pair_answers(dup, r2)


def test_missing_logprobs_falls_back_to_verdict_with_one_warning(tmp_path, pair_files, caplog):
    answers, reference = pair_files(6)
    with FaultServer(fault_rate=0.0, logprobs=False) as server, caplog.at_level(logging.WARNING):
        score = run_judge(answers, reference, fast_cfg(server, tmp_path), tmp_path / "out").dump()
    warnings = [r for r in caplog.records if "no logprobs" in r.getMessage()]
    assert len(warnings) == 1
    rows = read_rows(tmp_path / "out")
    assert {r["mode"] for r in rows} == {"verdict"} and score["judge"]["mode"] == "verdict"
    for row in rows:
        i = int(row["id"][1:])
        assert row["preference"] == (1.0 if i % 2 == 0 else 0.0)
        assert row["criteria"]["clarity"] == ("model" if i % 2 == 0 else "reference")
    assert score["score"] == 50.0


def test_verdict_mode_reminder_retry(tmp_path, pair_files):
    answers, reference = pair_files(4, marker_ids={1: UNPARSEABLE_MARKER})
    with FaultServer(fault_rate=0.0) as server:
        run_judge(answers, reference, fast_cfg(server, tmp_path, mode="verdict"), tmp_path / "out")
        assert server.requests() == 8 + 2  # the two orders of p1 needed one reminder each
    rows = {(r["id"], r["order"]): r for r in read_rows(tmp_path / "out")}
    retried = rows[("p1", "model_first")]
    assert "--- retry after reminder ---" in retried["raw"] and retried["preference"] == 0.0
    assert retried["error"] is None and retried["verdict"] == "reference"


def test_judge_specs():
    assert parse_judge_spec("llamacpp:default").backend == "llamacpp"
    cfg = parse_judge_spec("openai:gpt-4o@http://127.0.0.1:9/v1", mode="verdict")
    assert (cfg.model, cfg.base_url, cfg.mode) == ("gpt-4o", "http://127.0.0.1:9/v1", "verdict")
    assert parse_judge_spec("local:default").backend == "local"
    with pytest.raises(RualignError, match="cannot read judge spec"):
        parse_judge_spec("openai:gpt-4o")
    with pytest.raises(RualignError, match="unknown judge backend|cannot read"):
        parse_judge_spec("vllm:x")
    with pytest.raises(Exception, match="NAME of an environment variable"):
        JudgeConfig(base_url="http://x", api_key_env="sk-abc")


def test_cli_with_yaml_config_never_writes_the_key(tmp_path, pair_files, monkeypatch, capsys):
    answers, reference = pair_files(4)
    secret = "sk-test-SECRET-value-42"
    monkeypatch.setenv("JUDGE_TEST_KEY", secret)
    with FaultServer(fault_rate=0.0) as server:
        config = tmp_path / "judge.yaml"
        config.write_text(yaml.safe_dump({"base_url": server.base_url + "/", "model": "fault",
                                          "api_key_env": "JUDGE_TEST_KEY", "concurrency": 2,
                                          "cache": str(tmp_path / "c.sqlite"), "backoff_base_s": 0.01}))
        code = main(["judge", "--answers", str(answers), "--reference", str(reference), "--judge", str(config),
                     "--out", str(tmp_path / "out")])
        assert code == 0 and server.headers[0]["Authorization"] == f"Bearer {secret}"
    assert "score 50.0" in capsys.readouterr().out
    for path in [*(tmp_path / "out").iterdir(), tmp_path / "c.sqlite"]:
        assert secret.encode() not in path.read_bytes(), path
    assert "JUDGE_TEST_KEY" in (tmp_path / "out" / "manifest.json").read_text()


def test_cli_reports_bad_config_key(tmp_path, pair_files, capsys):
    answers, reference = pair_files(2)
    config = tmp_path / "judge.yaml"
    config.write_text("base_url: http://127.0.0.1:9\nmodel: x\nconcurency: 3\n")
    code = main(["judge", "--answers", str(answers), "--reference", str(reference), "--judge-config", str(config),
                 "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2 and "judge.yaml:3" in err and "unknown key 'concurency'" in err


# ------------------------------------------------------------ processes

def _cli_cmd(answers: Path, reference: Path, config: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "rualign", "judge", "--answers", str(answers), "--reference", str(reference),
            "--judge-config", str(config), "--out", str(out)]


def _env() -> dict:
    return {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}


def _write_config(path: Path, server: FaultServer, cache: Path, concurrency: int) -> Path:
    path.write_text(yaml.safe_dump({"base_url": server.base_url, "model": "fault", "concurrency": concurrency,
                                    "timeout_s": 3.0, "backoff_base_s": 0.01, "backoff_max_s": 0.05,
                                    "cache": str(cache)}))
    return path


def test_two_processes_share_one_cache(tmp_path, pair_files):
    answers, reference = pair_files(20)
    cache = tmp_path / "shared.sqlite"
    with FaultServer(fault_rate=0.3, seed=5, delay_s=0.01) as server:
        config = _write_config(tmp_path / "j.yaml", server, cache, 4)
        procs = [subprocess.Popen(_cli_cmd(answers, reference, config, tmp_path / f"out{i}"), env=_env(),
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE) for i in range(2)]
        outputs = [p.communicate(timeout=120) for p in procs]
        assert [p.returncode for p in procs] == [0, 0], [o[1].decode()[-2000:] for o in outputs]
    rows0, rows1 = read_rows(tmp_path / "out0"), read_rows(tmp_path / "out1")
    assert len(rows0) == 40 and not [r["error"] for r in rows0 + rows1 if r["error"]]
    assert strip_cached(rows0) == strip_cached(rows1)
    with sqlite3.connect(cache) as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert db.execute("SELECT COUNT(*) FROM calls").fetchone()[0] == 40


def test_kill_9_then_rerun_repeats_no_finished_call(tmp_path, pair_files):
    answers, reference = pair_files(30)
    cache = tmp_path / "cache.sqlite"
    faults = ("429", "500", "garbage", "truncated", "empty")  # timeouts are covered elsewhere and cost seconds
    with FaultServer(fault_rate=0.2, seed=6, delay_s=0.05, faults=faults) as server:
        config = _write_config(tmp_path / "j.yaml", server, cache, 2)
        proc = subprocess.Popen(_cli_cmd(answers, reference, config, tmp_path / "out"), env=_env(),
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while sum(server.ok_counts().values()) < 20 and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        assert not (tmp_path / "out" / "manifest.json").exists()
        with sqlite3.connect(cache) as db:
            finished = {row[0] for row in db.execute("SELECT key FROM calls")}
        assert 15 <= len(finished) < 60
        logged = len(server.log)
        cfg = parse_judge_spec(None, config)
        run_judge(answers, reference, cfg, tmp_path / "out")
        rerun_keys = {k for k, _ in server.log[logged:]}
        # Map every finished cache entry to the request the server saw for it.
        model, ref = pair_answers(answers, reference)
        template = load_template(cfg.template)
        server_key_of = {}
        for job in build_jobs(model, ref):
            messages = render(template, job.prompt, job.answer_a, job.answer_b, "logprob")
            identity = f"openai:fault@{endpoint_key(server.base_url)}"  # the model AND its endpoint
            server_key_of[call_key(identity, cfg, template, job, "logprob", messages)] = request_key(messages)
        assert set(server_key_of) >= finished
        assert not rerun_keys & {server_key_of[k] for k in finished}
        assert len(rerun_keys) == 60 - len(finished)
        # An uninterrupted run on a fresh cache gives the same judgments.
        fresh = cfg.model_copy(update={"cache": str(tmp_path / "fresh.sqlite")})
        run_judge(answers, reference, fresh, tmp_path / "clean")
    assert strip_cached(read_rows(tmp_path / "out")) == strip_cached(read_rows(tmp_path / "clean"))


def test_cli_all_calls_failing_is_an_error_with_the_reason(tmp_path, pair_files, capsys):
    answers, reference = pair_files(2)
    with FaultServer() as server:
        url = server.base_url  # closed on exit: every call gets "connection refused"
    code = main(["judge", "--answers", str(answers), "--reference", str(reference), "--judge", f"openai:x@{url}",
                 "--cache", str(tmp_path / "c.sqlite"), "--out", str(tmp_path / "out"), "--judge-config",
                 str(_write_settings(tmp_path))])
    err = capsys.readouterr().err
    assert code == 2 and "no prompt could be judged: all 2 failed" in err and "ConnectError" in err
    assert len(read_rows(tmp_path / "out")) == 4  # the failures are still written, never dropped


def _write_settings(tmp_path: Path) -> Path:
    path = tmp_path / "settings.yaml"
    path.write_text("base_url: http://unused\nmax_retries: 1\nbackoff_base_s: 0.01\n")
    return path


def test_identical_answers_are_ties_without_judge_calls(tmp_path, write_jsonl):
    model, reference = answer_rows(6, model=True), answer_rows(6, model=False)
    for i in (1, 4):  # the same text, only the surrounding whitespace differs
        reference[i]["answer"] = f"  {model[i]['answer']}\n"
    answers, ref = write_jsonl("answers.jsonl", model), write_jsonl("reference.jsonl", reference)
    with FaultServer(fault_rate=0.0) as server:
        score = run_judge(answers, ref, fast_cfg(server, tmp_path), tmp_path / "out").dump()
        assert server.requests() == 8  # 4 judged prompts x 2 orders; p1 and p4 never reach the judge
    rows = read_rows(tmp_path / "out")
    assert len(rows) == 12
    same = [r for r in rows if r["identical"]]
    assert sorted({r["id"] for r in same}) == ["p1", "p4"] and len(same) == 4
    for row in same:
        assert (row["preference"], row["verdict"], row["mode"], row["error"]) == (0.5, "tie", "identical", None)
        assert row["raw"] == "" and row["probs"] is None and row["usage"] == {"prompt_tokens": 0, "completion_tokens": 0}
    assert all(r["mode"] == "logprob" and r["probs"] for r in rows if not r["identical"])
    # By hand: the longer answer wins with preference `win`; even ids (p0, p2) are the model's, odd (p3, p5) not.
    win = (LETTER_PROBS["win"] + LETTER_PROBS["win_space"]) / 0.95 + 0.5 * LETTER_PROBS["tie"] / 0.95
    values = {"p0": win, "p1": 0.5, "p2": win, "p3": 1 - win, "p4": 0.5, "p5": 1 - win}
    assert {e["id"]: e["value"] for e in score["per_prompt"]} == pytest.approx(values)
    assert score["score"] == pytest.approx(round(100 * sum(values.values()) / 6, 2))
    assert (score["wins"], score["ties"], score["losses"]) == (2, 2, 2) and score["failures"]["count"] == 0
    assert score["identical_pairs"] == {"count": 2, "ids": ["p1", "p4"]}
    assert score["order_flip_rate"] == 0.0 and score["judge"]["mode"] == "logprob"
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert (manifest["calls"], manifest["failed_calls"], manifest["identical_pairs"]) == (8, 0, 2)


def test_all_identical_answers_start_no_judge(tmp_path, write_jsonl, capsys):
    model = answer_rows(3, model=True)
    answers, ref = write_jsonl("answers.jsonl", model), write_jsonl("reference.jsonl", model)
    # Nothing listens on this address: any attempt to judge would fail the run with api errors.
    with FaultServer() as server:
        base_url = server.base_url
    score = run_judge(answers, ref, fast_cfg(server, tmp_path, base_url=base_url, max_retries=0), tmp_path / "out").dump()
    assert score["score"] == 50.0 and score["n"] == 3 and score["ties"] == 3 and score["failures"]["count"] == 0
    assert score["identical_pairs"]["count"] == 3 and score["judge"]["mode"] == "identical"
    assert score["order_flip_rate"] is None and score["first_slot_win_rate"] is None
    assert server.requests() == 0
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["calls"] == 0 and manifest["client"]["requests"] == 0
    code = main(["judge", "--answers", str(answers), "--reference", str(ref), "--judge", f"openai:fault@{base_url}",
                 "--cache", str(tmp_path / "cli.sqlite"), "--out", str(tmp_path / "cli")])
    out = " ".join(capsys.readouterr().out.split())
    assert code == 0 and "score 50.0" in out and "3 prompt(s) with the same answer as the reference" in out


def test_two_endpoints_serving_the_same_model_name_never_share_cached_verdicts(pair_files, tmp_path):
    """Issue 16: the cache key named the judge by model only, so a second judge at another base_url was answered
    from the first judge's cache and its score.json reported the first judge's verdicts."""
    answers, reference = pair_files(4)
    with FaultServer(fault_rate=0.0) as first, FaultServer(fault_rate=0.0, logprobs=False) as second:
        run_judge(answers, reference, fast_cfg(first, tmp_path), tmp_path / "a")
        score = run_judge(answers, reference, fast_cfg(second, tmp_path), tmp_path / "b").dump()
        assert second.requests() > 0  # asked, not answered from the first server's cache entries
    manifest = json.loads((tmp_path / "b" / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["client"]["cache_hits"] == 0
    # The second server gives no logprobs: its verdicts are parsed ones, as its own score.json says.
    assert score["judge"]["mode"] == "verdict" and {r["mode"] for r in read_rows(tmp_path / "b")} == {"verdict"}


def test_credentials_in_base_url_reach_no_key_and_no_file(pair_files, tmp_path):
    plain = JudgeConfig(backend="openai", base_url="http://127.0.0.1:9/v1", model="m")
    secret = JudgeConfig(backend="openai", base_url="http://user:s3cret@127.0.0.1:9/v1/", model="m")
    assert secret.judge_key() == plain.judge_key()  # the same server, whatever the password
    assert "s3cret" not in json.dumps(secret.public()) and "s3cret" not in secret.display_name()
    other = JudgeConfig(backend="openai", base_url="http://127.0.0.1:10/v1", model="m")
    assert other.judge_key() != plain.judge_key()
