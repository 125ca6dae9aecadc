"""Names that become paths, and writes or deletes that must stay inside the folder a command owns.

One rule for every name a config turns into a folder or file name (experiment, stage, source, data key,
run): `check_name`. One rule for every write or delete: `contained` (resolve, then check containment), so a
name that slipped through, a symlink, or an `--out` that is an input can never make rualign touch a file
outside the folder it owns.
"""

from __future__ import annotations

import contextlib
import re
import shutil
from pathlib import Path
from typing import Annotated, Iterable, Iterator

from pydantic import AfterValidator

from rualign.errors import RualignError

# A letter or digit first: no `.`, `..`, hidden names, `-option`-looking names, and no leading `_`, which is
# the tool's own namespace (`_store`, `_data`); then letters, digits and `_ . + -`, never a separator.
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]*")
MAX_NAME = 100
# Folders rualign writes beside user-named ones (`<out>/report` beside run folders), plus names Windows
# cannot create. Compared case-insensitively (macOS and Windows file systems are case-insensitive).
_DEVICES = frozenset({"con", "prn", "aux", "nul", *(f"com{i}" for i in range(1, 10)),
                      *(f"lpt{i}" for i in range(1, 10))})  # also with any extension: "nul.txt"
RESERVED = frozenset({"report", "_store", "_data", *_DEVICES})
NAME_RULE = (f"1-{MAX_NAME} characters: a letter or digit, then letters, digits, '_', '.', '+', '-' "
             f"(not {', '.join(sorted(n for n in RESERVED if len(n) > 4 or n == 'report'))})")


def name_problem(value: object) -> str | None:
    """Why `value` cannot name a folder, or None when it can."""
    if not isinstance(value, str):
        return f"a name must be text, got {type(value).__name__}"
    if not value:
        return "a name cannot be empty"
    if len(value) > MAX_NAME:
        return f"a name is at most {MAX_NAME} characters (got {len(value)})"
    if not _NAME.fullmatch(value) or ".." in value:
        return f"{value!r} cannot be a folder name"
    stem = value.split(".")[0].lower()
    if stem in _DEVICES:
        return f"{value!r} is a device name on Windows, not a possible file name there"
    if value.lower() in RESERVED:
        return f"{value!r} is a name rualign uses for its own folders"
    if value.lower().endswith(".log"):  # `rualign train` writes <stage>.log beside each stage folder
        return f"{value!r} ends in .log, the name of a stage's log file"
    return None


def check_name(value: str) -> str:
    """Pydantic validator (and plain check) for every name that becomes a path; raises ValueError."""
    problem = name_problem(value)
    if problem:
        raise ValueError(f"{problem}; expected {NAME_RULE}")
    return value


SafeName = Annotated[str, AfterValidator(check_name)]


def contained(root: str | Path, path: str | Path, *, action: str = "write") -> Path:
    """`path` resolved, after checking it lies strictly inside `root` (both resolved: `..` and symlinks
    followed). Anything else is a RualignError, raised before any byte is written or deleted."""
    base = Path(root).resolve()
    target = Path(path).resolve()
    if target == base or not target.is_relative_to(base):
        raise RualignError(f"refusing to {action} {target}: it is outside the folder this command owns ({base})",
                           path=path)
    return target


def remove_tree(root: str | Path, path: str | Path) -> None:
    """rmtree `path` only when it is a real folder strictly inside `root` (a symlink is unlinked, not
    followed: it points at another stage's output)."""
    path = Path(path)
    if path.is_symlink():
        if path.parent.resolve() != Path(root).resolve():
            contained(root, path.parent, action="delete in")
        path.unlink()
        return
    if not path.exists():
        return
    contained(root, path, action="delete")
    if path.is_dir():
        shutil.rmtree(path)
    else:
        path.unlink()


def _local(item: str | Path | None) -> Path | None:
    text = str(item) if item is not None else ""
    if not text or ":" in text.split("/")[0]:  # bundled:, hf:, http: are not local files
        return None
    path = Path(text).expanduser()
    return path.resolve() if path.exists() else None  # what does not exist cannot be overwritten


def overlapping(inputs: Iterable[str | Path | None], *, files: Iterable[str | Path] = (),
                trees: Iterable[str | Path] = ()) -> tuple[Path, Path] | None:
    """(output, input) for the first input that an output would overwrite: a file the stage writes that is
    the input, or a folder the stage replaces as a whole (cleans, rmtree) that is or holds the input."""
    local = [(Path(str(i)), _local(i)) for i in inputs if _local(i) is not None]
    for out in files:
        resolved = Path(out).resolve()
        for given, inp in local:
            if inp == resolved:
                return Path(out), given
    for out in trees:
        resolved = Path(out).resolve()
        for given, inp in local:
            if inp == resolved or inp.is_relative_to(resolved):
                return Path(out), given
    return None


def refuse_overlap(inputs: Iterable[str | Path | None], *, files: Iterable[str | Path] = (),
                   trees: Iterable[str | Path] = (), flag: str = "--out") -> None:
    """Refuse before any work when an output would replace or delete one of the stage's inputs."""
    hit = overlapping(inputs, files=files, trees=trees)
    if hit:
        out, given = hit
        raise RualignError(f"{flag}: writing {out} would overwrite the input {given}", path=str(out),
                           hint="choose an output location that does not hold the inputs")


def out_folder(path: str | Path, *, flag: str = "--out") -> Path:
    """An output folder argument, checked before any work: it must be a folder or not exist yet."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise RualignError(f"{flag} {path} is a file, not a folder", path=str(path),
                           expected="a folder (it is created when missing)")
    for parent in path.resolve().parents:
        if parent.exists():
            if not parent.is_dir():
                raise RualignError(f"{flag} {path}: {parent} is a file, not a folder", path=str(path))
            break
    return path


def out_file(path: str | Path, *, flag: str = "--out") -> Path:
    """An output file argument, checked before any work: not a folder, and its folder is not a file."""
    path = Path(path)
    if path.is_dir():
        raise RualignError(f"{flag} {path} is a folder", path=str(path), expected="a file path to write")
    out_folder(path.parent, flag=flag)
    return path


@contextlib.contextmanager
def exclusive_lock(folder: str | Path, what: str) -> Iterator[None]:
    """Hold `<folder>/.lock` for the duration, or refuse at once when another process holds it (two
    `rualign run` on one store would do every stage twice and race on the same files)."""
    import fcntl
    import os

    folder = out_folder(folder, flag=what)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / ".lock"
    handle = open(path, "a+", encoding="utf-8")
    try:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            raise RualignError(f"{what} {folder} is in use by {holder}", path=str(path),
                               hint="wait for it to finish (finished stages are then reused), or use another "
                                    "--out / --store") from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()}")
        handle.flush()
        yield
    finally:
        handle.close()  # closing releases the lock; the file stays (removing it would race a waiting run)
