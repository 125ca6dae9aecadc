"""A fault-injecting OpenAI-compatible chat server for judge tests (real HTTP on 127.0.0.1, a free port).

Per request it injects, from an RNG seeded by (seed, request key, attempt number), with probability
`fault_rate`: 429 with Retry-After, 500, a response delayed past the client's timeout, a garbage body,
truncated JSON, or empty choices. Seeding per key and attempt keeps each key's fault sequence the same
however concurrent requests interleave; `max_faults_per_key` bounds the faults in a row so a client with
enough retries always gets through (prompts containing FAIL_MARKER always get 500, to test failures).

Otherwise it answers deterministically from the request: the longer of the two answers in the judge
prompt wins (equal lengths: tie), as one letter with top_logprobs, or as a JSON verdict.
Every request is logged as (key, outcome); the key is a hash of the request's messages.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import re
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

FAULTS = ("429", "500", "slow", "garbage", "truncated", "empty")
FAIL_MARKER = "ВСЕГДА_ОШИБКА"
UNPARSEABLE_MARKER = "НЕРАЗБОРЧИВО"
_ANSWER = re.compile(r"\[Ответ ([AB])\]\n(.*?)\n\n\[Конец ответа \1\]", re.DOTALL)


def request_key(messages: list[dict]) -> str:
    return hashlib.sha256(json.dumps(messages, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


def winner_of(messages: list[dict]) -> str:
    """'A', 'B' or 'tie': the longer answer in the first user turn wins."""
    user = next((m["content"] for m in messages if m.get("role") == "user"), "")
    answers = dict((slot, text) for slot, text in _ANSWER.findall(user))
    a, b = len(answers.get("A", "")), len(answers.get("B", ""))
    return "A" if a > b else "B" if b > a else "tie"


# The letter distribution the server reports: the winner's letter in two spellings, the others lower.
LETTER_PROBS = {"win": 0.6, "win_space": 0.1, "other": 0.15, "tie": 0.1, "junk": 0.05}


def top_logprobs_for(winner: str) -> list[dict]:
    letter = {"A": "A", "B": "B", "tie": "C"}[winner]
    other = {"A": "B", "B": "A", "tie": "A"}[winner]
    tie_letter = "C" if winner != "tie" else "B"
    p = LETTER_PROBS
    return [{"token": letter, "logprob": math.log(p["win"])},
            {"token": " " + letter.lower(), "logprob": math.log(p["win_space"])},
            {"token": other, "logprob": math.log(p["other"])},
            {"token": tie_letter, "logprob": math.log(p["tie"])},
            {"token": "Ответ", "logprob": math.log(p["junk"])}]


class FaultServer:
    def __init__(self, *, fault_rate: float = 0.3, seed: int = 0, faults: tuple[str, ...] = FAULTS,
                 slow_s: float = 3.5, retry_after: str = "0", max_faults_per_key: int = 3, logprobs: bool = True,
                 delay_s: float = 0.0, status_override: int | None = None):
        self.fault_rate, self.seed, self.faults = fault_rate, seed, faults
        self.slow_s, self.retry_after, self.max_faults = slow_s, retry_after, max_faults_per_key
        self.logprobs, self.delay_s, self.status_override = logprobs, delay_s, status_override
        self.log: list[tuple[str, str]] = []
        self.headers: list[dict] = []
        self.arrived = 0  # chat requests counted when they arrive, so a slow reply can't be counted late
        self._attempts: Counter = Counter()
        self._lock = threading.Lock()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._httpd.daemon_threads = True
        self.port = self._httpd.server_address[1]
        self.base_url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    def __enter__(self) -> "FaultServer":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    # -- what the tests read
    def outcomes(self, key: str) -> list[str]:
        with self._lock:
            return [o for k, o in self.log if k == key]

    def ok_counts(self) -> Counter:
        with self._lock:
            return Counter(k for k, o in self.log if o == "ok")

    def requests(self) -> int:
        """Chat requests received so far. Counted on arrival, not when answered: a "slow" reply is still being
        written after the client gave up on it, and counting it then made a finished run look like it called
        again later."""
        with self._lock:
            return self.arrived

    # -- behaviour
    def _decide(self, key: str, messages: list[dict]) -> str:
        with self._lock:
            attempt = self._attempts[key]
            self._attempts[key] += 1
        if any(FAIL_MARKER in str(m.get("content")) for m in messages):
            return "500"
        rng = random.Random(f"{self.seed}:{key}:{attempt}")
        if attempt < self.max_faults and rng.random() < self.fault_rate:
            return rng.choice(self.faults)
        return "ok"

    def _record(self, key: str, outcome: str) -> None:
        with self._lock:
            self.log.append((key, outcome))

    def completion(self, body: dict) -> dict:
        messages = body.get("messages") or []
        winner = winner_of(messages)
        want_logprobs = bool(body.get("logprobs")) and self.logprobs
        choice: dict = {"index": 0, "finish_reason": "stop"}
        if body.get("max_tokens") == 1:
            letter = {"A": "A", "B": "B", "tie": "C"}[winner]
            choice["message"] = {"role": "assistant", "content": letter}
            if want_logprobs:
                top = top_logprobs_for(winner)
                choice["logprobs"] = {"content": [{"token": letter, "logprob": top[0]["logprob"],
                                                   "top_logprobs": top}]}
        else:
            first_try = len(messages) <= 2
            if first_try and any(UNPARSEABLE_MARKER in str(m.get("content")) for m in messages):
                text = "Сложно сказать, у каждого ответа есть сильные стороны."
            else:
                fields = {k: winner for k in ("relevance", "helpfulness", "clarity", "language", "overall")}
                text = "Вот моя оценка:\n```json\n" + json.dumps({**fields, "reason": "длиннее"},
                                                                ensure_ascii=False) + "\n```"
            choice["message"] = {"role": "assistant", "content": text}
        prompt_chars = sum(len(str(m.get("content", ""))) for m in messages)
        return {"id": "cmpl-test", "object": "chat.completion", "model": body.get("model"), "choices": [choice],
                "usage": {"prompt_tokens": prompt_chars // 4, "completion_tokens": 1}}

    def _handler(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:  # keep test output clean
                return None

            def _send(self, status: int, body: bytes, headers: dict | None = None) -> None:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:
                if self.path.rstrip("/") == "/v1/models":
                    self._send(200, json.dumps({"object": "list", "data": [{"id": "fault"}]}).encode())
                else:
                    self._send(404, b'{"error": "not found"}')

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", 0))
                body = json.loads(self.rfile.read(length) or b"{}")
                with server._lock:
                    server.headers.append(dict(self.headers))
                if self.path.rstrip("/") != "/v1/chat/completions":
                    self._send(404, b'{"error": "not found"}')
                    return
                with server._lock:
                    server.arrived += 1
                if server.status_override:
                    server._record(request_key(body.get("messages") or []), str(server.status_override))
                    self._send(server.status_override, b'{"error": "refused"}')
                    return
                key = request_key(body.get("messages") or [])
                outcome = server._decide(key, body.get("messages") or [])
                if server.delay_s:
                    time.sleep(server.delay_s)
                payload = json.dumps(server.completion(body), ensure_ascii=False).encode()
                try:
                    self._respond(outcome, payload)
                    server._record(key, outcome)
                except (BrokenPipeError, ConnectionResetError):
                    server._record(key, "disconnected" if outcome == "ok" else outcome)

            def _respond(self, outcome: str, payload: bytes) -> None:
                if outcome == "ok":
                    self._send(200, payload)
                elif outcome == "429":
                    self._send(429, b'{"error": "rate limited"}', {"Retry-After": server.retry_after})
                elif outcome == "500":
                    self._send(500, b'{"error": "internal"}')
                elif outcome == "slow":
                    time.sleep(server.slow_s)
                    self._send(200, payload)
                elif outcome == "garbage":
                    self._send(200, b"<html><body>502 Bad Gateway</body></html>")
                elif outcome == "truncated":
                    self._send(200, payload[: len(payload) // 2])
                elif outcome == "empty":
                    self._send(200, b'{"id": "x", "choices": []}')

        return Handler
