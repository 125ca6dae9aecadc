"""llama.cpp's OpenAI-compatible server as a child process: start on a free loopback port, wait, stop.

`python -m llama_cpp.server --model <gguf> --host 127.0.0.1 --port N --n_ctx 4096`. It binds 127.0.0.1
only. The child is stopped by its pid when the `with` block ends: normally, on an exception and on
Ctrl-C; on Linux it also gets SIGTERM if this process dies without cleaning up (PR_SET_PDEATHSIG).
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib.util
import logging
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from rualign.errors import MissingExtraError, RualignError

log = logging.getLogger(__name__)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def resolve_gguf(model: str) -> Path:
    from rualign.models import is_embedded, judge_gguf_path

    if is_embedded(model):
        return judge_gguf_path(model)
    path = Path(model).expanduser()
    if not path.is_file() or path.suffix != ".gguf":
        raise RualignError("the llamacpp judge needs a GGUF file", path=model,
                           expected="llamacpp:default or llamacpp:/path/to/model.gguf")
    return path


def _die_with_parent() -> None:
    """preexec_fn: ask the kernel to SIGTERM the server when its parent dies (Linux only, best effort)."""
    with contextlib.suppress(Exception):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class LlamaServer:
    def __init__(self, gguf: str | Path, *, n_ctx: int = 4096, start_timeout_s: float = 120.0,
                 extra_args: list[str] | None = None, threads: int | None = None):
        if importlib.util.find_spec("llama_cpp") is None:
            raise MissingExtraError("llama-cpp-python", "demo", "The llamacpp judge")
        self.gguf = Path(gguf)
        self.n_ctx = n_ctx
        self.start_timeout_s = start_timeout_s
        self.extra_args = extra_args or []
        # Prompt evaluation dominates a judge call (one output token): give it the slot's share of the cores.
        if threads:
            self.extra_args = ["--n_threads", str(threads), "--n_threads_batch", str(threads), *self.extra_args]
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        self.model_id: str | None = None
        self.process: subprocess.Popen | None = None
        self._log = tempfile.NamedTemporaryFile(prefix="rualign-llamacpp-", suffix=".log", delete=False)

    def start(self) -> "LlamaServer":
        """Start the process and wait until it answers."""
        cmd = [sys.executable, "-m", "llama_cpp.server", "--model", str(self.gguf), "--host", "127.0.0.1",
               "--port", str(self.port), "--n_ctx", str(self.n_ctx), *self.extra_args]
        log.info("starting llama.cpp server: %s", " ".join(cmd))
        preexec = _die_with_parent if sys.platform.startswith("linux") else None
        self.process = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                        preexec_fn=preexec)
        self._wait_ready()
        return self

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.start_timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RualignError(f"the llama.cpp server exited with code {self.process.returncode} while "
                                   f"starting:\n{self.log_tail()}", path=self.gguf)
            with contextlib.suppress(httpx.HTTPError):
                response = httpx.get(f"{self.base_url}/models", timeout=2.0)
                if response.status_code == 200:
                    data = response.json().get("data") or [{}]
                    self.model_id = data[0].get("id") or str(self.gguf)
                    return
            time.sleep(0.2)
        self.stop()
        raise RualignError(f"the llama.cpp server did not answer within {self.start_timeout_s:.0f} s:\n"
                           f"{self.log_tail()}", path=self.gguf)

    def log_tail(self, lines: int = 15) -> str:
        with contextlib.suppress(OSError):
            text = Path(self._log.name).read_text(encoding="utf-8", errors="replace")
            return "\n".join(text.splitlines()[-lines:])
        return "(no log)"

    def stop(self) -> None:
        """Stop the child by its pid: SIGTERM, then SIGKILL if it lingers."""
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)
        with contextlib.suppress(OSError):
            self._log.close()
            self._keep_log()
            os.unlink(self._log.name)

    def _keep_log(self) -> None:
        """The server's own log goes to the stage log (rualign.progress) or, with -v, to the screen."""
        from rualign.progress import current_log, verbose

        if current_log() is not None or verbose():
            text = Path(self._log.name).read_text(encoding="utf-8", errors="replace")
            sys.stderr.write(f"--- llama.cpp server {self.gguf.name} on port {self.port} ---\n{text}\n")
            sys.stderr.flush()

    def __enter__(self) -> "LlamaServer":
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc: object) -> None:
        self.stop()
