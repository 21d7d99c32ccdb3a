"""The one module that writes the compiler's outputs to disk.

Every write is atomic (temp file + rename in the same folder) and confined to
the run folder: a path that would escape it is refused. Rewrites report
create / identical / overwrite, like copier, so a rerun shows what changed.
A process killed mid-write leaves its temporary file or folder behind; the next
compile, holding the run folder's lock, removes them (`remove_stale_stagings`).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Iterator, Literal, Mapping

from .errors import OutputPathError

Status = Literal["create", "identical", "overwrite"]


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# mkstemp/mkdtemp create private (0600/0700) entries; published outputs get the
# permissions an ordinary file or folder would have under the user's umask.
FILE_MODE = 0o666 & ~_umask()
DIR_MODE = 0o777 & ~_umask()


def inside(root: Path, relative: str) -> Path:
    """`root / relative`, refusing absolute paths and `..` escapes."""
    rel = Path(relative)
    if rel.is_absolute() or ".." in rel.parts:
        raise OutputPathError(f"refusing to write {relative!r}: outside the run folder {root}",
                              fix="output paths must be relative and stay inside the run folder")
    if "\0" in str(root / rel):
        raise OutputPathError(f"refusing to write {relative!r} under {str(root)!r}: a path cannot hold a NUL byte",
                              fix="remove the NUL character from out_dir / the path")
    target = (root / rel).resolve()
    if not target.is_relative_to(root.resolve()):
        raise OutputPathError(f"refusing to write {relative!r}: it resolves outside {root}",
                              fix="remove the symbolic link that points out of the run folder")
    return target


def prepare_run_dir(path: Path) -> Path:
    """Create the run folder (and parents), with a clear error when that is impossible."""
    if "\0" in str(path):
        raise OutputPathError(f"cannot create the run folder {str(path)!r}: a path cannot hold a NUL byte",
                              where="out_dir", fix="remove the NUL character from out_dir")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputPathError(f"cannot create the run folder {path}: {exc.strerror}", where="out_dir",
                              fix="choose a writable out_dir=..., or free some disk space") from None
    if not os.access(path, os.W_OK):
        raise OutputPathError(f"the run folder {path} is not writable", where="out_dir",
                              fix="choose a writable out_dir=...")
    return path


@contextlib.contextmanager
def exclusive(folder: Path, lock_name: str, *, what: str = "this folder") -> Iterator[None]:
    """Hold `folder/lock_name` (an flock, via filelock) for the block; refuse at once if another
    process holds it. The kernel drops the lock when its holder dies, even by SIGKILL, so a
    killed compile never leaves the folder locked."""
    from filelock import FileLock, Timeout

    from .errors import FolderBusy

    lock = FileLock(folder / lock_name)
    try:
        lock.acquire(timeout=0)
    except Timeout:
        raise FolderBusy(f"another slmc process is writing {what} (it holds {lock_name})", where=str(folder),
                         fix="wait for it to finish, then rerun the same command (finished stages are reused); "
                             "or compile into another folder (out_dir=... or run_name=...)") from None
    except OSError as exc:
        raise OutputPathError(f"cannot lock {folder / lock_name}: {exc.strerror}",
                              fix="check the permissions of the output folder") from None
    try:
        yield
    finally:
        lock.release()


def write_text(root: Path, relative: str, content: str | bytes) -> Status:
    """Atomically write one file under `root`; report what happened to it."""
    data = content.encode("utf-8") if isinstance(content, str) else content
    target = inside(root, relative)
    status: Status = "create"
    if target.is_file():
        if target.read_bytes() == data:
            return "identical"
        status = "overwrite"
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, FILE_MODE)
        os.replace(tmp, target)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise OutputPathError(f"cannot write {target}: {exc.strerror}",
                              fix="check free disk space and permissions of the output folder") from None
    return status


def write_files(root: Path, files: Mapping[str, str | bytes]) -> dict[str, Status]:
    """Write several files; returns {relative path: status} in a stable order."""
    return {rel: write_text(root, rel, files[rel]) for rel in sorted(files)}


@contextlib.contextmanager
def staged_dir(root: Path, relative: str) -> Iterator[Path]:
    """Build a folder in a temporary sibling; rename it into place only if the block succeeds.

    The final path is therefore either absent, the previous complete version, or
    the new complete version, whatever happens mid-way (crash, kill, disk full).
    """
    final = inside(root, relative)
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name}.", suffix=".partial"))
        os.chmod(tmp, DIR_MODE)
    except OSError as exc:
        raise OutputPathError(f"cannot create a folder in {final.parent}: {exc.strerror}",
                              fix="check free disk space and permissions of the output folder") from None
    try:
        yield tmp
        _replace_dir(tmp, final)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


# What write_text (mkstemp) and staged_dir (mkdtemp) name their temporaries: ".NAME." + tempfile's
# 8 random characters + suffix. Nothing else slmc or a user writes is named like this.
_STAGING = re.compile(r"^\.(?P<name>.+)\.[a-z0-9_]{8}\.(?:partial|tmp)$")


def remove_stale_stagings(folder: Path, name: str | None = None) -> list[Path]:
    """Delete the temporaries a killed write left under `folder` (of `name` only, when given).

    A `.bundle.<random>.partial/` holds a full model copy, so a few kills fill a disk. Only
    safe while the caller holds the lock of everything written there (the run folder's lock,
    a stage cache entry's claim): a live write's temporary looks the same.
    """
    removed: list[Path] = []
    if not folder.is_dir():
        return removed
    for parent, dirs, files in os.walk(folder):
        for entry in list(dirs) + files:
            match = _STAGING.match(entry)
            if match is None or (name is not None and match["name"] != name):
                continue
            path = Path(parent) / entry
            if entry in dirs:
                dirs.remove(entry)  # do not walk into what is deleted
                shutil.rmtree(path, ignore_errors=True)
            else:
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
            removed.append(path)
        if name is not None:
            break  # a named staging is a sibling of its final path: top level only
    return removed


def _replace_dir(new: Path, final: Path) -> None:
    old = None
    if final.exists():
        old = final.with_name(f".{final.name}.old")
        if old.exists():
            shutil.rmtree(old)
        os.replace(final, old)  # keep the previous version until the new one is in place
    os.replace(new, final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
