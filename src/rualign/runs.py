"""Run directories: atomic writes, content hashes, manifests and the finished-stage cache.

Every stage writes into its own folder; `manifest.json` is written last, so a folder without a manifest
(or with a manifest whose hash differs) is never trusted by a later stage.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import math
import os
import platform
import tempfile
import time
from importlib import metadata
from pathlib import Path
from typing import Any, Iterable, Iterator

from pydantic import BaseModel, ConfigDict, Field

from rualign.errors import RualignError
from rualign.textio import iter_jsonl, loads, read_utf8

MANIFEST = "manifest.json"
_VERSIONED = ("rualign", "torch", "transformers", "trl", "peft", "datasets", "accelerate", "openai", "httpx")


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on `path` (created with its folder) across processes; others wait. Used for the
    one-time model conversion (two DDP ranks starting at once) and for sweep workers sharing store nodes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _json_default(obj: Any):
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "model_dump"):
        return obj.model_dump(mode="json")
    if hasattr(obj, "item"):  # numpy scalars
        return obj.item()
    if isinstance(obj, (set, frozenset)):
        return sorted(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def _nulled(obj: Any) -> Any:
    """`obj` with every non-finite float replaced by None (JSON has no NaN or Infinity)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if hasattr(obj, "item") and not isinstance(obj, (str, bytes)):  # numpy scalars
        return _nulled(obj.item())
    if isinstance(obj, dict):
        return {k: _nulled(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_nulled(v) for v in obj]
    return obj


def dumps(obj: Any, **kwargs: Any) -> str:
    """json.dumps that always writes valid JSON: a NaN or Infinity (a diverged loss, a NaN cell of a parquet
    source) becomes null, never the bare `NaN` token that strict readers (and rualign's own) refuse."""
    kwargs.setdefault("ensure_ascii", False)
    try:
        return json.dumps(obj, allow_nan=False, default=_json_default, **kwargs)
    except ValueError:
        return json.dumps(_nulled(json.loads(json.dumps(obj, default=_json_default))), allow_nan=False, **kwargs)


def canonical_json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=_json_default)


def stable_hash(obj: Any, length: int = 16) -> str:
    """Hash of a JSON-able object that does not depend on key order or process."""
    return hashlib.sha256(canonical_json(obj).encode("utf-8")).hexdigest()[:length]


def file_hash(path: str | Path, length: int = 16) -> str:
    """Content hash of a file, or of every file under a folder (names and bytes)."""
    path = Path(path)
    digest = hashlib.sha256()
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    for file in files:
        if path.is_dir():
            digest.update(str(file.relative_to(path)).encode())
        with open(file, "rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()[:length]


def _disk_error(path: Path, exc: OSError) -> RualignError:
    if exc.errno == errno.ENOSPC:
        return RualignError("no space left on device while writing; nothing was replaced", path=path,
                            hint="free some disk space and rerun: finished work is reused")
    if exc.errno in (errno.EACCES, errno.EROFS, errno.EPERM):
        return RualignError("cannot write here (read-only or permission denied)", path=path,
                            hint="choose a writable --out folder")
    return RualignError(f"cannot write: {exc.strerror}", path=path)


@contextlib.contextmanager
def atomic_open(path: str | Path, mode: str = "w") -> Iterator[Any]:
    """Write to a temp file in the same folder, fsync, then rename over `path`.

    A crash leaves either the old file or the new one, never half of one.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise _disk_error(path, exc) from exc
    try:
        encoding = None if "b" in mode else "utf-8"
        with os.fdopen(fd, mode, encoding=encoding) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise _disk_error(path, exc) from exc
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def write_json(path: str | Path, obj: Any) -> None:
    """Write one JSON document (manifests, score.json, run.json) atomically; URL credentials are redacted
    here, the one sink every stored record passes through."""
    from rualign.redact import redact

    obj = redact(json.loads(dumps(obj)))
    with atomic_open(path) as handle:
        handle.write(dumps(obj, indent=2) + "\n")


def write_text(path: str | Path, text: str) -> None:
    with atomic_open(path) as handle:
        handle.write(text)


def write_jsonl(path: str | Path, rows: Iterable[Any]) -> int:
    count = 0
    with atomic_open(path) as handle:
        for row in rows:
            handle.write(dumps(row) + "\n")
            count += 1
    return count


class JsonlAppender:
    """Append-only JSONL for resumable work: one fsynced line per finished item.

    On open, a torn last line (from a kill mid-write) is cut off, so readers only see whole records.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            _truncate_torn_tail(self.path)
            self._handle = open(self.path, "a", encoding="utf-8")
        except OSError as exc:
            raise _disk_error(self.path, exc) from exc

    def append(self, row: Any) -> None:
        try:  # a line torn by a full disk is cut off by the next open, like one torn by a kill
            self._handle.write(dumps(row) + "\n")
            self._handle.flush()
            os.fsync(self._handle.fileno())
        except OSError as exc:
            raise _disk_error(self.path, exc) from exc

    def close(self) -> None:
        self._handle.close()

    def __enter__(self) -> "JsonlAppender":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _truncate_torn_tail(path: Path) -> None:
    if not path.exists() or path.stat().st_size == 0:
        return
    with open(path, "rb+") as handle:
        data = handle.read()
        if data.endswith(b"\n"):
            return
        keep = data.rfind(b"\n") + 1
        handle.truncate(keep)


def read_jsonl(path: str | Path) -> list[dict]:
    """Read a JSONL file (UTF-8, a BOM tolerated, as every reader here); a malformed line is an error naming
    file and line."""
    path = Path(path)
    return [row for _, row in iter_jsonl(path, read_utf8(path))]


def package_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in _VERSIONED:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


class Manifest(BaseModel):
    """manifest.json, written last into every stage folder: its presence with a matching hash marks it finished.

    The common fields are typed; each stage adds its own (counts, model_path, timings...), kept as extras and
    read as attributes (`manifest.model_path`). `version` as in rualign.records: files without it are version 1.
    """

    model_config = ConfigDict(extra="allow")
    version: int = 1
    stage: str
    config_hash: str
    finished_at: str | None = None
    versions: dict[str, str] = Field(default_factory=dict, description="python and package versions")
    files: dict[str, Any] | list[str] | None = Field(
        None, description="{name: {sha256, bytes}} of the files it vouches for (some stages: just their names)")

    def dump(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


def write_manifest(folder: str | Path, *, stage: str, config_hash: str, **fields: Any) -> Manifest:
    """Write the manifest last: its presence with a matching hash marks the stage finished."""
    manifest = Manifest(stage=stage, config_hash=config_hash,
                        finished_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                        versions=package_versions(), **fields)
    write_json(Path(folder) / MANIFEST, manifest.dump())
    return manifest


def read_manifest(folder: str | Path) -> Manifest | None:
    path = Path(folder) / MANIFEST
    if not path.exists():
        return None
    try:
        return Manifest.model_validate(loads(path.read_text(encoding="utf-8-sig")))
    except (ValueError, UnicodeDecodeError, RecursionError):  # JSONDecodeError and ValidationError are ValueErrors
        return None  # an unreadable manifest means "not finished", never a trusted output


def is_finished(folder: str | Path, config_hash: str) -> bool:
    """A manifest with this hash whose vouched-for files (if it lists any) are still intact."""
    manifest = read_manifest(folder)
    return manifest is not None and manifest.config_hash == config_hash and files_problem(folder, manifest) is None


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def files_record(folder: str | Path, names: Iterable[str]) -> dict[str, dict]:
    """{name: {sha256, bytes}} of the files a manifest vouches for (the manifest's `files` field)."""
    folder = Path(folder)
    return {name: {"sha256": sha256_file(folder / name), "bytes": (folder / name).stat().st_size}
            for name in names if (folder / name).is_file()}


def files_problem(folder: str | Path, manifest: Manifest) -> str | None:
    """Why the files a manifest vouches for are not the ones it was written for (None: intact, or a
    manifest from before `files` existed). Size first, so a truncated file costs no hashing."""
    files = manifest.files
    if not isinstance(files, dict):
        return None
    folder = Path(folder)
    for name, entry in files.items():
        path = folder / name
        if not isinstance(entry, dict) or not path.is_file():
            return f"{name} is missing"
        size = path.stat().st_size
        if size != entry.get("bytes"):
            return f"{name} has {size} bytes, the manifest recorded {entry.get('bytes')} (cut short or changed)"
        if sha256_file(path) != entry.get("sha256"):
            return f"{name} changed since it was written (sha256 differs from the manifest)"
    return None


def verify_files(folder: str | Path, manifest: Manifest) -> None:
    """Refuse a folder whose files no longer match its manifest: a later stage never trusts them."""
    problem = files_problem(folder, manifest)
    if problem:
        raise RualignError(f"{problem}; this folder is not trusted", path=Path(folder) / MANIFEST,
                           hint="rebuild it (rualign data RECIPE --out FOLDER --force) or restore the file")


def rualign_home() -> Path:
    return Path(os.environ.get("RUALIGN_HOME", Path.home() / ".cache" / "rualign"))
