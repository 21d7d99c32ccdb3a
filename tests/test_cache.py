"""The stage cache when its folder cannot be written: the compile goes on without it.

A read-only `<out_dir>/.cache` (or one on a read-only file system, or another user's)
must not stop a compile: claim/restore/store turn the cache off with one warning that
names the folder and the fix, the stage runs, and entries already there still restore.
Errors that are not about permission (a full disk) still propagate.
"""

from __future__ import annotations

import errno
import json
import os
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from slmc.cache import CACHE_DIR, RESULT_FILE, StageCache
from slmc.plan import PlannedStage
from slmc.stages.base import Stage, StageResult


@dataclass(kw_only=True)
class Chars(StageResult):
    chars: int


def planned(name: str, output: str) -> PlannedStage:
    stage = Stage(name, Chars, run=None, describe=lambda cfg: "", consumes=lambda cfg: ())
    return PlannedStage(stage, "host", (), (output,), (), "")


STAGE = planned("data", "data/train.txt")
OTHER = planned("tokenizer", "tokenizer.json")


@pytest.fixture
def read_only(monkeypatch):
    """read_only(folder): chmod every folder under it to r-x. Root ignores modes, so there
    os.access is also made to answer "not writable" for them, as it does for other users."""

    def make(folder: Path) -> None:
        denied = [folder, *(p for p in folder.rglob("*") if p.is_dir())]
        for path in denied:
            path.chmod(0o555)
        if os.geteuid() == 0:
            real = os.access
            monkeypatch.setattr(os, "access", lambda p, mode, **kw: (
                not (mode & os.W_OK and Path(p).resolve().is_relative_to(folder.resolve())) and real(p, mode, **kw)))
        restore_modes.extend(denied)

    restore_modes: list[Path] = []
    yield make
    for path in restore_modes:
        path.chmod(0o755)


def run_stage(cache: StageCache, stage: PlannedStage, run_dir: Path, text: str) -> Chars:
    """What execute() does for one cacheable stage; returns the result (restored or new)."""
    with cache.claim(stage, "key"):
        cached = cache.restore(stage, "key", run_dir)
        if cached is not None:
            return replace(cached, cached=True)
        target = run_dir / stage.produces[0]
        if not target.parent.is_dir():
            target.parent.mkdir(parents=True)
        target.write_text(text)
        result = Chars(chars=len(text))
        cache.store(stage, "key", run_dir, result)
        return result


def test_a_read_only_cache_runs_every_stage_and_warns_once(tmp_path, read_only, capsys):
    root = tmp_path / CACHE_DIR
    root.mkdir()
    read_only(root)
    cache = StageCache(tmp_path)
    run = tmp_path / "run"
    assert run_stage(cache, STAGE, run, "abc") == Chars(chars=3)
    assert run_stage(cache, OTHER, run, "{}") == Chars(chars=2)
    assert (run / "data/train.txt").read_text() == "abc"  # the stage's own output is untouched
    err = capsys.readouterr().err
    assert err.count("warning") == 1, err
    assert f"the stage cache {root} is not writable" in err and "compiling without it" in err
    assert f"make {root} writable" in err and "--no-cache" in err
    assert cache.off and not any(root.rglob(RESULT_FILE))


def test_entries_of_a_read_only_cache_still_restore(tmp_path, read_only, capsys):
    run = tmp_path / "run"
    assert run_stage(StageCache(tmp_path), STAGE, run, "abc") == Chars(chars=3)
    (run / "data/train.txt").write_text("changed since")
    read_only(tmp_path / CACHE_DIR)
    restored = run_stage(StageCache(tmp_path), STAGE, run, "never run")
    assert restored == Chars(chars=3, cached=True)
    assert (run / "data/train.txt").read_text() == "abc"
    assert "is not writable" in capsys.readouterr().err  # no lock could be taken: said once


def test_a_cache_on_a_read_only_file_system_is_turned_off(tmp_path, monkeypatch, capsys):
    def erofs(self, *args, **kwargs):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(self))

    monkeypatch.setattr(Path, "mkdir", erofs)
    assert run_stage(StageCache(tmp_path), OTHER, tmp_path, "abc") == Chars(chars=3)
    assert "Read-only file system" in capsys.readouterr().err


def test_a_full_disk_is_not_hidden(tmp_path, monkeypatch):
    """Only permission problems turn the cache off; ENOSPC is an error the user must see."""

    def full(self, *args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(self))

    monkeypatch.setattr(Path, "mkdir", full)
    with pytest.raises(OSError, match="No space left"):
        run_stage(StageCache(tmp_path), OTHER, tmp_path, "abc")


def test_a_writable_cache_still_stores_and_restores(tmp_path, capsys):
    run = tmp_path / "run"
    assert run_stage(StageCache(tmp_path), STAGE, run, "abc") == Chars(chars=3)
    entry = tmp_path / CACHE_DIR / "data" / "key"
    assert json.loads((entry / RESULT_FILE).read_text()) == {"chars": 3, "seconds": None, "cached": False}
    assert run_stage(StageCache(tmp_path), STAGE, run, "never run") == Chars(chars=3, cached=True)
    assert capsys.readouterr().err == ""


def test_a_restored_result_has_its_stage_s_type(tmp_path):
    run = tmp_path / "run"
    run_stage(StageCache(tmp_path), STAGE, run, "abc")
    restored = StageCache(tmp_path).restore(STAGE, "key", run)
    assert type(restored) is Chars and restored.chars == 3 and not restored.cached


def test_a_killed_store_s_staging_folder_is_removed_by_the_next_claim(tmp_path):
    """kill -9 while an entry is being stored leaves `.<key>.<random>.partial/` (a full copy of the
    stage's outputs); the next claim of that entry, which no one else can hold, deletes it."""
    folder = tmp_path / CACHE_DIR / "data"
    stale = folder / ".key.abcd1234.partial"
    (stale / "outputs").mkdir(parents=True)
    (stale / "outputs" / "big").write_bytes(b"x" * 1000)
    other = folder / ".otherkey.abcd1234.partial"  # another entry's staging: maybe live, left alone
    other.mkdir()
    run_stage(StageCache(tmp_path), STAGE, tmp_path / "run", "abc")
    assert not stale.exists() and other.exists()
    assert (folder / "key" / RESULT_FILE).is_file()
