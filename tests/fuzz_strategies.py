"""Hypothesis strategies and a harness for hostile inputs to every stage (issue 16).

Each STAGE maps a generated input to a command run in-process inside a fresh root folder. The harness
asserts what every command owes its user, whatever the input: exit code 0 or 2 (a RualignError or an
argparse error; any other exception is a traceback and fails), nothing outside the root written or
deleted, and the inputs byte-identical after a failure. Used by tests/test_fuzz_inputs.py (a few dozen
examples per stage, in the suite) and bench/fuzz_inputs.py (>= 10,000 per stage).
"""

from __future__ import annotations

import copy
import gzip
import hashlib
import json
import shutil
import sys
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import yaml
from hypothesis import strategies as st

# ------------------------------------------------------------------ values a user (or an attacker) may write

NAMES = ["..", ".", "/x", "a/../..", "", "report", "_store", "../outside", "a/b", "~", "-rf", "x" * 120, "ок"]
HOSTILE_SCALARS = st.one_of(
    st.sampled_from([None, True, False, 0, -1, 1, 2**31, 2**64, -(2**63), 10**30, 0.0, -0.0, 1e308, -1e308,
                     float("inf"), float("-inf"), float("nan"), 1e-320, "", " ", "NaN", "inf", "1e999",
                     "bundled:nope", "hf:a/b", "http://u:p@h/v1", "\x00", "\ufeff", "$x$", "(?i)", "(", "[",
                     "a" * 300, *NAMES]),
    st.integers(min_value=-10**12, max_value=10**12),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20))
HOSTILE = st.recursive(HOSTILE_SCALARS, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=8), inner, max_size=3)), max_leaves=6)


def _paths(obj: Any, prefix: tuple = ()) -> list[tuple]:
    """Every key path (dict keys, list indices) inside a JSON-like value."""
    found = [prefix] if prefix else []
    if isinstance(obj, dict):
        for key, value in obj.items():
            found += _paths(value, prefix + (key,))
    elif isinstance(obj, list):
        for index, value in enumerate(obj):
            found += _paths(value, prefix + (index,))
    return found


@st.composite
def mutated(draw, base: dict, max_edits: int = 3) -> Any:
    """`base` with a few edits: a value replaced by a hostile one, a key deleted, an unknown key added."""
    doc = copy.deepcopy(base)
    for _ in range(draw(st.integers(min_value=0, max_value=max_edits))):
        paths = _paths(doc)
        if not paths:
            break
        path = draw(st.sampled_from(paths))
        parent = doc
        for key in path[:-1]:
            parent = parent[key]
        action = draw(st.sampled_from(["replace", "replace", "replace", "delete", "add"]))
        if action == "replace":
            parent[path[-1]] = draw(HOSTILE)
        elif action == "delete" and isinstance(parent, dict):
            del parent[path[-1]]
        elif isinstance(parent, dict):
            parent[draw(st.sampled_from(["extra", "sources", "name", "stages", "eval"]))] = draw(HOSTILE)
    return doc


@st.composite
def yaml_text(draw, base: dict) -> str:
    """YAML for a mutated `base`, sometimes broken as text: duplicate keys, bad syntax, a BOM, tabs."""
    doc = draw(mutated(base))
    try:
        text = yaml.safe_dump(doc, allow_unicode=True, sort_keys=False)
    except yaml.YAMLError:
        text = "{}\n"
    twist = draw(st.sampled_from(["none"] * 6 + ["duplicate", "syntax", "bom", "tab", "empty", "list", "text"]))
    if twist == "duplicate" and text.strip():
        text = text + text.splitlines()[0] + "\n"
    elif twist == "syntax":
        text = text + "key: [unclosed\n"
    elif twist == "bom":
        text = "\ufeff" + text
    elif twist == "tab":
        text = text.replace("  ", "\t", 1)
    elif twist == "empty":
        text = ""
    elif twist == "list":
        text = "- 1\n- 2\n"
    elif twist == "text":
        text = draw(st.text(max_size=60))
    return text


@st.composite
def jsonl_bytes(draw, row: dict) -> bytes:
    """A small JSONL file of mutated rows and broken lines, in a random encoding or container."""
    lines = []
    for _ in range(draw(st.integers(min_value=0, max_value=4))):
        kind = draw(st.sampled_from(["row", "row", "row", "mutated", "mutated", "raw", "nan", "deep", "blank"]))
        if kind == "row":
            lines.append(json.dumps(row, ensure_ascii=False))
        elif kind == "mutated":
            lines.append(json.dumps(draw(mutated(row)), ensure_ascii=False, allow_nan=True))
        elif kind == "raw":
            lines.append(draw(st.text(max_size=40)).replace("\n", " "))
        elif kind == "nan":
            lines.append(json.dumps(row, ensure_ascii=False).replace("}", ', "x": NaN}', 1))
        elif kind == "deep":
            lines.append("[" * 50000 + "]" * 50000)
        else:
            lines.append("")
    text = "\n".join(lines) + draw(st.sampled_from(["\n", "", "\r\n"]))
    encoding = draw(st.sampled_from(["utf-8"] * 6 + ["utf-8-sig", "utf-16", "cp1251", "gzip", "latin-1"]))
    if encoding == "gzip":
        return gzip.compress(text.encode("utf-8"))
    return text.encode(encoding, errors="replace")


# ------------------------------------------------------------------ valid bases the mutations start from

CHAT_ROW = {"messages": [{"role": "user", "content": "Привет, как дела?"},
                         {"role": "assistant", "content": "Хорошо, спасибо! А у вас?"}],
            "opus_score": 8, "source": "s"}
RECIPE = {"seed": 1, "val_fraction": 0.2, "tokenizer": "default", "sources": [
    {"name": "a", "format": "saiga_scored", "path": "src.jsonl",
     "filters": {"min_score": 5, "blacklist": ["плохо"], "answer_tokens": {"min": 1, "max": 500}}},
    {"name": "b", "format": "saiga_scored", "path": "bundled:saiga_scored", "sample": {"count": 2}}]}
TRAIN = {"model": "default", "seed": 1, "stages": [
    {"name": "sft", "method": "sft", "data": "missing_data_folder", "epochs": 1, "lr": 0.0001,
     "lora": {"r": 4, "alpha": 8}},
    {"name": "dpo", "method": "dpo", "data": "missing_data_folder", "parent": "sft", "beta": 0.1}]}
EXPERIMENT = {"experiments": [{"name": "base"}, {"name": "sft", "stages": [{"name": "s1", "method": "sft",
                                                                           "data": "d"}]}],
              "defaults": {"model": "default", "data": {"d": {"sources": [
                  {"name": "a", "format": "saiga_scored", "path": "bundled:saiga_scored"}]}},
                  "eval": {"prompts": "bundled:eval_prompts", "limit": 2, "reference": {"answers": "ref.jsonl"},
                           "judge": "llamacpp:default", "generation": {"max_new_tokens": 8}}}}
JUDGE = {"base_url": "http://127.0.0.1:9/v1", "model": "m", "mode": "logprob", "concurrency": 2,
         "timeout_s": 1, "max_retries": 0, "template": "judge_pairwise_v1"}
TEMPLATE = {"version": "t1", "system": "s", "body": "{prompt} {answer_a} {answer_b}", "logprob_instruction": "l",
            "verdict_instruction": "v", "reminder": "r"}
ANSWER = {"id": "p1", "prompt": [{"role": "user", "content": "Вопрос"}], "answer": "Ответ", "answer_tokens": 3}
PROMPT = {"id": "p1", "instruction": "Расскажи о Москве", "category": "geo"}
SCORE = {"score": 50.0, "ci_low": 40.0, "ci_high": 60.0, "n": 2, "per_prompt": [{"id": "p1", "value": 0.5},
                                                                               {"id": "p2", "value": 1.0}]}
QUESTION = {"id": "q1", "category": "geo", "question": "Столица Австралии?", "choices": ["Сидней", "Канберра"],
            "answer": 1}
GOLD = {"id": "g1", "category": "facts", "prompt": "Сколько будет 2+2?", "chosen": "Четыре.", "rejected": "Пять."}
REVIEW = {"format": "rualign-review", "marks": [{"run": "r", "id": "p1", "mark": "model"},
                                                {"run": "r", "id": "p2", "mark": "tie"}]}
JUDGMENT = {"id": "p1", "order": "model_first", "mode": "logprob", "preference": 0.7, "verdict": "model", "error": None}
SWEEP = {"experiment": "exp.yaml", "trials": 2, "fixed": {"eval.limit": 2},
         "space": {"stages.s1.lr": {"log_uniform": [0.0001, 0.01]}},
         "objective": {"metric": "score", "direction": "maximize"}, "length": {"target": 540, "tolerance": 60}}
SWEEP_EXPERIMENT = {"name": "e", "model": "default", "stages": [{"name": "s1", "method": "sft", "data": {
    "sources": [{"name": "a", "format": "saiga_scored", "path": "bundled:saiga_scored"}]}}],
    "eval": {"prompts": "bundled:eval_prompts", "reference": {"answers": "ref.jsonl"}, "judge": "llamacpp:default"}}
RUN_JSON = {"name": "r", "description": "d", "stages": [{"name": "s", "method": "sft", "data": "x"}]}


# ------------------------------------------------------------------ the stages and the harness

@dataclass
class Example:
    argv: list[str]
    inputs: list[Path] = field(default_factory=list)
    no_plots: bool = False  # report: skip matplotlib (300 ms an input) in most examples; the loaders still run


def _write(path: Path, data: bytes | str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data if isinstance(data, bytes) else data.encode("utf-8", errors="surrogatepass"))
    return path


def _data(draw, root: Path) -> Example:
    name = draw(st.sampled_from(["src.jsonl", "src.jsonl", "train.jsonl"]))  # train.jsonl: --out . collides
    src = _write(root / name, draw(jsonl_bytes(CHAT_ROW)))
    base = copy.deepcopy(RECIPE)
    base["sources"][0]["path"] = name
    recipe = _write(root / "recipe.yaml", draw(yaml_text(base)))
    out = draw(st.sampled_from(["out", "out", ".", "src.jsonl", "out/..", "recipe.yaml", "train.jsonl"]))
    return Example(["data", str(recipe), "--out", str(root / out)], [src, recipe])


def _train(draw, root: Path) -> Example:
    cfg = _write(root / "train.yaml", draw(yaml_text(TRAIN)))
    out = draw(st.sampled_from(["out", "out", ".", "train.yaml", "sub/.."]))
    return Example(["train", str(cfg), "--out", str(root / out)], [cfg])


def _run(draw, root: Path) -> Example:
    ref = _write(root / "ref.jsonl", draw(jsonl_bytes(ANSWER)))
    exp = _write(root / "exp.yaml", draw(yaml_text(EXPERIMENT)))
    out = draw(st.sampled_from(["runs", "runs", "."]))
    return Example(["run", str(exp), "--dry-run", "--out", str(root / out)], [ref, exp])


_SERVER: list = []


def judge_server_url() -> str:
    """One fault-free fake judge for the whole process, so valid inputs are judged (exit 0), not refused."""
    if not _SERVER:
        from fault_server import FaultServer

        _SERVER.append(FaultServer(fault_rate=0.0).__enter__())
    return _SERVER[0].base_url + "/v1"


def _judge(draw, root: Path) -> Example:
    if draw(st.booleans()):  # a well-formed pair, so the judge path itself runs (and may exit 0)
        answers = _write(root / "answers.jsonl", json.dumps(ANSWER, ensure_ascii=False) + "\n")
        other = {**ANSWER, "answer": draw(st.sampled_from(["Другой, более длинный ответ", "Ответ", ""]))}
        reference = _write(root / "reference.jsonl", json.dumps(other, ensure_ascii=False) + "\n")
    else:
        answers = _write(root / "answers.jsonl", draw(jsonl_bytes(ANSWER)))
        reference = _write(root / "reference.jsonl", draw(jsonl_bytes(ANSWER)))
    template = _write(root / "t.yaml", draw(yaml_text(TEMPLATE)))
    judge = copy.deepcopy(JUDGE)
    judge["template"] = str(template)
    judge["base_url"] = draw(st.sampled_from([judge_server_url()] * 3 + [JUDGE["base_url"]]))
    cfg = _write(root / "judge.yaml", draw(yaml_text(judge)))
    out = draw(st.sampled_from(["out", "out", "answers.jsonl", "."]))
    return Example(["judge", "--answers", str(answers), "--reference", str(reference), "--judge", str(cfg),
                    "--out", str(root / out), "--cache", str(root / "cache.sqlite")],
                   [answers, reference, template, cfg])


def _prompts(draw, root: Path) -> Example:
    prompts = _write(root / draw(st.sampled_from(["p.jsonl", "p.json"])), draw(jsonl_bytes(PROMPT)))
    out = draw(st.sampled_from(["a.jsonl", "a.jsonl", prompts.name, "."]))
    limit = draw(st.sampled_from([[], [], ["--limit", "0"], ["--limit", "-2"], ["--threads", "-1"]]))
    # --model points at a folder that is no model: prompts are read first, then the model is refused
    return Example(["generate", "--model", str(root / "nomodel"), "--prompts", str(prompts), "--out",
                    str(root / out), *limit], [prompts])


def _compare(draw, root: Path) -> Example:
    a = _write(root / "a" / "score.json", json.dumps(draw(mutated(SCORE)), allow_nan=True))
    b = _write(root / "b" / "score.json", draw(st.sampled_from([json.dumps(SCORE), "{", "NaN", "[]", ""])))
    out = draw(st.sampled_from([[], ["--out", str(root / "c.json")], ["--out", str(a)]]))
    return Example(["compare", str(a.parent), str(b.parent), "--n-boot", "20", *out], [a, b])


def _report(draw, root: Path) -> Example:
    folder = root / "run1"
    files = [_write(folder / "run.json", json.dumps(draw(mutated(RUN_JSON)), allow_nan=True)),
             _write(folder / "answers.jsonl", draw(jsonl_bytes(ANSWER))),
             _write(folder / "judge" / "score.json", json.dumps(draw(mutated(SCORE)), allow_nan=True))]
    out = draw(st.sampled_from(["rep"] * 8 + ["run1/run.json", "run1"]))
    plots = draw(st.integers(min_value=0, max_value=9)) == 0  # matplotlib in one example of ten
    return Example(["report", str(folder), "--out", str(root / out)], files, no_plots=not plots)


def _knowledge(draw, root: Path) -> Example:
    questions = _write(root / "q.jsonl", draw(jsonl_bytes(QUESTION)))
    out = draw(st.sampled_from(["out", "out", "q.jsonl"]))
    # the questions are read and checked before the (missing) model is loaded
    return Example(["knowledge", "--model", str(root / "nomodel"), "--questions", str(questions), "--out",
                    str(root / out)], [questions])


def _judge_check(draw, root: Path) -> Example:
    gold = _write(root / "gold.jsonl", draw(jsonl_bytes(GOLD)))
    url = draw(st.sampled_from([judge_server_url(), JUDGE["base_url"]]))
    return Example(["judge-check", "--judge", f"openai:m@{url}", "--gold", str(gold), "--out", str(root / "out"),
                    "--cache", str(root / "cache.sqlite")], [gold])


def _agreement(draw, root: Path) -> Example:
    review = _write(root / "review.json", json.dumps(draw(mutated(REVIEW)), allow_nan=True))
    folder = root / "run1"
    rows = [JUDGMENT, {**JUDGMENT, "id": "p2", "preference": 0.5}]
    judgments = (draw(jsonl_bytes(JUDGMENT)) if draw(st.booleans())
                 else "".join(json.dumps(r) + "\n" for r in rows).encode())
    files = [_write(folder / "run.json", json.dumps(RUN_JSON)), _write(folder / "judge" / "judgments.jsonl", judgments)]
    return Example(["agreement", str(review), str(folder), "--n-boot", "20"], [review, *files])


def _sweep(draw, root: Path) -> Example:
    _write(root / "ref.jsonl", json.dumps(ANSWER, ensure_ascii=False) + "\n")
    experiment = _write(root / "exp.yaml", draw(yaml_text(SWEEP_EXPERIMENT)))
    sweep = _write(root / "sweep.yaml", draw(yaml_text(SWEEP)))
    return Example(["sweep", str(sweep), "--out", str(root / "sw"), "--dry-run"], [experiment, sweep])


STAGES: dict[str, Callable] = {"data": _data, "train": _train, "run": _run, "judge": _judge,
                               "generate": _prompts, "compare": _compare, "report": _report,
                               "knowledge": _knowledge, "judge-check": _judge_check, "agreement": _agreement,
                               "sweep": _sweep}


def snapshot(root: Path) -> dict[str, str]:
    out = {}
    for path in sorted(root.rglob("*")):
        out[str(path.relative_to(root))] = (hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file()
                                            else "<dir>")
    return out


_PARSER: list = []


def _main_cached(argv: list[str]) -> int:
    """rualign.cli.main with the argument parser built once (building it costs ~20 ms, a third of an example);
    the same handlers and the same rule: a RualignError is exit 2, anything else propagates (a traceback)."""
    from rualign.cli import build_parser
    from rualign.errors import RualignError
    from rualign.redact import redact_text

    if not _PARSER:
        _PARSER.append(build_parser())
    args = _PARSER[0].parse_args(argv)
    try:
        return int(args.handler(args) or 0)
    except RualignError as exc:
        print(f"error: {redact_text(exc.render())}", file=sys.stderr)
        return 2


def check_example(stage: str, draw, counts: Counter, *, fast: bool = False) -> None:
    """Run one generated input of `stage` and assert the contract; count exit codes in `counts`.
    `fast` (the bench): reuse one argument parser and keep temporary folders in memory (/dev/shm)."""
    import contextlib
    import io

    from rualign.cli import main

    run = _main_cached if fast else main
    shm = Path("/dev/shm")
    base = Path(tempfile.mkdtemp(prefix="rualign-fuzz-", dir=shm if fast and shm.is_dir() else None))
    try:
        outside = base / "outside"
        _write(outside / "model" / "weights.bin", b"precious")
        _write(outside / "beside.txt", b"precious")
        root = base / "root"
        root.mkdir()
        example = STAGES[stage](draw, root)
        before_outside = snapshot(outside)
        before_inputs = {p: p.read_bytes() for p in example.inputs}
        err = io.StringIO()
        no_plots = contextlib.nullcontext()
        if example.no_plots:
            from unittest import mock

            no_plots = mock.patch("rualign.report.plots.write_plots", lambda *a, **k: {})
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()), no_plots:
            try:
                code = run(example.argv)
            except SystemExit as exc:  # argparse: usage errors exit 2
                code = exc.code
        assert code in (0, 2), (stage, example.argv, code, err.getvalue()[-500:])
        assert "Traceback" not in err.getvalue()
        assert snapshot(outside) == before_outside, (stage, example.argv)
        assert sorted(p.name for p in base.iterdir()) == ["outside", "root"], (stage, example.argv)
        if code != 0:
            for path, data in before_inputs.items():
                assert path.is_file() and path.read_bytes() == data, (stage, path, example.argv)
        counts[f"{stage}:exit{code}"] += 1
    finally:
        shutil.rmtree(base, ignore_errors=True)
