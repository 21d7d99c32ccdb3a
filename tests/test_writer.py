"""The writer: atomic, confined to the run folder, reports create/identical/overwrite."""

import os

import pytest

from slmc.errors import OutputPathError
from slmc.writer import staged_dir, write_files, write_text


def test_reports_create_identical_overwrite(tmp_path):
    assert write_files(tmp_path, {"a.txt": "1", "d/b.txt": "2"}) == {"a.txt": "create", "d/b.txt": "create"}
    assert write_files(tmp_path, {"a.txt": "1", "d/b.txt": "3"}) == {"a.txt": "identical", "d/b.txt": "overwrite"}
    assert (tmp_path / "d/b.txt").read_text() == "3"
    assert not [p for p in tmp_path.rglob("*.tmp")]


@pytest.mark.parametrize("bad", ["../x.txt", "/etc/passwd", "a/../../x"])
def test_refuses_paths_outside_the_run_folder(tmp_path, bad):
    with pytest.raises(OutputPathError):
        write_text(tmp_path / "run", bad, "x")


def test_refuses_symlink_escape(tmp_path):
    (tmp_path / "run").mkdir()
    os.symlink(tmp_path, tmp_path / "run" / "link")
    with pytest.raises(OutputPathError):
        write_text(tmp_path / "run", "link/x.txt", "x")


def test_staged_dir_publishes_only_complete_folders(tmp_path):
    with staged_dir(tmp_path, "bundle") as tmp:
        (tmp / "f").write_text("v1")
    assert (tmp_path / "bundle" / "f").read_text() == "v1"
    with pytest.raises(RuntimeError):
        with staged_dir(tmp_path, "bundle") as tmp:
            (tmp / "f").write_text("half")
            raise RuntimeError("crash mid-way")
    assert (tmp_path / "bundle" / "f").read_text() == "v1"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bundle"]


def test_published_files_are_not_private(tmp_path):
    write_text(tmp_path, "a.txt", "x")
    with staged_dir(tmp_path, "b") as tmp:
        write_text(tmp, "f", "y")
    from slmc.writer import DIR_MODE, FILE_MODE

    assert (tmp_path / "a.txt").stat().st_mode & 0o777 == FILE_MODE
    assert (tmp_path / "b").stat().st_mode & 0o777 == DIR_MODE
    assert (tmp_path / "b" / "f").stat().st_mode & 0o777 == FILE_MODE


def test_stale_stagings_are_found_by_slmc_s_names_only(tmp_path):
    """What staged_dir and write_text leave when killed, and nothing that only looks alike."""
    from slmc.writer import remove_stale_stagings

    stale = [tmp_path / ".bundle.a1b2c3d4.partial", tmp_path / "data" / ".train.txt.zz_99abc.tmp"]
    kept = [tmp_path / ".bundle.old.partial", tmp_path / ".bundle.partial", tmp_path / "bundle.a1b2c3d4.partial",
            tmp_path / ".notes.txt", tmp_path / "data" / "train.txt"]
    stale[0].mkdir()
    (stale[0] / "model.onnx").write_bytes(b"\0" * 100)
    for path in (*stale[1:], *kept):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("x")
    assert sorted(remove_stale_stagings(tmp_path)) == sorted(stale)
    assert not any(p.exists() for p in stale) and all(p.exists() for p in kept)


def test_stale_stagings_of_one_name_leave_the_others(tmp_path):
    from slmc.writer import remove_stale_stagings

    mine, other = tmp_path / ".key1.abcdefgh.partial", tmp_path / ".key2.abcdefgh.partial"
    nested = tmp_path / "sub" / ".key1.abcdefgh.partial"
    for path in (mine, other, nested):
        path.mkdir(parents=True)
    assert remove_stale_stagings(tmp_path, "key1") == [mine]
    assert other.exists() and nested.exists()  # a named staging is a sibling of its final path only
    assert remove_stale_stagings(tmp_path / "missing") == []


def test_a_staged_folder_killed_mid_way_is_what_the_cleanup_finds(tmp_path):
    """The name staged_dir really uses matches the cleanup's pattern (a kill is simulated by not
    letting the block finish: the temporary folder is left as a SIGKILL would leave it)."""
    from slmc import writer

    block = writer.staged_dir(tmp_path, "bundle")
    staging = block.__enter__()  # never exited: as if the process died here
    (staging / "model.onnx").write_text("half")
    assert writer.remove_stale_stagings(tmp_path) == [staging] and not staging.exists()
