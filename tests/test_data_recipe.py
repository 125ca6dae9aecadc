"""Data recipes: formats, filters (exact counts), sampling, determinism, split stability, errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rualign.config import load_yaml, validate
from rualign.data.recipe import run_recipe, split_of
from rualign.data.schema import Recipe
from rualign.errors import ConfigError, DataError
from rualign.runs import read_jsonl


def gm_row(i: int, words: int, prompt: str | None = None) -> dict:
    answer = f"Ответ {i}. " + "слово " * words
    return {"conversation": [{"role": "user", "content": prompt or f"Вопрос номер {i}?"},
                             {"role": "assistant", "content": answer.strip()}],
            "source": "t", "prompt_tokens": 3, "answer_tokens": words, "cluster": 0,
            "prompt_lang": "ru", "answer_lang": "ru"}


def ss_row(i: int, score: int, bad: bool = False, role: str = "assistant") -> dict:
    return {"messages": [{"role": "user", "content": f"Задача {i}: объясни тему."},
                         {"role": role, "content": f"Решение задачи {i}: " + "пояснение " * (i % 5 + 1)}],
            "source": "s", "opus_score": score, "language": "Russian", "turns": 1, "sonnet_topic": "t",
            "sonnet_complexity": "easy", "is_bad_by_regex": bad, "score_explanation": "ok"}


def recipe(sources: list[dict], **top) -> Recipe:
    return validate(Recipe, {"seed": 7, "tokenizer": "default", "val_fraction": 0.0, "sources": sources, **top},
                    "recipe.yaml")


@pytest.fixture
def gm_file(write_jsonl):
    return write_jsonl("gm.jsonl", [gm_row(i, words=(i + 1) * 10) for i in range(40)])


def test_grandmaster_token_window_exact_counts(gm_file, default_model_dir):
    from rualign.data.tokens import count_tokens

    rows = read_jsonl(gm_file)
    counts = [int(count_tokens([r["conversation"][1]["content"]])[0]) for r in rows]
    expected = sum(1 for c in counts if 100 <= c <= 200)
    manifest = run_recipe(recipe([{"name": "gm", "format": "grandmaster", "path": str(gm_file),
                                   "filters": {"answer_tokens": {"min": 100, "max": 200}}}]), None)
    source = manifest["sources"]["gm"]
    assert source["kept"] == expected > 0
    assert source["removed"] == {"answer_tokens": 40 - expected}
    assert source["rows_in"] == source["kept"] + sum(source["removed"].values()) + source["quarantined"]


def test_saiga_filters_roles_and_match(tmp_path, gm_file, write_jsonl, default_model_dir):
    ss = write_jsonl("ss.jsonl", [ss_row(i, score=1 + i % 10, bad=(i % 10 == 9), role="bot" if i % 2 else "assistant")
                                  for i in range(50)])
    out = tmp_path / "out"
    manifest = run_recipe(recipe([
        {"name": "gm", "format": "grandmaster", "path": str(gm_file), "sample": {"fraction": 0.25}},
        {"name": "ss", "format": "saiga_scored", "path": str(ss), "filters": {"min_score": 9, "drop_bad_by_regex": True},
         "sample": {"match": "gm"}}]), out)
    ss_summary = manifest["sources"]["ss"]
    # scores 9 and 10 appear 5 times each; every score-10 row (i % 10 == 9) is also bad_by_regex
    assert ss_summary["removed"] == {"drop_bad_by_regex": 5, "min_score": 40}
    assert ss_summary["kept"] == 5
    assert manifest["sources"]["gm"]["sampled"] == 10
    assert ss_summary["sampled"] == 5 and "only 5 available" in ss_summary["warnings"][0]
    train = read_jsonl(out / "train.jsonl")
    assert len(train) == 15
    roles = {m["role"] for r in train for m in r["messages"]}
    assert roles == {"user", "assistant"}  # 'bot' normalised
    rejected = read_jsonl(out / "rejected.jsonl")
    assert len(rejected) == 45 and {r["filter"] for r in rejected} == {"drop_bad_by_regex", "min_score"}


def test_preference_and_kto_formats(write_jsonl, default_model_dir):
    pairs = write_jsonl("p.jsonl", [
        {"prompt": [{"role": "user", "content": f"Вопрос {i}"}],
         "chosen": [{"role": "assistant", "content": "Подробный и вежливый ответ " * (i + 1)}],
         "rejected": [{"role": "assistant", "content": "Нет."}], "chosen_model": "a", "rejected_model": "b",
         "source": "x", "sonnet_approved": True, "is_bad_by_regex": False} for i in range(6)])
    plain = write_jsonl("q.jsonl", [{"prompt": f"Вопрос {i}", "chosen": "Хороший ответ", "rejected": "Плохой"}
                                    for i in range(3)])
    kto = write_jsonl("k.jsonl", [{"prompt": f"Вопрос {i}", "completion": "Ответ", "label": i % 2 == 0}
                                  for i in range(4)])
    m1 = run_recipe(recipe([{"name": "p", "format": "saiga_preferences", "path": str(pairs),
                             "filters": {"max_length_ratio": 6}},
                            {"name": "q", "format": "preference", "path": str(plain)}]), None)
    assert m1["kind"] == "preference"
    # chosen has 4 words * (i+1) vs 1-2 tokens rejected: the longest pairs exceed ratio 6
    assert m1["sources"]["p"]["removed"]["max_length_ratio"] > 0
    assert m1["sources"]["q"]["kept"] == 3
    m2 = run_recipe(recipe([{"name": "k", "format": "kto", "path": str(kto)}]), None)
    assert m2["kind"] == "kto" and m2["counts"]["total"] == 4


def test_mixing_kinds_is_a_config_error(gm_file):
    with pytest.raises(ConfigError, match="mix record kinds"):
        recipe([{"name": "a", "format": "grandmaster", "path": str(gm_file)},
                {"name": "b", "format": "kto", "path": str(gm_file)}])


def test_determinism_and_cache(tmp_path, gm_file, default_model_dir):
    r = recipe([{"name": "gm", "format": "grandmaster", "path": str(gm_file), "sample": {"count": 17}}],
               val_fraction=0.2)
    run_recipe(r, tmp_path / "a")
    run_recipe(r, tmp_path / "b")
    for name in ("train.jsonl", "val.jsonl"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    again = run_recipe(r, tmp_path / "a")
    assert again.get("cached") is True
    other_seed = r.model_copy(update={"seed": 8})
    run_recipe(other_seed, tmp_path / "c")
    ids = lambda d: sorted(x["id"] for x in read_jsonl(d / "train.jsonl") + read_jsonl(d / "val.jsonl"))
    assert ids(tmp_path / "a") != ids(tmp_path / "c")  # a different seed samples differently


def test_split_is_stable_when_rows_are_added(tmp_path, write_jsonl, default_model_dir):
    small = write_jsonl("small.jsonl", [gm_row(i, 5) for i in range(60)])
    big = write_jsonl("big.jsonl", [gm_row(i, 5) for i in range(120)])
    splits = {}
    for name, path in (("small", small), ("big", big)):
        out = tmp_path / name
        run_recipe(recipe([{"name": "gm", "format": "grandmaster", "path": str(path)}], val_fraction=0.3), out)
        splits[name] = {r["id"]: split for split in ("train", "val") for r in read_jsonl(out / f"{split}.jsonl")}
    assert 0 < sum(v == "val" for v in splits["small"].values()) < 60
    for rid, split in splits["small"].items():
        assert splits["big"][rid] == split


def test_split_of_is_a_pure_function_of_the_prompt():
    record = {"kind": "chat", "messages": [{"role": "user", "content": "Привет"},
                                           {"role": "assistant", "content": "Здравствуйте"}]}
    assert {split_of(record, 0.5) for _ in range(5)} == {split_of(dict(record), 0.5)}
    assert split_of(record, 0.0) == "train" and split_of(record, 0.999999) == "val"


def test_target_mean_window(write_jsonl, default_model_dir):
    rows = [gm_row(i, words=w) for i, w in enumerate(list(range(5, 400, 5)))]
    path = write_jsonl("gm.jsonl", rows)
    manifest = run_recipe(recipe([{"name": "gm", "format": "grandmaster", "path": str(path),
                                   "filters": {"answer_tokens": {"target_mean": 300, "tolerance": 10,
                                                                 "min_rows": 20}}}]), None)
    window = manifest["sources"]["gm"]["chosen_window"]
    kept = manifest["sources"]["gm"]["answer_tokens"]
    assert abs(kept["mean"] - 300) <= 10 + 1e-9 and window["rows"] >= 20
    assert window["min"] <= 300 <= window["max"]
    assert manifest["sources"]["gm"]["kept"] == window["rows"]


def test_target_mean_unreachable_names_filter_and_source(write_jsonl, default_model_dir):
    path = write_jsonl("gm.jsonl", [gm_row(i, words=5) for i in range(10)])
    with pytest.raises(DataError, match="filter 'answer_tokens' of source 'gm'.*no window"):
        run_recipe(recipe([{"name": "gm", "format": "grandmaster", "path": str(path),
                            "filters": {"answer_tokens": {"target_mean": 540}}}]), None)


def test_filter_that_empties_a_source_says_which(gm_file, default_model_dir):
    with pytest.raises(DataError, match="filter 'answer_tokens' removed all 40 remaining rows of source 'gm'"):
        run_recipe(recipe([{"name": "gm", "format": "grandmaster", "path": str(gm_file),
                            "filters": {"answer_tokens": {"min": 100000}}}]), None)


def test_text_filters_exact_counts(write_jsonl, default_model_dir):
    rows = [gm_row(i, 3) for i in range(10)]
    rows[1]["conversation"][1]["content"] = "As an AI language model I cannot help."          # blacklist + latin
    rows[2]["conversation"][1]["content"] = "This answer is in English only, sorry."         # latin
    rows[3] = gm_row(0, 3)                                                                   # exact dup of 0
    rows[4]["conversation"][0]["content"] = "x" * 5000                                       # huge message
    path = write_jsonl("gm.jsonl", rows)
    manifest = run_recipe(recipe([{"name": "gm", "format": "grandmaster", "path": str(path), "filters": {
        "blacklist": ["as an ai language model", "как языковая модель"], "max_message_chars": 4000,
        "min_cyrillic": 0.5, "dedup": True}}]), None)
    assert manifest["sources"]["gm"]["removed"] == {"blacklist": 1, "max_message_chars": 1, "min_cyrillic": 1,
                                                    "dedup": 1}
    assert manifest["sources"]["gm"]["kept"] == 6


def test_near_dedup_catches_small_edits(write_jsonl, default_model_dir):
    base = "Москва является столицей России и крупнейшим городом страны с богатой историей и культурой " * 3
    rows = [gm_row(i, 1) for i in range(6)]
    rows[0]["conversation"][1]["content"] = base
    rows[1]["conversation"][1]["content"] = base + " Конец."
    rows[1]["conversation"][0]["content"] = rows[0]["conversation"][0]["content"]
    path = write_jsonl("gm.jsonl", rows)
    manifest = run_recipe(recipe([{"name": "gm", "format": "grandmaster", "path": str(path),
                                   "filters": {"near_dedup": {"threshold": 0.7}}}]), None)
    assert manifest["sources"]["gm"]["removed"] == {"near_dedup": 1}


def test_malformed_line_fails_with_file_and_line(write_jsonl, default_model_dir):
    path = write_jsonl("gm.jsonl", [gm_row(0, 3), '{"conversation": [', gm_row(2, 3)])
    with pytest.raises(DataError) as info:
        run_recipe(recipe([{"name": "gm", "format": "grandmaster", "path": str(path)}]), None)
    assert f"{path}:2" in str(info.value) and "malformed JSON" in str(info.value)


def test_quarantine_counts_add_up(tmp_path, write_jsonl, default_model_dir):
    bad_role = gm_row(3, 3)
    bad_role["conversation"][0]["role"] = "narrator"
    ends_on_user = gm_row(4, 3)
    ends_on_user["conversation"].append({"role": "user", "content": "А ещё?"})
    empty = gm_row(5, 3)
    empty["conversation"][1]["content"] = "   "
    path = write_jsonl("gm.jsonl", [gm_row(0, 3), "{oops", gm_row(2, 3), bad_role, ends_on_user, empty, "[1, 2]"])
    out = tmp_path / "q"
    manifest = run_recipe(recipe([{"name": "gm", "format": "grandmaster", "path": str(path),
                                   "on_error": "quarantine"}]), out)
    source = manifest["sources"]["gm"]
    assert source["rows_in"] == 7 and source["quarantined"] == 5 and source["kept"] == 2
    reasons = {r["line"]: r["reason"] for r in read_jsonl(out / "rejected.jsonl")}
    assert "malformed JSON" in reasons[2] and "unknown role 'narrator'" in reasons[4]
    assert "ends on a user turn" in reasons[5] and "empty or whitespace" in reasons[6]
    assert "not an object" in reasons[7]


def test_missing_column_names_column_and_format(write_jsonl, default_model_dir):
    path = write_jsonl("ss.jsonl", [{"messages": [{"role": "user", "content": "a"}], "score": 5}])
    with pytest.raises(DataError, match=r"missing column\(s\) \['opus_score'\] needed by format 'saiga_scored'"):
        run_recipe(recipe([{"name": "ss", "format": "saiga_scored", "path": str(path)}]), None)


def test_wrong_encoding_names_line(tmp_path, default_model_dir):
    path = tmp_path / "gm.jsonl"
    path.write_bytes((json.dumps(gm_row(0, 2)) + "\n").encode() + json.dumps(gm_row(1, 2), ensure_ascii=False).encode("cp1251") + b"\n")
    with pytest.raises(DataError, match=r"gm.jsonl:2: not valid UTF-8"):
        run_recipe(recipe([{"name": "gm", "format": "grandmaster", "path": str(path)}]), None)


def test_bom_is_tolerated(write_jsonl, default_model_dir):
    path = write_jsonl("gm.jsonl", [gm_row(0, 2), gm_row(1, 2)], encoding="utf-8-sig")
    assert run_recipe(recipe([{"name": "gm", "format": "grandmaster", "path": str(path)}]), None)["counts"]["total"] == 2


def test_json_parquet_and_save_to_disk_readers(tmp_path, default_model_dir):
    import pyarrow as pa
    import pyarrow.parquet as pq
    from datasets import Dataset, DatasetDict

    rows = [gm_row(i, 4) for i in range(8)]
    (tmp_path / "gm.json").write_text(json.dumps(rows, ensure_ascii=False), encoding="utf-8")
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "gm.parquet")
    DatasetDict({"train": Dataset.from_list(rows), "test": Dataset.from_list(rows[:3])}).save_to_disk(tmp_path / "disk")
    for path, split, n in (("gm.json", "train", 8), ("gm.parquet", "train", 8), ("disk", "test", 3)):
        manifest = run_recipe(recipe([{"name": "gm", "format": "grandmaster", "path": str(tmp_path / path),
                                       "split": split}]), None)
        assert manifest["counts"]["total"] == n, path


def test_yaml_errors_name_key_and_line(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("seed: 1\nsources:\n  - name: gm\n    format: grandmaster\n    path: x.jsonl\n"
                    "    filtres: {min_score: 3}\n", encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_yaml(path, Recipe)
    assert f"{path}:6" in str(info.value) and "unknown key 'sources.0.filtres'" in str(info.value)
    path.write_text("sources:\n  - name: gm\n    format: grandmaster\n    path: x\n    sample: {match: zz}\n")
    with pytest.raises(ConfigError, match="unknown source 'zz'"):
        load_yaml(path, Recipe)
    path.write_text("sources:\n  - name: gm\n    format: gm\n    path: x\n")
    with pytest.raises(ConfigError, match=":3:.*sources.0.format"):
        load_yaml(path, Recipe)


def test_circular_match_is_rejected(tmp_path):
    with pytest.raises(ConfigError, match="circular"):
        recipe([{"name": "a", "format": "chat", "path": "x", "sample": {"match": "b"}},
                {"name": "b", "format": "chat", "path": "y", "sample": {"match": "a"}}])


def test_cli_dry_run_writes_nothing_and_errors_have_no_traceback(tmp_path, gm_file, capsys, default_model_dir):
    from rualign.cli import main

    recipe_file = tmp_path / "r.yaml"
    recipe_file.write_text(f"sources:\n  - name: gm\n    format: grandmaster\n    path: {gm_file}\n")
    assert main(["data", str(recipe_file), "--out", str(tmp_path / "o"), "--dry-run"]) == 0
    assert not (tmp_path / "o").exists()
    assert "gm" in capsys.readouterr().out
    bad = tmp_path / "bad.yaml"
    bad.write_text("sources: []\nunknown: 1\n")
    assert main(["data", str(bad), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "error:" in err and "Traceback" not in err and "unknown" in err


def test_memoised_token_count_equals_exact_encoding(default_model_dir):
    import random

    from rualign.data.tokens import count_tokens

    rng = random.Random(0)
    alphabet = "абвгдеёжзийклмнопрстуфхцчшщъыьэюяАБВГДЕЁЖЗabcXYZ0123456789 .,!?;:'\"-\n\t()[]{}<>|😀€«»—"
    texts = ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, 300))) for _ in range(300)]
    texts += ["Привет, мир! It's 2024: 3.14159 <|im_end|> конец", "  \n\n  ", "'ll 've 're", "x" * 5000]
    assert count_tokens(texts).tolist() == count_tokens(texts, exact=True).tolist()


def test_formats_table_is_the_one_source_of_names_kinds_and_columns():
    """data/schema.py's FORMATS tuple was dead and kinds lived in a second dict; now one FormatSpec table."""
    import typing

    from rualign.data.formats import FORMATS, RowError, normalise
    from rualign.data.schema import Source

    assert set(typing.get_args(Source.model_fields["format"].annotation)) == set(FORMATS)
    row = {"prompt": "Вопрос?", "chosen": "Хороший ответ.", "rejected": "Плохой."}
    assert normalise("preference", row)["kind"] == FORMATS["preference"].kind == "preference"
    with pytest.raises(RowError, match="missing column 'label'"):
        normalise("kto", {"prompt": "x", "completion": "y"})
    for name, spec in FORMATS.items():
        assert spec.kind in ("chat", "preference", "kto") and spec.columns, name
