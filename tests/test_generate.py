"""Prompt loaders, batched generation (left padding), resume, answer_tokens, the generate CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rualign.cli import main
from rualign.errors import RualignError
from rualign.eval.prompts_io import load_prompts, resolve_prompts_path

# ---------------------------------------------------------------- prompt files


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_alpaca_json_list_with_input_and_ids(tmp_path):
    rows = [{"instruction": "Переведи на английский.", "input": "Кошка спит.", "category": "translation",
             "id": "t1"},
            {"instruction": "Назови столицу России.", "question_id": 7},
            {"instruction": "Без id", "input": ""}]
    prompts = load_prompts(_write(tmp_path / "p.json", json.dumps(rows, ensure_ascii=False)))
    assert prompts[0] == {"id": "t1", "category": "translation",
                          "messages": [{"role": "user", "content": "Переведи на английский.\n\nКошка спит."}]}
    assert prompts[1]["id"] == "7" and prompts[1]["category"] is None
    assert prompts[2]["messages"][0]["content"] == "Без id"
    assert len(prompts[2]["id"]) == 12  # content id, stable across files and orders
    again = load_prompts(_write(tmp_path / "q.json", json.dumps(rows[::-1], ensure_ascii=False)))
    assert again[0]["id"] == prompts[2]["id"]


def test_jsonl_prompt_string_and_message_list(tmp_path, write_jsonl):
    path = write_jsonl("p.jsonl", [
        {"id": "a", "prompt": "Привет!"},
        {"id": "b", "prompt": [{"role": "system", "content": "Отвечай кратко."},
                               {"role": "user", "content": "Сколько будет 2+2?"},
                               {"role": "assistant", "content": "4"},
                               {"role": "user", "content": "А 3+3?"}], "category": "math"},
    ])
    prompts = load_prompts(path)
    assert prompts[0]["messages"] == [{"role": "user", "content": "Привет!"}]
    assert [m["role"] for m in prompts[1]["messages"]] == ["system", "user", "assistant", "user"]
    assert prompts[1]["category"] == "math"


def test_ru_arena_turns_use_the_first_turn(tmp_path, write_jsonl):
    path = write_jsonl("arena.jsonl", [
        {"question_id": 101, "category": "writing", "turns": [{"content": "Напиши стих."}, {"content": "Короче."}]},
        {"question_id": 102, "turns": ["Просто строка"]},
    ])
    prompts = load_prompts(path)
    assert prompts[0]["id"] == "101" and prompts[0]["category"] == "writing"
    assert prompts[0]["messages"] == [{"role": "user", "content": "Напиши стих."}]
    assert prompts[0]["meta"] == {"dropped_turns": 1}
    assert prompts[1]["messages"][0]["content"] == "Просто строка" and "meta" not in prompts[1]


def test_bundled_eval_prompts():
    try:
        path = resolve_prompts_path("bundled:eval_prompts")
    except RualignError:
        pytest.skip("bundled eval prompts not shipped in this checkout yet")
    prompts = load_prompts("bundled:eval_prompts")
    assert path.name.startswith("eval_prompts")
    assert len(prompts) >= 10 and len({p["id"] for p in prompts}) == len(prompts)
    assert all(p["messages"][-1]["role"] == "user" and p["messages"][-1]["content"].strip() for p in prompts)
    with pytest.raises(RualignError, match="no bundled prompt set named 'nope'"):
        resolve_prompts_path("bundled:nope")


@pytest.mark.parametrize("lines, message, line", [
    (['{"id": "a", "prompt": "x"}', '{"id": "b", "prompt": '], "malformed JSON", 2),
    (['{"id": "a", "prompt": "x"}', '{"id": "b", "text": "y"}'], "no prompt field", 2),
    (['{"id": "a", "prompt": "x"}', '{"id": "a", "prompt": "y"}'], "duplicate prompt id 'a'", 2),
    (['{"id": "a", "prompt": "   "}'], "empty prompt", 1),
    (['{"id": "a", "instruction": ""}'], "empty or non-string 'instruction'", 1),
    (['{"id": "a", "prompt": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}'],
     "must end with a non-empty user turn", 1),
    (['{"id": "a", "prompt": [{"role": "robot", "content": "q"}]}'], "message 0", 1),
    (['{"id": "a", "prompt": "x"}', '"just a string"'], "must be a JSON object, got str", 2),
])
def test_prompt_errors_name_file_and_line(tmp_path, lines, message, line):
    path = _write(tmp_path / "bad.jsonl", "\n".join(lines) + "\n")
    with pytest.raises(RualignError, match=message) as info:
        load_prompts(path)
    assert info.value.path == str(path) and info.value.line == line
    assert f"bad.jsonl:{line}:" in info.value.render()


def test_missing_and_empty_files(tmp_path):
    with pytest.raises(RualignError, match="does not exist"):
        load_prompts(tmp_path / "none.json")
    with pytest.raises(RualignError, match="no prompts"):
        load_prompts(_write(tmp_path / "empty.jsonl", "\n"))


# ---------------------------------------------------------------- generation with a tiny model

PROMPTS = [
    {"id": "short", "messages": [{"role": "user", "content": "Привет"}], "category": "chat"},
    {"id": "long", "messages": [{"role": "user", "content": "Расскажи подробно, как устроена солнечная система "
                                                            "и почему планеты вращаются вокруг Солнца."}],
     "category": "science"},
    {"id": "mid", "messages": [{"role": "user", "content": "Назови три русских поэта."}], "category": None},
    {"id": "multi", "messages": [{"role": "system", "content": "Ты помощник."},
                                 {"role": "user", "content": "2+2?"}], "category": "math"},
    {"id": "tiny", "messages": [{"role": "user", "content": "Да?"}], "category": None},
]


@pytest.fixture(scope="module")
def varied_model_dir(tiny_model_dir, tmp_path_factory):
    """The shared tiny model ties its head to the embeddings, so greedy decoding just repeats the last
    prompt token ("\n"); an untied random head gives context-dependent tokens, which the batching test needs."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    out = tmp_path_factory.mktemp("varied-tiny")
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=1024,
                         tie_word_embeddings=False, initializer_range=0.5, eos_token_id=tokenizer.eos_token_id,
                         bos_token_id=tokenizer.bos_token_id, pad_token_id=tokenizer.pad_token_id)
    LlamaForCausalLM(config).save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def tiny_backend(varied_model_dir):
    from rualign.eval.backends import HFBackend

    return HFBackend(str(varied_model_dir), chat_template="chatml_no_system", batch_size=3, bf16="off")


@pytest.fixture(scope="module")
def counter(tiny_backend):
    from rualign.eval.generate import TokenCounter

    return TokenCounter("default", tokenizer=tiny_backend.tokenizer)


def test_batched_left_padded_greedy_equals_one_at_a_time(tiny_backend):
    from rualign.eval.backends import GenParams

    params = GenParams(max_new_tokens=10)
    batched = tiny_backend.generate([p["messages"] for p in PROMPTS], params)
    singles = [tiny_backend.generate([p["messages"]], params)[0] for p in PROMPTS]
    assert [c.text for c in batched] == [c.text for c in singles]
    assert [c.completion_tokens for c in batched] == [c.completion_tokens for c in singles]
    assert [c.finish_reason for c in batched] == [c.finish_reason for c in singles]
    assert all(c.text for c in batched)  # a random model still emits text; padding never leaks into it
    assert len({c.text for c in batched}) > 1


def test_stop_token_cuts_answer_and_pad_is_not_a_stop(tiny_backend):
    tok = tiny_backend.tokenizer
    assert tiny_backend.pad_id not in tiny_backend.stop_ids
    words = tok("Привет мир", add_special_tokens=False)["input_ids"]
    stop = min(tiny_backend.stop_ids)
    done = tiny_backend._completion(words + [stop] + words + [tiny_backend.pad_id] * 3)
    assert done.finish_reason == "stop" and done.text == "Привет мир" and done.completion_tokens == len(words)
    cut = tiny_backend._completion(list(words))
    assert cut.finish_reason == "length" and cut.completion_tokens == len(words)


class _Counting:
    """Wraps a backend: counts the prompts it answers and can fail after N batches (a simulated kill)."""

    def __init__(self, inner, fail_after: int | None = None):
        self.inner, self.fail_after, self.batches, self.answered = inner, fail_after, 0, []
        self.name, self.model, self.adapter, self.batch_size = inner.name, inner.model, inner.adapter, 2

    def settings(self):
        return self.inner.settings()

    def prompt_length(self, messages):
        return self.inner.prompt_length(messages)

    def generate(self, batch, params):
        if self.fail_after is not None and self.batches >= self.fail_after:
            raise KeyboardInterrupt
        self.batches += 1
        self.answered += [m[-1]["content"] for m in batch]
        return self.inner.generate(batch, params)


def test_resume_answers_only_missing_ids_and_gives_identical_output(tmp_path, tiny_backend, counter):
    from rualign.eval.backends import GenParams
    from rualign.eval.generate import generate_answers, work_path

    params = GenParams(max_new_tokens=6)
    clean = tmp_path / "clean" / "answers.jsonl"
    generate_answers(PROMPTS, _Counting(tiny_backend), params, clean, counter=counter)

    out = tmp_path / "resumed" / "answers.jsonl"
    with pytest.raises(KeyboardInterrupt):
        generate_answers(PROMPTS, _Counting(tiny_backend, fail_after=1), params, out, counter=counter)
    assert not out.exists()
    partial = [json.loads(line) for line in work_path(out).read_text(encoding="utf-8").splitlines()]
    assert len(partial) == 2
    with open(work_path(out), "a", encoding="utf-8") as handle:
        handle.write('{"id": "torn", "answ')  # a kill mid-line must not break the resume

    second = _Counting(tiny_backend)
    summary = generate_answers(PROMPTS, second, params, out, counter=counter)
    assert summary.reused == 2 and summary.generated == 3 and len(second.answered) == 3
    assert out.read_text(encoding="utf-8") == clean.read_text(encoding="utf-8")
    assert not work_path(out).exists()
    assert [json.loads(line)["id"] for line in out.read_text(encoding="utf-8").splitlines()] == \
        [p["id"] for p in PROMPTS]

    # Same settings again: nothing to do. Other settings: every answer is stale and regenerated.
    third = _Counting(tiny_backend)
    assert generate_answers(PROMPTS, third, params, out, counter=counter).generated == 0
    fourth = _Counting(tiny_backend)
    summary = generate_answers(PROMPTS, fourth, GenParams(max_new_tokens=3), out, counter=counter)
    assert summary.stale == 5 and summary.generated == 5


def test_records_follow_the_format_and_count_tokens(tmp_path, tiny_backend, counter):
    from rualign.eval.backends import GenParams
    from rualign.eval.generate import generate_answers

    out = tmp_path / "answers.jsonl"
    generate_answers(PROMPTS[:2], tiny_backend, GenParams(max_new_tokens=5, seed=3), out, counter=counter)
    records = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    for record, prompt in zip(records, PROMPTS[:2]):
        assert set(record) == {"id", "prompt", "category", "answer", "answer_tokens", "tokenizer",
                               "finish_reason", "generator", "params", "version"}
        assert record["prompt"] == prompt["messages"] and record["category"] == prompt["category"]
        expected = len(tiny_backend.tokenizer(record["answer"], add_special_tokens=False)["input_ids"])
        assert record["answer_tokens"] == expected and 0 < expected <= 6
        assert record["tokenizer"].startswith("default@sha256:") and record["finish_reason"] in ("stop", "length")
        assert record["generator"] == {"backend": "hf", "model": tiny_backend.model, "adapter": None}
        assert record["params"]["max_new_tokens"] == 5 and record["params"]["seed"] == 3
        assert record["params"]["chat_template"] == "chatml_no_system"
        assert record["params"]["device"] == "cpu" and record["params"]["dtype"] == "float32"
        assert record["params"]["autocast"] is None


def test_sampling_is_seeded(tiny_backend):
    from rualign.eval.backends import GenParams

    batch = [p["messages"] for p in PROMPTS[:2]]
    first = tiny_backend.generate(batch, GenParams(max_new_tokens=8, temperature=1.0, seed=1))
    again = tiny_backend.generate(batch, GenParams(max_new_tokens=8, temperature=1.0, seed=1))
    other = tiny_backend.generate(batch, GenParams(max_new_tokens=8, temperature=1.0, seed=2))
    assert [c.text for c in first] == [c.text for c in again]
    assert [c.text for c in first] != [c.text for c in other]


def test_a_sampled_answer_does_not_depend_on_its_batch(tiny_backend):
    from rualign.eval.backends import GenParams

    params = GenParams(max_new_tokens=8, temperature=1.0, top_p=0.9, seed=3)
    together = tiny_backend.generate([p["messages"] for p in PROMPTS], params)
    alone = [tiny_backend.generate([p["messages"]], params)[0] for p in PROMPTS]
    assert [c.text for c in together] == [c.text for c in alone]  # seeded per prompt, not per batch


def test_cli_generate_end_to_end(tmp_path, tiny_model_dir, write_jsonl, capsys, monkeypatch):
    monkeypatch.setenv("RUALIGN_QUIET", "0")  # `-q` below sets it for the process; restored after the test
    prompts = write_jsonl("p.jsonl", [{"id": p["id"], "prompt": p["messages"]} for p in PROMPTS[:3]])
    out = tmp_path / "run" / "answers.jsonl"
    argv = ["-q", "generate", "--model", str(tiny_model_dir), "--prompts", str(prompts), "--out", str(out),
            "--max-new-tokens", "4", "--batch-size", "2", "--chat-template", "chatml_no_system", "--bf16", "off"]
    assert main(argv) == 0
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert [r["id"] for r in rows] == ["short", "long", "mid"]
    assert all(r["finish_reason"] in ("stop", "length") for r in rows)
    capsys.readouterr()
    monkeypatch.setenv("RUALIGN_QUIET", "0")
    assert main(argv[1:]) == 0  # without -q the summary is printed (stderr)
    err = capsys.readouterr().err
    assert "3 answers" in err and "generated 0, reused 3" in err


def test_cli_errors_are_clear(tmp_path, write_jsonl, capsys):
    prompts = write_jsonl("p.jsonl", ['{"id": "a", "prompt": "x"}', "{oops"])
    assert main(["generate", "--model", "default", "--prompts", str(prompts), "--out", str(tmp_path / "a.jsonl")]) == 2
    assert "p.jsonl:2: malformed JSON" in capsys.readouterr().err
    good = write_jsonl("g.jsonl", [{"id": "a", "prompt": "x"}])
    assert main(["generate", "--model", "m", "--backend", "openai", "--prompts", str(good),
                 "--out", str(tmp_path / "b.jsonl")]) == 2
    assert "needs --base-url" in capsys.readouterr().err


def test_vllm_backend_without_gpu_is_a_clear_error():
    import torch

    from rualign.eval.backends import VLLMBackend

    if torch.cuda.is_available():
        pytest.skip("a GPU is visible")
    with pytest.raises(RualignError, match="vllm|CUDA GPU"):
        VLLMBackend("default")


@pytest.mark.slow
def test_default_model_answers_russian_prompts_deterministically(tmp_path):
    import torch

    from rualign.eval.backends import GenParams, HFBackend
    from rualign.eval.generate import TokenCounter, generate_answers

    prompts = [{"id": "ru1", "messages": [{"role": "user", "content": "Как дела?"}], "category": None},
               {"id": "ru2", "messages": [{"role": "user", "content": "Что такое фотосинтез?"}], "category": None}]
    threads = torch.get_num_threads()
    try:  # one thread: on a shared 2-core CPU two spinning OpenMP threads made this 30x slower
        backend = HFBackend("default", batch_size=2, bf16="off", threads=1)
        counter = TokenCounter("default", tokenizer=backend.tokenizer)
        first = generate_answers(prompts, backend, GenParams(max_new_tokens=12), tmp_path / "a.jsonl",
                                 counter=counter)
        generate_answers(prompts, backend, GenParams(max_new_tokens=12), tmp_path / "b.jsonl", counter=counter)
    finally:
        torch.set_num_threads(threads)
    assert first.generated == 2
    a = (tmp_path / "a.jsonl").read_text(encoding="utf-8")
    assert a == (tmp_path / "b.jsonl").read_text(encoding="utf-8")
    rows = [json.loads(line) for line in a.splitlines()]
    assert all(r["answer"].strip() and 0 < r["answer_tokens"] <= 13 for r in rows)


# ---------------------------------------------------------------- openai backend against a loopback server


class _Seen(list):
    fail_once: set


@pytest.fixture
def echo_server():
    """A minimal OpenAI-compatible server on 127.0.0.1: answers 'echo: <last user turn>' and records requests."""
    import http.server
    import threading

    seen = _Seen()
    fail_once: set[str] = set()  # prompts answered with HTTP 500 the first time they are asked

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 (http.server API)
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            seen.append({"path": self.path, "auth": self.headers.get("Authorization"), "body": body})
            if body["messages"][-1]["content"] in fail_once:
                fail_once.discard(body["messages"][-1]["content"])
                self.send_response(500)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            text = "echo: " + body["messages"][-1]["content"]
            finish = "length" if body["max_tokens"] < 5 else "stop"
            payload = {"choices": [{"message": {"role": "assistant", "content": text}, "finish_reason": finish}],
                       "usage": {"prompt_tokens": 3, "completion_tokens": 4}}
            data = json.dumps(payload).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    seen.fail_once = fail_once  # type: ignore[attr-defined]
    yield f"http://127.0.0.1:{server.server_address[1]}", seen
    server.shutdown()
    server.server_close()


def test_openai_backend_against_loopback_server(tmp_path, echo_server, monkeypatch, write_jsonl):
    base, seen = echo_server
    monkeypatch.setenv("RUALIGN_TEST_KEY", "secret-value-123")
    prompts = write_jsonl("p.jsonl", [{"id": "a", "prompt": "Привет"}, {"id": "b", "prompt": "Пока"}])
    out = tmp_path / "answers.jsonl"
    assert main(["-q", "generate", "--backend", "openai", "--model", "served-model", "--base-url", base + "/",
                 "--api-key-env", "RUALIGN_TEST_KEY", "--prompts", str(prompts), "--out", str(out),
                 "--max-new-tokens", "50", "--seed", "5"]) == 0
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert [r["answer"] for r in rows] == ["echo: Привет", "echo: Пока"]
    assert all(r["finish_reason"] == "stop" and r["answer_tokens"] > 0 for r in rows)
    assert rows[0]["generator"] == {"backend": "openai", "model": "served-model", "adapter": None}
    assert rows[0]["params"]["base_url"] == base + "/v1"
    assert {s["path"] for s in seen} == {"/v1/chat/completions"}
    assert all(s["auth"] == "Bearer secret-value-123" for s in seen)
    assert seen[0]["body"]["max_tokens"] == 50 and seen[0]["body"]["seed"] == 5
    assert "secret-value-123" not in out.read_text(encoding="utf-8")


def test_openai_backend_missing_key_env_is_an_error(tmp_path, write_jsonl, monkeypatch, capsys):
    monkeypatch.delenv("RUALIGN_ABSENT_KEY", raising=False)
    prompts = write_jsonl("p.jsonl", [{"id": "a", "prompt": "x"}])
    assert main(["generate", "--backend", "openai", "--model", "m", "--base-url", "http://127.0.0.1:9",
                 "--api-key-env", "RUALIGN_ABSENT_KEY", "--prompts", str(prompts),
                 "--out", str(tmp_path / "a.jsonl")]) == 2
    assert "the environment variable RUALIGN_ABSENT_KEY is not set" in capsys.readouterr().err


def test_lora_adapter_is_applied_and_recorded(tmp_path, varied_model_dir, tiny_backend, counter):
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from rualign.eval.backends import GenParams, HFBackend
    from rualign.eval.generate import generate_answers

    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(varied_model_dir)
    # init_lora_weights=False: random B as well as A, so the adapter really changes the logits
    peft_model = get_peft_model(base, LoraConfig(r=4, lora_alpha=64, target_modules=["q_proj", "v_proj"],
                                                 init_lora_weights=False))
    adapter_dir = tmp_path / "adapter"
    peft_model.save_pretrained(adapter_dir)

    adapted = HFBackend(str(varied_model_dir), adapter=str(adapter_dir), chat_template="chatml_no_system",
                        batch_size=3, bf16="off")
    params = GenParams(max_new_tokens=8)
    batch = [p["messages"] for p in PROMPTS]
    with_adapter = adapted.generate(batch, params)
    assert [c.text for c in with_adapter] != [c.text for c in tiny_backend.generate(batch, params)]
    assert [c.text for c in with_adapter] == [adapted.generate([m], params)[0].text for m in batch]
    out = tmp_path / "answers.jsonl"
    generate_answers(PROMPTS[:1], adapted, params, out, counter=counter)
    record = json.loads(out.read_text(encoding="utf-8"))
    assert record["generator"] == {"backend": "hf", "model": str(varied_model_dir), "adapter": str(adapter_dir)}


def test_json_list_errors_name_the_row(tmp_path):
    rows = [{"id": "a", "instruction": "Вопрос?"}, {"id": "b", "instruction": "   "}]
    path = _write(tmp_path / "bad.json", json.dumps(rows, ensure_ascii=False, indent=2))
    with pytest.raises(RualignError, match="row 2: empty or non-string 'instruction'") as info:
        load_prompts(path)
    assert info.value.path == str(path)
    dup = _write(tmp_path / "dup.json", json.dumps([{"id": "a", "instruction": "x"}, {"id": "a", "instruction": "y"}]))
    with pytest.raises(RualignError, match="row 2: duplicate prompt id 'a' \\(first seen at row 1\\)"):
        load_prompts(dup)
    broken = _write(tmp_path / "broken.json", '[\n  {"id": "a",\n  "instruction": }\n]')
    with pytest.raises(RualignError, match="malformed JSON") as info:
        load_prompts(broken)
    assert info.value.line == 3


def test_openai_failed_requests_keep_the_others_and_resume(tmp_path, echo_server, counter):
    from rualign.eval.backends import GenParams
    from rualign.eval.endpoint import OpenAIBackend
    from rualign.eval.generate import generate_answers, work_path

    base, seen = echo_server
    seen.fail_once.add("второй")
    prompts = [{"id": str(i), "messages": [{"role": "user", "content": text}], "category": None}
               for i, text in enumerate(["первый", "второй", "третий"])]
    out = tmp_path / "answers.jsonl"
    backend = OpenAIBackend("m", base_url=base, batch_size=3, max_retries=0)
    with pytest.raises(RualignError, match="1 of 3 prompts got no answer") as info:
        generate_answers(prompts, backend, GenParams(max_new_tokens=20), out, counter=counter)
    assert "rerun the same command" in info.value.render() and not out.exists()
    assert len(work_path(out).read_text(encoding="utf-8").splitlines()) == 2
    seen.clear()
    summary = generate_answers(prompts, OpenAIBackend("m", base_url=base, batch_size=3, max_retries=0),
                               GenParams(max_new_tokens=20), out, counter=counter)
    assert summary.reused == 2 and summary.generated == 1 and len(seen) == 1
    answers = [json.loads(line)["answer"] for line in out.read_text(encoding="utf-8").splitlines()]
    assert answers == ["echo: первый", "echo: второй", "echo: третий"]


def test_generate_flags_are_the_schema_defaults_and_agree_with_rualign_run():
    """One settings source: every `rualign generate` flag defaults to gen_config.Generation's field, which is
    also `eval.generation` of `rualign run` (bf16 was `auto` in run and `off` in generate)."""
    import argparse

    from rualign.commands import generate as gen_cli
    from rualign.eval.gen_config import Generation
    from rualign.pipeline.schema import Evaluation

    parser = argparse.ArgumentParser()
    gen_cli.register(parser.add_subparsers())
    args = parser.parse_args(["generate", "--model", "m", "--prompts", "p", "--out", "o"])
    for name in gen_cli.GENERATION_FLAGS:
        assert getattr(args, name) == Generation.model_fields[name].default, name
    assert set(gen_cli.GENERATION_FLAGS) == set(Generation.model_fields)  # no setting only one of them has
    assert Evaluation.model_fields["generation"].default_factory is Generation
    assert Generation().bf16 == args.bf16 == "off"


def test_cli_setting_errors_name_the_flag(tmp_path, write_jsonl, capsys):
    good = write_jsonl("g.jsonl", [{"id": "a", "prompt": "x"}])
    assert main(["generate", "--model", "m", "--batch-size", "0", "--prompts", str(good),
                 "--out", str(tmp_path / "b.jsonl")]) == 2
    assert "command line: --batch-size: Input should be greater than or equal to 1" in capsys.readouterr().err


def test_one_backend_factory_applies_the_vllm_batch_rule_and_trust_remote_code(monkeypatch):
    """commands/generate.py and pipeline/execute built backends differently: only one applied vLLM's batch floor and
    neither passed trust_remote_code. Both now call make_generation_backend."""
    from rualign.eval import backends
    from rualign.eval.gen_config import VLLM_MIN_BATCH, Generation, make_generation_backend

    made = {}
    monkeypatch.setattr(backends, "VLLMBackend", lambda model, **kw: made.setdefault("vllm", kw))
    monkeypatch.setattr(backends, "HFBackend", lambda model, **kw: made.setdefault("hf", kw))
    make_generation_backend(Generation(backend="vllm", batch_size=8), "m", trust_remote_code=True)
    assert made["vllm"]["batch_size"] == VLLM_MIN_BATCH and made["vllm"]["trust_remote_code"] is True
    make_generation_backend(Generation(batch_size=3, bf16="on", threads=1), "m", chat_template="chatml_no_system")
    assert made["hf"] == {"adapter": None, "chat_template": "chatml_no_system", "trust_remote_code": False,
                          "batch_size": 3, "bf16": "on", "threads": 1}
    with pytest.raises(RualignError, match="--adapter is not supported by the openai backend"):
        make_generation_backend(Generation(backend="openai", base_url="http://127.0.0.1:9"), "m", adapter="a")


def test_batch_size_is_in_the_cache_key_when_bf16_can_change_answers(varied_model_dir, tmp_path):
    """Under bf16 batched decoding greedy output depends on the batch, so answers made with another batch size
    must not be reused; in fp32 it does not (test above), so there the key leaves it out."""
    from rualign.eval.backends import GenParams, HFBackend
    from rualign.eval.gen_config import Generation
    from rualign.eval.generate import params_record

    fp32 = HFBackend(str(varied_model_dir), chat_template="chatml_no_system", batch_size=2, bf16="off")
    assert "batch_size" not in params_record(fp32, GenParams())
    bf16 = HFBackend(str(varied_model_dir), chat_template="chatml_no_system", batch_size=2, bf16="on")
    assert params_record(bf16, GenParams())["batch_size"] == 2
    # The plan keys answers the same way, before any model is loaded (hf: always, it cannot see the device).
    assert Generation(batch_size=2).output_key() != Generation(batch_size=3).output_key()
    openai = dict(backend="openai", base_url="http://u:p@127.0.0.1:9")
    assert Generation(**openai, batch_size=2).output_key() == Generation(**openai, batch_size=3).output_key()
    assert "u:p" not in json.dumps(Generation(**openai).output_key())
