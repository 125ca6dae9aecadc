"""llama.cpp judge throughput through the real judge path (run_judge, logprob mode with the constrained retry, no
cache hits) on the bundled GrandMaster test answers cut to demo length, one setup after another in one process:
  server-q4_1   the packaged Q4_1 GGUF behind llama-cpp-python's OpenAI server, all cores: the previous demo
                judge, reached as its llamacpp backend did
  server-f16    the same server on the F16 copy
  inproc-f16:N  the embedded judge as it runs now (llamacpp:default): the F16 copy in process, N slots
Usage: python bench/bench_judge_slots.py PROMPTS [SETUP...]   (default: server-q4_1 server-f16 inproc-f16:2)"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import tempfile
import time
from pathlib import Path

from unittest import mock

from rualign.data.sources import bundled_path
from rualign.eval import judge as judge_module
from rualign.eval.endpoint import OpenAIBackend
from rualign.eval.judge import run_judge
from rualign.eval.judge_backends import SlotPool, _openai_args, llamacpp_judge
from rualign.eval.schema import parse_judge_spec
from rualign.eval.server import LlamaServer
from rualign.models import default_gguf_path, judge_gguf_path


def answers(rows: list[dict], shift: int, path: Path) -> Path:
    with path.open("w", encoding="utf-8") as handle:
        for i, row in enumerate(rows):
            text = rows[(i + shift) % len(rows)]["conversation"][1]["content"][:450]  # ~150 words: demo length
            handle.write(json.dumps({"id": f"p{i}", "prompt": row["conversation"][0]["content"], "answer": text,
                                     "answer_tokens": len(text) // 3}, ensure_ascii=False) + "\n")
    return path


@contextlib.contextmanager
def judge_for(setup: str):
    """The judge config of one setup; a server setup's server runs while the block does, and the judge reaches
    it as the previous llamacpp backend did: one OpenAIBackend (one request at a time) in a SlotPool, so a
    job's constrained retry follows its logprob call on the server that still holds that prompt's prefix."""
    engine, _, slots = setup.partition(":")
    if engine == "inproc-f16":
        yield parse_judge_spec("llamacpp:default").model_copy(update={"slots": int(slots or 2)})
        return
    gguf = default_gguf_path() if engine == "server-q4_1" else judge_gguf_path("default")
    cfg = parse_judge_spec(f"llamacpp:{gguf}")
    _, identity, _ = llamacpp_judge(cfg.model)

    @contextlib.contextmanager
    def served(config):
        with LlamaServer(gguf, n_ctx=cfg.n_ctx, threads=os.cpu_count()) as server:
            yield lambda: SlotPool([OpenAIBackend(cfg.model, base_url=server.base_url, served_model=server.model_id,
                                                  identity=identity, **{**_openai_args(cfg), "batch_size": 1})],
                                   identity)
    with mock.patch.object(judge_module, "backend_factory", served):
        yield cfg


def main() -> None:
    n, setups = int(sys.argv[1]), sys.argv[2:] or ["server-q4_1", "server-f16", "inproc-f16:2"]
    rows = [json.loads(line) for line in bundled_path("grandmaster", "test").open(encoding="utf-8")][:n]
    tmp = Path(tempfile.mkdtemp(prefix="bench-judge-slots-"))
    model, ref = answers(rows, 0, tmp / "model.jsonl"), answers(rows, 1, tmp / "ref.jsonl")
    for setup in setups:
        name = setup.replace(":", "-")
        with judge_for(setup) as cfg:
            started = time.perf_counter()
            run_judge(model, ref, cfg, tmp / f"out-{name}", cache_path=tmp / f"cache-{name}.sqlite")
            seconds = time.perf_counter() - started
        manifest = json.loads((tmp / f"out-{name}" / "manifest.json").read_text())
        print(json.dumps({"setup": setup, "calls": manifest["calls"], "requests": manifest["client"]["requests"],
                          "prompt_tokens": manifest["client"]["prompt_tokens"], "seconds": round(seconds, 1),
                          "calls_per_s": round(manifest["calls"] / seconds, 3)}), flush=True)


if __name__ == "__main__":
    main()
