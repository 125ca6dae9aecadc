"""The embedded judge serves an F16 copy of the packaged Q4_1 GGUF (faster prompt evaluation on AVX2): it
must be the same model up to rounding, made once, and part of the judge's identity."""

from __future__ import annotations

import pytest

from rualign import models
from rualign.eval.schema import parse_judge_spec

pytest.importorskip("llama_cpp")


@pytest.mark.slow
def test_f16_judge_weights_are_the_packaged_model(tmp_path, monkeypatch):
    import llama_cpp
    import numpy as np

    monkeypatch.setenv("RUALIGN_HOME", str(tmp_path))
    served = models.judge_gguf_path("default")
    assert served.parent == tmp_path / "gguf" and served.name.endswith(".F16.gguf") and served.stat().st_size > 0
    made = served.stat().st_mtime_ns
    assert models.judge_gguf_path("default") == served and served.stat().st_mtime_ns == made  # made once
    assert not list(served.parent.glob(".*.partial"))

    prompt = "Какая гора самая высокая в Европе? Ответь одной буквой: A — Эльбрус, B — Монблан."
    logits = []
    for path in (models.default_gguf_path(), served):
        llm = llama_cpp.Llama(str(path), n_ctx=256, n_threads=1, verbose=False, logits_all=False)
        llm.eval(llm.tokenize(prompt.encode()))
        logits.append(np.array(llm.scores[llm.n_tokens - 1], dtype=np.float64))
        del llm
    q4, f16 = logits
    assert int(q4.argmax()) == int(f16.argmax())
    top = np.argsort(-q4)[:20]
    assert np.max(np.abs(q4[top] - f16[top])) < 0.1  # rounding, not a different model


def test_served_weights_are_part_of_the_judge_identity():
    default = parse_judge_spec("llamacpp:default").judge_key()
    assert default["weights"] == models.JUDGE_WEIGHTS == "f16"
    other = parse_judge_spec("llamacpp:/models/judge.gguf").judge_key()
    assert "weights" not in other  # a user's own GGUF is served as given
