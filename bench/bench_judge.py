"""Judge client throughput against a loopback OpenAI-compatible server with a fixed latency and capacity.

The server (tests/fault_server.py without faults, in its own process) holds each request for LATENCY_S and serves at most
CAPACITY at once (a semaphore; the rest queue), so its ceiling is CAPACITY / LATENCY_S requests/s. Ours:
`run_judge` with `concurrency: CAPACITY` on PROMPTS pairs (logprob mode, both orders). Then a rerun of the
finished judgement into a fresh folder (only the SQLite call cache can help) and into the same folder:
HTTP calls made (goal 0).

    python bench/bench_judge.py
"""

from __future__ import annotations

import json
import sys
import tempfile
import threading
import time
from pathlib import Path

from common import Row, peak_rss_mb

TESTS = Path(__file__).resolve().parent.parent / "tests"
LATENCY_S, CAPACITY, PROMPTS = 0.2, 8, 100


def _server_class():
    sys.path.insert(0, str(TESTS))
    from fault_server import FaultServer

    class LatencyServer(FaultServer):
        """No faults; each answer takes latency_s and at most `capacity` are in progress (the rest queue).
        HTTP/1.1 keep-alive and a deep listen backlog, like a real inference server (the test server's
        HTTP/1.0 closes every connection and its backlog of 5 drops bursts of connects)."""

        def __init__(self, latency_s: float, capacity: int):
            super().__init__(fault_rate=0.0)
            self.latency_s, self._slots = latency_s, threading.Semaphore(capacity)
            handler, server = self._httpd.RequestHandlerClass, self
            handler.protocol_version = "HTTP/1.1"
            self._httpd.socket.listen(256)
            models = handler.do_GET

            def do_get(h) -> None:
                if h.path == "/stats":  # the request count, for a server in another process
                    h._send(200, json.dumps({"requests": server.requests()}).encode())
                else:
                    models(h)

            handler.do_GET = do_get

        def completion(self, body: dict) -> dict:
            with self._slots:
                time.sleep(self.latency_s)
                return super().completion(body)

    return LatencyServer


class ServerProcess:
    """The server in its own process (own GIL and CPU share), as a real server would be."""

    def __enter__(self) -> "ServerProcess":
        import subprocess

        self.proc = subprocess.Popen([sys.executable, __file__, "--serve"], stdout=subprocess.PIPE, text=True)
        self.base_url = self.proc.stdout.readline().strip()
        return self

    def requests(self) -> int:
        import httpx

        return httpx.get(self.base_url + "/stats").json()["requests"]

    def __exit__(self, *exc: object) -> None:
        self.proc.terminate()
        self.proc.wait(10)


def _serve() -> None:
    with _server_class()(LATENCY_S, CAPACITY) as server:
        print(server.base_url, flush=True)
        threading.Event().wait()


def _answers(folder: Path) -> tuple[Path, Path]:
    def rows(model: bool) -> list[dict]:
        out = []
        for i in range(PROMPTS):
            long, short = "Подробный ответ про реку. " * 4 + str(i), f"Кратко {i}."
            text = (long if i % 2 == 0 else short) if model else (short if i % 2 == 0 else long)
            out.append({"id": f"p{i}", "prompt": [{"role": "user", "content": f"Расскажи про реку {i}."}],
                        "category": "geo", "answer": text, "answer_tokens": len(text) // 3, "tokenizer": "t",
                        "finish_reason": "stop", "generator": {"backend": "bench", "model": "m", "adapter": None},
                        "params": {}})
        return out

    paths = folder / "answers.jsonl", folder / "reference.jsonl"
    for path, model in zip(paths, (True, False)):
        path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows(model)), encoding="utf-8")
    return paths


def run() -> list[Row]:
    import rualign.eval.judge as judge_mod
    from rualign.eval.judge import run_judge
    from rualign.eval.schema import JudgeConfig

    phases: list[float] = []
    calling = judge_mod._judge_all

    async def timed(*args, **kwargs):  # the calling phase alone (run_judge also pairs, scores, writes)
        started = time.perf_counter()
        try:
            return await calling(*args, **kwargs)
        finally:
            phases.append(time.perf_counter() - started)

    judge_mod._judge_all = timed

    rows = []
    for concurrency in (2 * CAPACITY, CAPACITY):
        phases.clear()
        with tempfile.TemporaryDirectory() as tmp, ServerProcess() as server:
            tmp = Path(tmp)
            answers, reference = _answers(tmp)
            cfg = JudgeConfig(backend="openai", base_url=server.base_url, model="bench", concurrency=concurrency,
                              timeout_s=30, cache=str(tmp / "cache.sqlite"))
            started = time.perf_counter()
            run_judge(answers, reference, cfg, tmp / "first")
            seconds = time.perf_counter() - started
            calls = server.requests()
            run_judge(answers, reference, cfg, tmp / "fresh-folder")
            run_judge(answers, reference, cfg, tmp / "first")
            rerun_calls = server.requests() - calls
        ceiling = CAPACITY / LATENCY_S
        achieved = calls / phases[0]
        print(f"concurrency {concurrency}: {calls} calls in {phases[0]:.2f} s = {achieved:.1f} req/s of "
              f"{ceiling:.0f} (whole run_judge {seconds:.2f} s); rerun calls {rerun_calls}", flush=True)
        main = concurrency == 2 * CAPACITY
        rows.append(Row(
            "judge", f"judge requests/s vs server capacity ({CAPACITY} slots x {LATENCY_S * 1000:.0f} ms, "
                     f"{PROMPTS} pairs), concurrency {concurrency}", round(achieved, 1), ceiling,
            "server ceiling", ">= 0.9x" if main else "-", achieved >= 0.9 * ceiling if main else None,
            f"{calls} calls in {phases[0]:.2f} s; whole run_judge (pair, score with bootstrap, write) "
            f"{seconds:.2f} s" + ("" if main else "; at concurrency = slots each slot idles for the "
                                  "client's round trip"), peak_rss_mb()))
        if main:
            rows.append(Row("judge", "HTTP calls when rerunning a finished judgement (fresh folder, then same "
                            "folder)", rerun_calls, None, "", "0", rerun_calls == 0,
                            "answered from the SQLite call cache / reused output", peak_rss_mb()))
    judge_mod._judge_all = calling
    return rows


if __name__ == "__main__":
    if sys.argv[1:] == ["--serve"]:
        _serve()
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    for row in run():
        print(row)
