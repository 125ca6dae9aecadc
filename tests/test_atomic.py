"""Crashes, full disks and read-only folders never leave an output a later stage would trust.

Tests run as root here, so `chmod -w` does not stop writes: read-only (EROFS/EACCES) and disk-full (ENOSPC)
are simulated by monkeypatching the OS calls that rualign.runs uses, which is exactly where a real failure
would surface.
"""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import pytest

from rualign import runs
from rualign.cli import main
from rualign.errors import RualignError
from rualign.runs import JsonlAppender, atomic_open, is_finished, read_manifest, write_json, write_jsonl


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


# ------------------------------------------------------------------ runs.atomic_open

def test_crash_mid_write_keeps_the_old_file_and_no_temp(tmp_path):
    target = tmp_path / "score.json"
    write_json(target, {"score": 61.0})
    with pytest.raises(RuntimeError, match="killed"):
        with atomic_open(target) as handle:
            handle.write('{"score": 12')  # half a document...
            raise RuntimeError("killed")  # ...and the process dies
    assert json.loads(target.read_text()) == {"score": 61.0}
    assert leftovers(tmp_path) == []


def test_failed_rename_keeps_the_old_file(tmp_path, monkeypatch):
    target = tmp_path / "train.jsonl"
    write_jsonl(target, [{"id": "old"}])

    def broken_replace(src, dst):
        raise OSError(errno.EIO, "I/O error")

    monkeypatch.setattr(runs.os, "replace", broken_replace)
    with pytest.raises(RualignError, match="cannot write"):
        write_jsonl(target, [{"id": "new"}] * 3)
    assert target.read_text() == '{"id": "old"}\n' and leftovers(tmp_path) == []


@pytest.mark.parametrize("code, message", [(errno.ENOSPC, "no space left on device"),
                                           (errno.EROFS, "read-only or permission denied"),
                                           (errno.EACCES, "read-only or permission denied")])
def test_disk_errors_become_user_errors(tmp_path, monkeypatch, code, message):
    target = tmp_path / "manifest.json"
    write_json(target, {"config_hash": "old"})
    real_fsync = os.fsync

    def failing_fsync(fd):
        real_fsync(fd)
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(runs.os, "fsync", failing_fsync)
    with pytest.raises(RualignError, match=message) as info:
        write_json(target, {"config_hash": "new"})
    assert str(target) in str(info.value)
    assert json.loads(target.read_text()) == {"config_hash": "old"} and leftovers(tmp_path) == []


def test_torn_manifest_is_never_trusted(tmp_path):
    (tmp_path / "manifest.json").write_text('{"stage": "judge", "config_hash": "abc"')  # torn by a crash
    assert read_manifest(tmp_path) is None and not is_finished(tmp_path, "abc")


def test_appender_cuts_a_torn_tail_and_reports_disk_errors(tmp_path, monkeypatch):
    work = tmp_path / "answers.work.jsonl"
    work.write_text('{"id": "a"}\n{"id": "b", "ans')  # kill -9 mid-line
    with JsonlAppender(work) as appender:
        appender.append({"id": "c"})
    assert [json.loads(line)["id"] for line in work.read_text().splitlines()] == ["a", "c"]

    def full_disk(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(runs.os, "fsync", full_disk)
    with pytest.raises(RualignError, match="no space left on device"):
        with JsonlAppender(work) as appender:
            appender.append({"id": "d"})


# ------------------------------------------------------------------ stages through the CLI

def _gm_rows(n: int) -> str:
    rows = [{"conversation": [{"role": "user", "content": f"Вопрос {i}?"},
                              {"role": "assistant", "content": f"Ответ номер {i}: " + "слово " * (i + 1)}]}
            for i in range(n)]
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)


@pytest.fixture
def recipe_dir(tmp_path):
    (tmp_path / "gm.jsonl").write_text(_gm_rows(12), encoding="utf-8")
    (tmp_path / "a.yaml").write_text("val_fraction: 0.3\nsources:\n  - {name: gm, format: grandmaster, "
                                     "path: gm.jsonl}\n", encoding="utf-8")
    (tmp_path / "b.yaml").write_text("val_fraction: 0.3\nsources:\n  - {name: gm, format: grandmaster, "
                                     "path: gm.jsonl, sample: {count: 4}}\n", encoding="utf-8")
    return tmp_path


def _fd_names(monkeypatch):
    """os.fdopen(fd) handles are named by their fd; record the temp path per fd via tempfile.mkstemp."""
    real = runs.tempfile.mkstemp
    names: dict[int, str] = {}

    def mkstemp(*args, **kwargs):
        fd, path = real(*args, **kwargs)
        names[fd] = Path(path).name
        return fd, path

    monkeypatch.setattr(runs.tempfile, "mkstemp", mkstemp)
    return names


def _fail_writes_of(monkeypatch, name: str, code: int) -> None:
    names = _fd_names(monkeypatch)
    real_fsync = runs.os.fsync

    def fsync(fd):
        if names.get(fd, "").startswith(f".{name}."):
            raise OSError(code, os.strerror(code))
        real_fsync(fd)

    monkeypatch.setattr(runs.os, "fsync", fsync)


def test_data_stage_disk_full_is_a_clear_error_and_nothing_is_trusted(recipe_dir, monkeypatch, capsys,
                                                                       default_model_dir):
    monkeypatch.chdir(recipe_dir)
    monkeypatch.setenv("RUALIGN_QUIET", "1")
    out = recipe_dir / "out"
    assert main(["data", "a.yaml", "--out", str(out)]) == 0
    good = {name: (out / name).read_bytes() for name in ("train.jsonl", "val.jsonl", "manifest.json")}
    hash_a = json.loads(good["manifest.json"])["config_hash"]
    # Recipe b into the same folder; the disk fills up after train.jsonl is written, at val.jsonl.
    with monkeypatch.context() as patch:
        _fail_writes_of(patch, "val.jsonl", errno.ENOSPC)
        assert main(["data", "b.yaml", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "no space left on device" in err and "val.jsonl" in err and "Traceback" not in err
    assert leftovers(out) == []
    # train.jsonl now holds b's rows, so no manifest may vouch for the folder: not a's (stale), not b's.
    manifest = read_manifest(out)
    if (out / "train.jsonl").read_bytes() != good["train.jsonl"]:
        assert manifest is None or manifest.config_hash != hash_a, \
            "a's manifest still vouches for a folder whose train.jsonl is b's"
    # Rerunning a must rebuild it, not reuse the half-replaced folder.
    assert main(["data", "a.yaml", "--out", str(out)]) == 0
    assert {name: (out / name).read_bytes() for name in ("train.jsonl", "val.jsonl")} == \
        {k: v for k, v in good.items() if k != "manifest.json"}


@pytest.mark.parametrize("code", [errno.EROFS, errno.EACCES])
def test_data_stage_read_only_output_folder(recipe_dir, monkeypatch, capsys, code, default_model_dir):
    monkeypatch.chdir(recipe_dir)
    monkeypatch.setenv("RUALIGN_QUIET", "1")

    def refuse(*args, **kwargs):  # root ignores chmod; a read-only mount refuses at file creation
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(runs.tempfile, "mkstemp", refuse)
    assert main(["data", "a.yaml", "--out", str(recipe_dir / "out")]) == 2
    err = capsys.readouterr().err
    assert "cannot write here (read-only or permission denied)" in err and "Traceback" not in err
    assert not (recipe_dir / "out" / "manifest.json").exists()


def test_judge_crash_writing_score_leaves_no_trusted_output(tmp_path, monkeypatch, capsys):
    from fault_server import FaultServer

    rows = [{"id": f"q{i}", "prompt": [{"role": "user", "content": f"Вопрос {i}?"}], "answer": "Ответ." * (i + 1)}
            for i in range(3)]
    (tmp_path / "a.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    (tmp_path / "r.jsonl").write_text("".join(json.dumps({**r, "answer": "Эталон."}, ensure_ascii=False) + "\n"
                                              for r in rows))
    out = tmp_path / "out"
    with FaultServer(fault_rate=0.0) as server:
        argv = ["judge", "--answers", str(tmp_path / "a.jsonl"), "--reference", str(tmp_path / "r.jsonl"),
                "--judge", f"openai:fault@{server.base_url}/v1", "--out", str(out), "--cache", str(tmp_path / "c.db")]
        assert main(argv) == 0
        old_score = (out / "score.json").read_bytes()
        # Same folder, another seed: the disk fills up while score.json is written.
        with monkeypatch.context() as patch:
            _fail_writes_of(patch, "score.json", errno.ENOSPC)
            assert main([*argv, "--seed", "7"]) == 2
        err = capsys.readouterr().err
        assert "score.json" in err and "no space left on device" in err and "Traceback" not in err
        assert (out / "score.json").read_bytes() == old_score and leftovers(out) == []
        assert read_manifest(out) is None  # judgments.jsonl is the new run's: nothing vouches for the folder
        assert main([*argv, "--seed", "7"]) == 0 and read_manifest(out).stage == "judge"
