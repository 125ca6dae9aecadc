"""Regression tests for issue 16's defects: trusted-but-broken data folders, wrong numbers that passed
silently, URL credentials in the clear, tracebacks, slow failures and messages that pointed the wrong way."""

from __future__ import annotations

import gzip
import json
import math
import time
from pathlib import Path

import pytest
from fault_server import FaultServer

from rualign.cli import main
from rualign.config import load_yaml
from rualign.errors import ConfigError, DataError, RualignError

SS_ROW = {"messages": [{"role": "user", "content": "Как дела?"}, {"role": "assistant", "content": "Хорошо, спасибо!"}],
          "opus_score": 9, "source": "s"}


def _recipe(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "recipe.yaml"
    path.write_text(body, encoding="utf-8")
    return path


# ------------------------------------------------------------------ class 2: manifests vouch with sha256

def test_data_manifest_hashes_files_and_a_truncated_train_jsonl_is_refused(tmp_path):
    from rualign.data.recipe import run_recipe
    from rualign.data.schema import Recipe
    from rualign.runs import is_finished, read_manifest, sha256_file
    from rualign.train.methods import get_method
    from rualign.train.run import load_stage_data
    from rualign.train.schema import StageConfig

    recipe = Recipe.model_validate({"val_fraction": 0, "sources": [
        {"name": "ss", "format": "saiga_scored", "path": "bundled:saiga_scored", "sample": {"count": 6}}]})
    out = tmp_path / "data"
    manifest = run_recipe(recipe, out)
    files = read_manifest(out).files
    assert files["train.jsonl"]["sha256"] == sha256_file(out / "train.jsonl") and len(files["train.jsonl"]["sha256"]) == 64
    stage = StageConfig.model_validate({"name": "s", "method": "sft", "data": str(out)})
    load_stage_data(stage, get_method("sft"), tmp_path)  # intact: accepted
    text = (out / "train.jsonl").read_bytes()
    (out / "train.jsonl").write_bytes(text[: len(text) // 2])
    with pytest.raises(RualignError, match="cut short"):
        load_stage_data(stage, get_method("sft"), tmp_path)
    assert not is_finished(out, manifest["config_hash"])
    rebuilt = run_recipe(recipe, out)  # not trusted as cached: rebuilt whole
    assert not rebuilt.get("cached") and (out / "train.jsonl").read_bytes() == text


# ------------------------------------------------------------------ class 3: wrong numbers

@pytest.mark.parametrize("score", ["NaN", "Infinity", "-Infinity", "1e999"])
def test_non_finite_json_numbers_are_refused_with_the_line(tmp_path, score):
    from rualign.config import load_yaml as _  # noqa: F401  (keeps import order stable)
    from rualign.data.recipe import run_recipe
    from rualign.data.schema import Recipe

    good = json.dumps(SS_ROW, ensure_ascii=False)
    bad = good.replace('"opus_score": 9', f'"opus_score": {score}')
    (tmp_path / "ss.jsonl").write_text(good + "\n" + bad + "\n", encoding="utf-8")
    recipe = Recipe.model_validate({"val_fraction": 0, "sources": [
        {"name": "ss", "format": "saiga_scored", "path": str(tmp_path / "ss.jsonl")}]})
    with pytest.raises(DataError) as info:
        run_recipe(recipe, None, dry_run=True)
    assert info.value.line == 2


@pytest.mark.parametrize("score", [0, 11, 2403, -1])
def test_opus_score_out_of_range_is_a_row_error(tmp_path, score):
    from rualign.data.recipe import run_recipe
    from rualign.data.schema import Recipe

    rows = [SS_ROW, {**SS_ROW, "messages": [{"role": "user", "content": "Ещё?"},
                                            {"role": "assistant", "content": "Да."}], "opus_score": score}]
    (tmp_path / "ss.jsonl").write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n")
    recipe = Recipe.model_validate({"val_fraction": 0, "on_error": "quarantine", "sources": [
        {"name": "ss", "format": "saiga_scored", "path": str(tmp_path / "ss.jsonl")}]})
    manifest = run_recipe(recipe, None, dry_run=True)
    assert manifest["counts"]["total"] == 1 and manifest["sources"]["ss"]["quarantined"] == 1


@pytest.mark.parametrize("key, value", [("weight", ".inf"), ("weight", ".nan"), ("epochs", ".inf"),
                                        ("seed", "-1"), ("lr", ".nan"), ("seed", "4294967296")])
def test_non_finite_and_out_of_range_config_numbers(tmp_path, capsys, key, value):
    if key == "weight":
        body = f"total: 4\nsources:\n  - {{name: a, format: saiga_scored, path: bundled:saiga_scored, weight: {value}}}\n"
        argv = ["data", str(_recipe(tmp_path, body)), "--dry-run"]
    elif key == "seed":
        body = f"seed: {value}\nsources:\n  - {{name: a, format: saiga_scored, path: bundled:saiga_scored}}\n"
        argv = ["data", str(_recipe(tmp_path, body)), "--dry-run"]
    else:
        cfg = tmp_path / "train.yaml"
        cfg.write_text(f"stages:\n  - {{name: s, method: sft, data: d, {key}: {value}}}\n")
        argv = ["train", str(cfg), "--out", str(tmp_path / "out")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and "Traceback" not in err and key in err
    assert not (tmp_path / "out").exists()


def test_duplicate_yaml_key_names_file_and_line(tmp_path):
    from rualign.data.schema import Recipe

    path = _recipe(tmp_path, "sources:\n  - {name: a, format: chat, path: x.jsonl}\nseed: 1\n"
                             "sources:\n  - {name: b, format: chat, path: y.jsonl}\n")
    with pytest.raises(ConfigError) as info:
        load_yaml(path, Recipe)
    assert info.value.line == 4 and "duplicate key 'sources'" in str(info.value) and str(path) in str(info.value)


def test_duplicate_key_in_an_experiment_and_a_nested_mapping(tmp_path):
    from rualign.pipeline import load_experiments

    path = tmp_path / "exp.yaml"
    path.write_text("name: e\neval:\n  prompts: p.jsonl\n  prompts: q.jsonl\n")
    with pytest.raises(ConfigError, match="duplicate key 'prompts'") as info:
        load_experiments(path)
    assert info.value.line == 4


def test_blacklist_patterns_are_matched_one_by_one():
    from rualign.data.filters import blacklist

    records = [{"kind": "chat", "messages": [{"role": "user", "content": "?"}, {"role": "assistant", "content": t}]}
               for t in ("xx bb yy", "nothing here", "BAR")]
    # joined with `|`, the second pattern's \1 would refer to the first group and "bb" would not match
    assert [r is not None for r in blacklist(records, [r"(a)\1", r"(b)\1"])] == [True, False, False]
    # an inline flag compiles on its own; joined, it is "global flags not at the start" (a traceback before)
    assert [r is not None for r in blacklist(records, ["zzz", "(?i)bar"])] == [False, False, True]


def test_blacklist_flag_in_the_middle_is_a_config_error(tmp_path, capsys):
    path = _recipe(tmp_path, "sources:\n  - {name: a, format: saiga_scored, path: bundled:saiga_scored, "
                             "filters: {blacklist: ['foo(?i)bar']}}\n")
    assert main(["data", str(path), "--dry-run"]) == 2
    assert "blacklist" in capsys.readouterr().err


@pytest.mark.parametrize("value", ["NaN", "2403", "-0.5", "\"0.5\""])
def test_compare_rejects_values_outside_0_1(tmp_path, capsys, value):
    good = {"per_prompt": [{"id": "a", "value": 0.5}, {"id": "b", "value": 1.0}]}
    (tmp_path / "a.json").write_text(json.dumps(good))
    (tmp_path / "b.json").write_text(json.dumps(good).replace("0.5", value, 1))
    assert main(["compare", str(tmp_path / "a.json"), str(tmp_path / "b.json")]) == 2
    assert "Traceback" not in capsys.readouterr().err


def test_writers_never_emit_bare_nan(tmp_path):
    from rualign.runs import read_jsonl, write_json, write_jsonl

    write_json(tmp_path / "m.json", {"loss": float("nan"), "ok": 1.5, "deep": [float("inf")]})
    assert json.loads((tmp_path / "m.json").read_text()) == {"loss": None, "ok": 1.5, "deep": [None]}
    write_jsonl(tmp_path / "r.jsonl", [{"x": float("-inf")}])
    assert read_jsonl(tmp_path / "r.jsonl") == [{"x": None}]


# ------------------------------------------------------------------ class 4: URL credentials

def test_redact_url_forms():
    from rualign.redact import redact, redact_text, redact_url

    assert redact_url("http://user:token@host:8/v1") == "http://***@host:8/v1"
    assert redact_url("https://host/v1?api_key=SECRET&x=1") == "https://host/v1?api_key=***&x=1"
    assert redact_url("http://127.0.0.1:8000/v1") == "http://127.0.0.1:8000/v1"
    assert "tok" not in redact_text("error: http://u:tok@h/v1: refused; see https://a:b@c")
    assert redact({"a": ["openai:m@http://u:tok@h/v1"]}) == {"a": ["openai:m@http://***@h/v1"]}


def test_url_credentials_never_stored_or_printed(tmp_path, capsys, write_jsonl):
    from test_judge_run import answer_rows

    answers = write_jsonl("answers.jsonl", answer_rows(3, model=True))
    reference = write_jsonl("reference.jsonl", answer_rows(3, model=False))
    secret = "tok-SECRET-99"
    with FaultServer(fault_rate=0.0) as server:
        url = server.base_url.replace("http://", f"http://user:{secret}@") + "/v1"
        code = main(["judge", "--answers", str(answers), "--reference", str(reference), "--judge",
                     f"openai:fault@{url}", "--out", str(tmp_path / "out"), "--cache", str(tmp_path / "c.sqlite")])
        assert code == 0
    printed = capsys.readouterr()
    assert secret not in printed.out + printed.err
    for path in (tmp_path / "out").iterdir():
        assert secret not in path.read_text(encoding="utf-8"), path
    assert "***@" in (tmp_path / "out" / "manifest.json").read_text()


def test_dry_run_plan_and_errors_hide_url_credentials(tmp_path, capsys):
    exp = tmp_path / "exp.yaml"
    exp.write_text("name: e\neval:\n  prompts: bundled:eval_prompts\n  reference: {answers: ref.jsonl}\n"
                   "  judge: openai:m@http://user:tok-SECRET@127.0.0.1:9/v1\n")
    (tmp_path / "ref.jsonl").write_text('{"id": "x", "answer": "a", "prompt": "p"}\n')
    assert main(["run", str(exp), "--dry-run", "--out", str(tmp_path / "runs")]) == 0
    printed = capsys.readouterr()
    assert "tok-SECRET" not in printed.out + printed.err and "***@127.0.0.1" in printed.out


# ------------------------------------------------------------------ class 5: tracebacks without --debug

class OddServer(FaultServer):
    """Answers with a given defect: `"usage": "lots"`, or a logprob of 1000."""

    def __init__(self, defect: str):
        super().__init__(fault_rate=0.0)
        self.defect = defect

    def completion(self, body: dict) -> dict:
        out = super().completion(body)
        if self.defect == "usage":
            out["usage"] = "lots"
        elif self.defect == "logprob":
            for entry in out["choices"][0].get("logprobs", {}).get("content", [{}])[0].get("top_logprobs", []):
                entry["logprob"] = 1000
        return out


def test_usage_lots_is_counted_as_zero_and_judged(tmp_path, write_jsonl):
    from test_judge_run import answer_rows, fast_cfg

    from rualign.eval.judge import run_judge

    answers = write_jsonl("answers.jsonl", answer_rows(2, model=True))
    reference = write_jsonl("reference.jsonl", answer_rows(2, model=False))
    with OddServer("usage") as server:
        score = run_judge(answers, reference, fast_cfg(server, tmp_path), tmp_path / "out").dump()
    assert score["n"] == 2 and score["failures"]["count"] == 0


def test_logprob_1000_is_a_failure_and_never_cached(tmp_path, write_jsonl):
    from test_judge_run import answer_rows, fast_cfg

    from rualign.eval.cache import JudgeCache
    from rualign.eval.judge import run_judge

    answers = write_jsonl("answers.jsonl", answer_rows(2, model=True))
    reference = write_jsonl("reference.jsonl", answer_rows(2, model=False))
    with OddServer("logprob") as server:
        score = run_judge(answers, reference, fast_cfg(server, tmp_path), tmp_path / "out").dump()
    assert score["n"] == 0 and score["failures"]["count"] == 2  # both prompts, each order failed
    assert "malformed judge response" in json.dumps(score["failures"])
    with JudgeCache(tmp_path / "cache.sqlite") as cache:
        assert len(cache) == 0  # a rerun asks again instead of crashing on a cached bad value


def test_judge_template_with_invalid_yaml(tmp_path, capsys, write_jsonl):
    from test_judge_run import answer_rows

    answers = write_jsonl("answers.jsonl", answer_rows(2, model=True))
    reference = write_jsonl("reference.jsonl", answer_rows(2, model=False))
    template = tmp_path / "t.yaml"
    template.write_text("version: [unclosed\nbody: x\n")
    cfg = tmp_path / "judge.yaml"
    cfg.write_text(f"base_url: http://127.0.0.1:9/v1\nmodel: m\ntemplate: {template}\n")
    assert main(["judge", "--answers", str(answers), "--reference", str(reference), "--judge", str(cfg),
                 "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "invalid YAML" in err and str(template) in err


@pytest.mark.parametrize("argv, flag", [(["--threads", "-1"], "--threads"), (["--limit", "0"], "--limit"),
                                        (["--seed", "-3"], "--seed"), (["--top-p", "nan"], "--top-p")])
def test_generate_argument_ranges_before_any_work(tmp_path, capsys, argv, flag):
    prompts = tmp_path / "p.jsonl"
    prompts.write_text('{"id": "1", "prompt": "x"}\n')
    assert main(["generate", "--model", "default", "--prompts", str(prompts), "--out", str(tmp_path / "a.jsonl"),
                 *argv]) == 2
    assert flag in capsys.readouterr().err and not (tmp_path / "a.jsonl").exists()


def _run_folder(root: Path, name: str, *, score=50.0, tokens=5) -> Path:
    folder = root / name
    (folder / "judge").mkdir(parents=True)
    (folder / "run.json").write_text(json.dumps({"name": name, "stages": []}))
    (folder / "answers.jsonl").write_text(json.dumps({"id": "a", "answer": "x", "answer_tokens": tokens}) + "\n")
    (folder / "judge" / "score.json").write_text(json.dumps({
        "score": score, "ci_low": 40.0, "ci_high": 60.0, "n": 1, "per_prompt": [{"id": "a", "value": 0.5}]}))
    return folder


@pytest.mark.parametrize("kind", ["string score", "string tokens", "score 2403"])
def test_report_refuses_wrong_types(tmp_path, capsys, kind):
    folder = _run_folder(tmp_path, "r", score="50" if kind == "string score" else 2403 if kind == "score 2403" else 50,
                         tokens="5" if kind == "string tokens" else 5)
    assert main(["report", str(folder), "--out", str(tmp_path / "rep")]) == 2
    assert "Traceback" not in capsys.readouterr().err


def test_report_with_dollar_in_run_name(tmp_path):
    folders = [_run_folder(tmp_path, "cost$5"), _run_folder(tmp_path, "a$b$c")]
    assert main(["report", *map(str, folders), "--out", str(tmp_path / "rep")]) == 0
    assert (tmp_path / "rep" / "plots").is_dir()


# ------------------------------------------------------------------ class 6: fail fast, locks, messages

def test_connection_refused_on_loopback_fails_fast(tmp_path, write_jsonl, capsys):
    import socket

    from test_judge_run import answer_rows

    from rualign.eval.judge import run_judge
    from rualign.eval.schema import JudgeConfig

    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    answers = write_jsonl("answers.jsonl", answer_rows(2, model=True))
    reference = write_jsonl("reference.jsonl", answer_rows(2, model=False))
    cfg = JudgeConfig(base_url=f"http://127.0.0.1:{port}/v1", model="m", cache=str(tmp_path / "c.sqlite"))
    started = time.monotonic()
    score = run_judge(answers, reference, cfg, tmp_path / "out").dump()
    assert time.monotonic() - started < 10  # was 7 attempts over ~45 s
    assert score["n"] == 0 and "nothing listens" in json.dumps(score["failures"])
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["client"]["requests"] == 4 and manifest["client"]["retries"] == 0  # one attempt per call
    assert main(["judge", "--answers", str(answers), "--reference", str(reference), "--judge",
                 f"openai:m@http://127.0.0.1:{port}/v1", "--out", str(tmp_path / "o2"),
                 "--cache", str(tmp_path / "c.sqlite")]) == 2
    assert "nothing listens" in capsys.readouterr().err


def test_unresolvable_host_is_not_retried():
    import asyncio

    from rualign.eval.client import CallFailed, ChatClient

    import socket

    import httpx

    attempts = []

    def handler(request):  # what the resolver says for a name that does not exist (no DNS needed here)
        attempts.append(request)
        raise httpx.ConnectError("[Errno -2] Name or service not known") from socket.gaierror(
            socket.EAI_NONAME, "Name or service not known")

    async def call():
        async with ChatClient("http://no-such-host.invalid/v1", "m", max_retries=6) as client:
            client._http = httpx.AsyncClient(transport=httpx.MockTransport(handler))
            await client.chat([{"role": "user", "content": "x"}])

    with pytest.raises(CallFailed, match="does not resolve"):
        asyncio.run(call())
    assert len(attempts) == 1


def test_second_run_on_the_same_store_refuses_clearly(tmp_path):
    from rualign.paths import exclusive_lock

    with exclusive_lock(tmp_path / "store", "the stage store"):
        with pytest.raises(RualignError, match="in use by pid"):
            with exclusive_lock(tmp_path / "store", "the stage store"):
                pass
    with exclusive_lock(tmp_path / "store", "the stage store"):  # released: free again
        pass


def test_rualign_run_refuses_a_store_another_process_holds(tmp_path, capsys):
    import subprocess
    import sys

    exp = tmp_path / "exp.yaml"
    exp.write_text("name: e\neval:\n  prompts: bundled:eval_prompts\n  reference: {answers: ref.jsonl}\n"
                   "  judge: llamacpp:default\n")
    (tmp_path / "ref.jsonl").write_text('{"id": "x", "answer": "a", "prompt": "p"}\n')
    store = tmp_path / "runs" / "_store"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from rualign.paths import exclusive_lock\n"
         "with exclusive_lock(sys.argv[1], 'the stage store'):\n    print('held', flush=True); time.sleep(60)",
         str(store)], stdout=subprocess.PIPE, text=True, env={**__import__("os").environ,
                                                              "PYTHONPATH": str(Path(__file__).parents[1] / "src")})
    try:
        assert holder.stdout.readline().strip() == "held"
        assert main(["run", str(exp), "--out", str(tmp_path / "runs")]) == 2
        err = capsys.readouterr().err
        assert f"in use by pid {holder.pid}" in err
    finally:
        holder.kill()
        holder.wait()
    assert not any((store / kind).exists() for kind in ("answers", "judge"))  # no stage started


@pytest.mark.parametrize("kind, expected", [("utf16", "UTF-16"), ("gzip", "gzip")])
def test_binary_or_utf16_file_is_named_as_such(tmp_path, capsys, kind, expected):
    text = json.dumps(SS_ROW, ensure_ascii=False) + "\n"
    data = text.encode("utf-16") if kind == "utf16" else gzip.compress(text.encode())
    (tmp_path / "ss.jsonl").write_bytes(data)
    path = _recipe(tmp_path, "sources:\n  - {name: a, format: saiga_scored, path: ss.jsonl}\n")
    assert main(["data", str(path), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert expected in err and "cp1251" not in err


def test_sharegpt_keys_are_shown(tmp_path):
    from rualign.data.formats import RowError, normalise

    with pytest.raises(RowError, match=r"has keys \['from', 'value'\].*rename from -> role"):
        normalise("chat", {"messages": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "yo"}]})


def test_conversation_starting_with_the_assistant_is_named_as_such():
    from rualign.data.formats import RowError, normalise
    from rualign.train.masks import assistant_char_spans

    messages = [{"role": "assistant", "content": "Здравствуйте"}, {"role": "user", "content": "Привет"},
                {"role": "assistant", "content": "Чем помочь?"}]
    with pytest.raises(RowError, match="starts with an assistant turn"):
        normalise("chat", {"messages": messages})
    with pytest.raises(RualignError, match="starts with an assistant turn"):
        assistant_char_spans(object(), messages)  # refused before the template is even rendered


def test_math_isfinite_guard_in_letter_probs_not_needed_after_validation():
    from rualign.eval.judge_backends import checked_value
    from rualign.eval.client import CallFailed

    good = {"text": "A", "top_logprobs": [{"token": "A", "logprob": -0.1}], "usage": {"prompt_tokens": 1,
                                                                                      "completion_tokens": 1}}
    assert checked_value(good).dump() == {**good, "finish_reason": None}
    for bad in ({**good, "top_logprobs": [{"token": "A", "logprob": 1000}]},
                {**good, "top_logprobs": [{"token": "A", "logprob": math.nan}]},
                {**good, "usage": "lots"}, {**good, "text": None}, "x"):
        with pytest.raises(CallFailed):
            checked_value(bad)
