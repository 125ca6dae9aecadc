"""SQLite cache of finished judge calls, shared safely by concurrent processes.

WAL mode lets readers and one writer proceed together; busy_timeout makes a second process wait for the
write lock instead of failing. Each successful call is committed the moment it returns (autocommit), so a
kill -9 loses at most the calls that were in flight. Failed calls are never cached: a rerun retries them.
The key covers everything that determines the judge's output; API keys are never part of it.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import time
from pathlib import Path
from typing import Any

from rualign.errors import RualignError
from rualign.runs import canonical_json, rualign_home

SCHEMA_VERSION = 1


def default_cache_path() -> Path:
    return rualign_home() / "judge_cache.sqlite"


def cache_key(*, model: str, params: dict, template_version: str, messages: list[dict],
              answer_a: str, answer_b: str, order: str) -> str:
    """sha256 over everything that determines one judge call's output."""
    material = {"v": SCHEMA_VERSION, "model": model, "params": params, "template": template_version,
                "messages": messages, "answer_a": answer_a, "answer_b": answer_b, "order": order}
    return hashlib.sha256(canonical_json(material).encode("utf-8")).hexdigest()


class JudgeCache:
    def __init__(self, path: str | Path, *, busy_timeout_s: float = 60.0):
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # isolation_level=None: autocommit, every put is durable on return.
            self._db = sqlite3.connect(self.path, timeout=busy_timeout_s, isolation_level=None,
                                       check_same_thread=False)
            self._db.execute(f"PRAGMA busy_timeout={int(busy_timeout_s * 1000)}")
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL survives process kills
            self._db.execute("CREATE TABLE IF NOT EXISTS calls (key TEXT PRIMARY KEY, created REAL NOT NULL, "
                             "value TEXT NOT NULL)")
        except sqlite3.DatabaseError as exc:
            raise RualignError(f"cannot open the judge cache: {exc}", path=self.path,
                               hint="delete the file to start a fresh cache, or pass another --cache") from exc

    def get(self, key: str) -> dict | None:
        row = self._db.execute("SELECT value FROM calls WHERE key = ?", (key,)).fetchone()
        if row is None:
            return None
        try:
            return json.loads(row[0])
        except json.JSONDecodeError:
            return None  # an unreadable entry is a miss, never a result

    def put(self, key: str, value: dict[str, Any]) -> None:
        self._db.execute("INSERT OR REPLACE INTO calls (key, created, value) VALUES (?, ?, ?)",
                         (key, time.time(), json.dumps(value, ensure_ascii=False)))

    def keys(self) -> set[str]:
        return {row[0] for row in self._db.execute("SELECT key FROM calls")}

    def __len__(self) -> int:
        return int(self._db.execute("SELECT COUNT(*) FROM calls").fetchone()[0])

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> "JudgeCache":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
