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
