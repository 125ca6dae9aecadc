"""The embedded judge under llama.cpp: its first token is mostly not a verdict letter (it starts in Russian), so
its calls are asked again with the first token constrained by a grammar, and its judge card is unvalidated."""

from __future__ import annotations

import importlib.util
import json

import pytest

from rualign.cli import main


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("llama_cpp") is None or importlib.util.find_spec("uvicorn") is None,
                    reason="needs llama-cpp-python[server] (the demo extra)")
def test_embedded_judge_constrained_first_token(tmp_path, monkeypatch):
    monkeypatch.setenv("RUALIGN_HOME", str(tmp_path / "home"))  # the card registry; the GGUF ships in a package
    from rualign.eval.judge_check import load_gold

    _, pairs = load_gold("bundled:gold_ru")
    gold = tmp_path / "gold.jsonl"
    picked = [p for p in pairs if p.category in ("factual_error", "reasoning_error")][:1]  # one pair, both orders: 4 calls on a CPU
    gold.write_text("".join(json.dumps({**p.model_dump(), "prompt": p.prompt[0].content}, ensure_ascii=False) + "\n"
                            for p in picked), encoding="utf-8")
    out = tmp_path / "card"
    assert main(["judge-check", "--judge", "llamacpp:default", "--gold", str(gold), "--out", str(out),
                 "--cache", str(tmp_path / "c.sqlite")]) == 0
    rows = [json.loads(line) for line in (out / "judgments.jsonl").read_text(encoding="utf-8").splitlines()]
    assert len(rows) == 2
    for row in rows:
        assert row["verdict_mass"] is not None and row["verdict_mass"] < 0.5
        assert row["mode"] == "constrained" and row["error"] is None
        assert row["preference"] in (0.0, 0.5, 1.0)
    card = json.loads((out / "judge_card.json").read_text(encoding="utf-8"))
    assert card["validated"] is False and card["verdict_mass"] < 0.5
