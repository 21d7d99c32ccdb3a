"""Crash safety: `slmc compile` killed with SIGKILL at any moment loses nothing and resumes.

The compile runs as a user runs it (`python -m slmc.cli compile ...`, a tiny model) in its
own process group; at a chosen moment (a stage marker appears in the run folder, or after
a seeded random delay) the whole group gets SIGKILL, as in a power cut. Then:
- the final bundle path is absent or a complete bundle that verifies;
- every published checkpoint, final checkpoint and stage-cache entry is complete;
- the user's other files (an earlier run, notes in the run folder) are byte-identical;
and rerunning the same command finishes: completed stages come from the stage cache,
training resumes from its last checkpoint (to the same weights as an uninterrupted run),
and the bundle verifies. A full disk and read-only folders give clear errors.

Default run: one compile killed twice (in training, then in export). `-m slow`: every kill
point to completion, random kill times, a kill of slmc alone, disk-full and read-only cases.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import resource
import shutil
import struct
import subprocess
import time
import zipfile
from pathlib import Path

import pytest

from slmc.load import load_config, run_name

from .conftest import TINY, TINY_STEPS, child_env, count, kill_group, run_slmc, start_slmc, wait_for

# ----------------------------------------------------------------------------- run folder checks


def checkpoint_complete(state: Path) -> bool:
    """torch.save writes a zip archive: complete when every member's CRC checks out."""
    try:
        with zipfile.ZipFile(state) as archive:
            return archive.testzip() is None and any(n.endswith("data.pkl") for n in archive.namelist())
    except (zipfile.BadZipFile, OSError):
        return False


def safetensors_complete(path: Path) -> bool:
    """The header's length and tensor offsets account for exactly the file's bytes."""
    data = path.read_bytes()
    if len(data) < 8:
        return False
    (size,) = struct.unpack("<Q", data[:8])
    try:
        header = json.loads(data[8:8 + size])
    except ValueError:
        return False
    ends = [t["data_offsets"][1] for k, t in header.items() if k != "__metadata__"]
    return 8 + size + max(ends, default=0) == len(data)


def assert_consistent(run_dir: Path, out_dir: Path) -> dict:
    """What a crash may leave: nothing half-published. Returns what exists, for the caller's checks."""
    from slmc.runtime import verify_bundle

    state = {"bundle": False, "checkpoints": [], "final": False, "cached": []}
    bundle = run_dir / "bundle"
    if bundle.exists():
        verify_bundle(bundle)  # complete and intact, or this raises
        state["bundle"] = True
    for step in sorted((run_dir / "checkpoints").glob("step-*")):
        assert checkpoint_complete(step / "state.pt"), step
        state["checkpoints"].append(int(step.name.split("-")[1]))
    final = run_dir / "checkpoint"
    if final.exists():
        assert safetensors_complete(final / "model.safetensors")
        json.loads((final / "config.json").read_text())
        assert (final / "tokenizer.json").is_file()
        state["final"] = True
    for entry in sorted((out_dir / ".cache").glob("*/*")):
        if entry.name.startswith(".") or not entry.is_dir():
            continue  # a staging folder or a lock file: never looked up as an entry
        assert (entry / "result.json").is_file(), entry
        json.loads((entry / "result.json").read_text())
        state["cached"].append(entry.parent.name)
    return state


def files_of(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


class Scene:
    """An output folder with a user's earlier work in it, and the tiny compile to crash."""

    def __init__(self, root: Path, *extra: str, notes: bool = True):
        self.root = root
        self.out = root / "out"
        self.args = ["compile", *TINY, *extra, f"out_dir={self.out}"]
        self.run_dir = self.out / run_name(load_config([*TINY, *extra, f"out_dir={self.out}"]))
        earlier = self.out / "earlier-run"
        for rel, size in (("bundle/manifest.json", 200), ("bundle/model.onnx", 5000),
                          ("checkpoints/step-5/state.pt", 3000), ("checkpoint/model.safetensors", 4000)):
            (earlier / rel).parent.mkdir(parents=True, exist_ok=True)
            (earlier / rel).write_bytes(random.Random(rel).randbytes(size))
        self.notes = notes
        if notes:  # the run folder exists already, with a file of the user's in it
            self.run_dir.mkdir(parents=True)
            (self.run_dir / "my-notes.txt").write_text("the user's own file in the run folder\n")
        self.before = self.user_files()
        self.logs = 0

    def user_files(self) -> dict[str, str]:
        mine = files_of(self.out / "earlier-run")
        if self.notes:
            mine["my-notes.txt"] = hashlib.sha256((self.run_dir / "my-notes.txt").read_bytes()).hexdigest()
        return mine

    def start(self):
        self.logs += 1
        self.log = self.root / f"log-{self.logs}.txt"
        return start_slmc(*self.args, log=self.log, cwd=self.root)

    def kill_when(self, marker, *, what: str, timeout: float = 300) -> dict:
        """Start the compile, SIGKILL it when marker(run_dir) holds, check the folder."""
        proc = self.start()
        hit = wait_for(lambda: marker(self.run_dir), proc, timeout=timeout)
        kill_group(proc)
        assert hit, f"the compile ended before {what}:\n{self.log.read_text()[-3000:]}"
        count("kill points")
        return self.check()

    def check(self) -> dict:
        state = assert_consistent(self.run_dir, self.out)
        assert self.user_files() == self.before, "a file the user had was changed or deleted"
        return state

    def finish(self) -> str:
        """Rerun the same command to completion; returns its output."""
        proc = run_slmc(*self.args, cwd=self.root, timeout=900)
        output = proc.stdout + proc.stderr
        assert proc.returncode == 0, output[-4000:]
        state = self.check()
        assert state["bundle"] and state["final"], state
        assert not list(self.run_dir.glob(".*.partial")), "a killed compile's staging folder was left behind"
        return output


def reused(output: str) -> set[str]:
    return set(re.findall(r"stage (\w+)\W*: reused from the stage cache", output))


def step_dirs(run_dir: Path) -> bool:
    return any((run_dir / "checkpoints").glob("step-*"))


def exporting(run_dir: Path) -> bool:
    return (run_dir / "work" / "export").exists()


def generates(bundle: Path) -> None:
    from slmc.runtime import load_bundle

    assert load_bundle(bundle, threads=1).generate("def", max_new_tokens=3)


# ----------------------------------------------------------------------------- default


def test_killed_in_training_then_in_export_resumes_and_finishes(tmp_path):
    """Kill 1 at the first checkpoint; the rerun resumes from it; kill 2 once export starts;
    then the state is consistent (training finished and cached), and nothing of the user's moved."""
    scene = Scene(tmp_path)
    first = scene.kill_when(step_dirs, what="the first checkpoint")
    assert not first["bundle"] and not first["final"] and first["checkpoints"]
    assert {"data", "tokenizer"} <= set(first["cached"]) and "train" not in first["cached"]

    second = scene.kill_when(exporting, what="the export stage")
    log = scene.log.read_text()
    assert {"data", "tokenizer"} <= reused(log), log[-3000:]
    resumed = re.search(r"resumed from step (\d+)", log)
    assert resumed and int(resumed.group(1)) >= min(first["checkpoints"]), log[-3000:]
    assert second["final"] and "train" in second["cached"] and not second["bundle"]
    assert max(second["checkpoints"]) == TINY_STEPS


# ----------------------------------------------------------------------------- slow: every kill point


def partial_bundle(run_dir: Path) -> bool:
    return any(run_dir.glob(".bundle.*.partial"))


def saving_checkpoint(run_dir: Path) -> bool:
    return any((run_dir / "checkpoints").glob(".tmp-step-*"))


def optimizing(run_dir: Path) -> bool:
    return (run_dir / "work" / "optimize").exists()


def storing_cache(stage: str):
    def marker(run_dir: Path) -> bool:
        return any((run_dir.parent / ".cache" / stage).glob(".*.partial"))

    return marker


def trained(run_dir: Path) -> bool:
    return (run_dir / "checkpoint").exists()


KILL_POINTS = {
    "first checkpoint": (step_dirs, set()),
    "checkpoint being written": (saving_checkpoint, set()),
    "final checkpoint saved, stage not yet recorded": (trained, {"data", "tokenizer"}),
    "train result being cached": (storing_cache("train"), {"data", "tokenizer"}),
    "export": (exporting, {"data", "tokenizer", "train"}),
    "optimize": (optimizing, {"data", "tokenizer", "train", "export"}),
    "bundle being packaged": (partial_bundle, {"data", "tokenizer", "train", "export", "optimize"}),
}


@pytest.fixture(scope="module")
def reference_weights(tmp_path_factory) -> str:
    """sha256 of the final weights of the same compile, never interrupted."""
    scene = Scene(tmp_path_factory.mktemp("reference"))
    scene.finish()
    return hashlib.sha256((scene.run_dir / "checkpoint" / "model.safetensors").read_bytes()).hexdigest()


@pytest.mark.slow
@pytest.mark.parametrize("point", sorted(KILL_POINTS))
def test_killed_at_each_stage_then_finishes_with_the_same_weights(point, tmp_path, reference_weights):
    marker, cached_before = KILL_POINTS[point]
    scene = Scene(tmp_path)
    try:
        scene.kill_when(marker, what=point)
    except AssertionError as exc:
        if point in ("checkpoint being written", "train result being cached") and "ended before" in str(exc):
            pytest.skip(f"the 5 ms poll missed the moment ({point} takes a few ms here)")
        raise
    output = scene.finish()
    assert cached_before <= reused(output), (point, reused(output))
    weights = (scene.run_dir / "checkpoint" / "model.safetensors").read_bytes()
    assert hashlib.sha256(weights).hexdigest() == reference_weights, "resumed training reached other weights"
    generates(scene.run_dir / "bundle")


@pytest.mark.slow
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_killed_at_random_moments_then_finishes(seed, tmp_path, reference_weights):
    rng = random.Random(seed)
    scene = Scene(tmp_path)
    for _ in range(3):
        delay = rng.uniform(1.0, 40.0)
        proc = scene.start()
        deadline = time.monotonic() + delay
        while time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.05)
        finished = proc.poll() is not None
        kill_group(proc)
        count("kill points")
        scene.check()
        if finished:
            break
    scene.finish()
    weights = (scene.run_dir / "checkpoint" / "model.safetensors").read_bytes()
    assert hashlib.sha256(weights).hexdigest() == reference_weights


@pytest.mark.slow
def test_a_killed_rebuild_keeps_the_previous_bundle(tmp_path):
    """A finished run compiled again (the package stage always reruns) and killed while the new
    bundle is being written: the previous bundle stays in place, complete and verified."""
    scene = Scene(tmp_path)
    scene.finish()
    before = files_of(scene.run_dir / "bundle")
    state = scene.kill_when(partial_bundle, what="the second packaging")
    assert state["bundle"]
    after = files_of(scene.run_dir / "bundle")
    assert set(after) == set(before)  # the same files; manifest.json differs only if the rename happened
    scene.finish()


@pytest.mark.slow
def test_killing_slmc_alone_while_training_runs(tmp_path, reference_weights):
    """Only the slmc process dies (e.g. the OOM killer picked it); its train.py gets SIGTERM from
    the kernel (PR_SET_PDEATHSIG) and may still be writing as the rerun starts. A rerun at once
    must still finish with a verified bundle and the reference weights."""
    import signal

    scene = Scene(tmp_path)
    proc = scene.start()
    assert wait_for(lambda: step_dirs(scene.run_dir), proc, timeout=300)
    os.kill(proc.pid, signal.SIGKILL)  # the parent only: its train.py child is told to stop
    proc.wait(timeout=60)
    count("kill points")
    scene.finish()
    weights = (scene.run_dir / "checkpoint" / "model.safetensors").read_bytes()
    assert hashlib.sha256(weights).hexdigest() == reference_weights


# ----------------------------------------------------------------------------- full disk, read-only folders


def limited_file_size(limit: int):
    def apply() -> None:
        os.setsid()
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return apply


def test_a_full_disk_is_a_clear_error(tmp_path):
    """RLIMIT_FSIZE makes every write past `limit` bytes fail with EFBIG, as a full disk fails
    writes with ENOSPC: the compile stops with one clear line, naming the file, no traceback."""
    scene = Scene(tmp_path)
    proc = subprocess.run([*_python_slmc(), *scene.args], cwd=tmp_path, env=child_env(), capture_output=True,
                          text=True, timeout=600, preexec_fn=limited_file_size(16_000))  # train.py is larger
    count("disk-full / read-only cases")
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr and "File too large" in proc.stderr, proc.stderr[-2000:]
    assert re.search(r"cannot write \S*" + re.escape(str(scene.run_dir)), proc.stderr) and "disk space" in proc.stderr
    scene.check()


def test_writes_that_hit_a_full_disk_leave_the_previous_files_intact(tmp_path, monkeypatch):
    """ENOSPC in the middle of an atomic write or a staged folder: a clear error, the old version
    still in place, no temporary file or folder left behind."""
    import errno

    from slmc import writer
    from slmc.errors import OutputPathError

    writer.write_text(tmp_path, "config.yaml", "old")
    with writer.staged_dir(tmp_path, "bundle") as staging:
        (staging / "model.onnx").write_text("old model")

    def full(*_args, **_kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", full)
    count("disk-full / read-only cases")
    with pytest.raises(OutputPathError, match="No space left on device") as caught:
        writer.write_text(tmp_path, "config.yaml", "new")
    assert "disk space" in caught.value.render()
    monkeypatch.undo()
    with pytest.raises(OSError):
        with writer.staged_dir(tmp_path, "bundle") as staging:
            (staging / "model.onnx").write_text("half")
            full()
    monkeypatch.setattr("tempfile.mkdtemp", full)
    with pytest.raises(OutputPathError, match="No space left on device"):
        with writer.staged_dir(tmp_path, "bundle"):
            pass
    assert (tmp_path / "config.yaml").read_text() == "old"
    assert (tmp_path / "bundle" / "model.onnx").read_text() == "old model"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bundle", "config.yaml"]


def fill_disk_during_training(tmp_path: Path):
    scene = Scene(tmp_path)
    proc = subprocess.run([*_python_slmc(), *scene.args], cwd=tmp_path, env=child_env(), capture_output=True,
                          text=True, timeout=600, preexec_fn=limited_file_size(400_000))  # a checkpoint is larger
    count("disk-full / read-only cases")
    return scene, proc


@pytest.mark.slow
def test_a_disk_that_fills_during_training_leaves_a_resumable_run(tmp_path):
    scene, proc = fill_disk_during_training(tmp_path)
    assert proc.returncode == 1 and "stage 'train' failed" in proc.stderr, proc.stderr[-3000:]
    assert "rerun" in proc.stderr.splitlines()[-1]
    state = scene.check()
    assert not state["bundle"] and not state["final"]
    scene.finish()  # space again: the same command finishes


@pytest.mark.slow
def test_a_disk_full_during_training_is_named(tmp_path):
    _, proc = fill_disk_during_training(tmp_path)
    reason = next(line for line in proc.stderr.splitlines() if line.startswith("train.py: error:"))
    assert re.search(r"disk|space|File too large", reason), reason


def _python_slmc() -> list[str]:
    import sys

    return [sys.executable, "-m", "slmc.cli"]


def without_privileges(command: list[str]) -> list[str]:
    """Root ignores file modes: drop every capability so a read-only folder is read-only."""
    if os.geteuid() != 0:
        return command
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("running as root without setpriv: cannot make a folder read-only")
    return [setpriv, "--inh-caps=-all", "--bounding-set=-all", *command]


def compile_with_read_only(scene: Scene, folder: Path) -> subprocess.CompletedProcess:
    """The scene's compile, unprivileged, with `folder` made read-only for its duration."""
    folder.mkdir(exist_ok=True)
    folder.chmod(0o555)
    try:
        proc = subprocess.run(without_privileges([*_python_slmc(), *scene.args]), cwd=scene.root, env=child_env(),
                              capture_output=True, text=True, timeout=600)
    finally:
        folder.chmod(0o755)
    count("disk-full / read-only cases")
    return proc


# A read-only stage cache is not an error: see test_a_read_only_stage_cache_compiles_without_it.
@pytest.mark.parametrize("case", ["out_dir", "run folder"])
def test_read_only_folders_are_clear_errors(tmp_path, case):
    scene = Scene(tmp_path, notes=case != "out_dir")
    target = {"out_dir": scene.out, "run folder": scene.run_dir}[case]
    proc = compile_with_read_only(scene, target)
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert "Permission denied" in proc.stderr or "not writable" in proc.stderr, proc.stderr[-2000:]
    assert str(target) in proc.stderr
    scene.check()


# ----------------------------------------------------------------------------- read-only stage cache


@pytest.mark.slow
def test_a_read_only_stage_cache_compiles_without_it(tmp_path):
    """A read-only <out_dir>/.cache: the compile finishes (exit 0, verified bundle), warning once,
    naming the folder and the fix; nothing is written into the cache. (Fast unit tests of the
    same behaviour: tests/test_cache.py.)"""
    scene = Scene(tmp_path)
    cache = scene.out / ".cache"
    proc = compile_with_read_only(scene, cache)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-2000:]
    warnings = [line for line in proc.stderr.splitlines() if "stage cache" in line]
    assert len(warnings) == 1 and str(cache) in warnings[0] and "not writable" in warnings[0], proc.stderr[-2000:]
    assert "compiling without it" in warnings[0] and f"make {cache} writable" in warnings[0]
    assert not reused(proc.stdout) and list(cache.iterdir()) == []
    state = scene.check()
    assert state["bundle"] and state["final"] and not state["cached"]


# ----------------------------------------------------------------------------- slmc killed alone


def children_running(parent: int, name: str) -> list[int]:
    """Live (not zombie) processes whose parent is `parent` and whose command line mentions name."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue  # ended while we looked
        state, ppid = stat.rsplit(")", 1)[1].split()[:2]
        if int(ppid) == parent and state != "Z" and name in cmdline:
            found.append(int(entry.name))
    return found


def alive(pid: int) -> bool:
    """Running or sleeping; a zombie (dead, not yet reaped by whoever adopted it) is not alive."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="Linux only: PR_SET_PDEATHSIG and /proc")
def test_train_py_dies_when_slmc_is_killed(tmp_path):
    """SIGKILL to slmc alone (the OOM killer's choice, say) while train.py runs a long training:
    train.py is gone within a few seconds, not left running on its own."""
    import signal

    scene = Scene(tmp_path, "train.max_steps=100000", "train.save_every=100000", "train.eval_every=100000")
    proc = scene.start()
    trainers: list[int] = []
    try:
        assert wait_for(lambda: trainers.extend(children_running(proc.pid, "train.py")) or trainers, proc,
                        timeout=240, poll=0.05), f"train.py never started:\n{scene.log.read_text()[-3000:]}"
        metrics = scene.run_dir / "metrics.jsonl"  # past its imports, in the training loop
        assert wait_for(lambda: metrics.is_file() and metrics.stat().st_size > 0, proc, timeout=240, poll=0.05)
        os.kill(proc.pid, signal.SIGKILL)  # slmc only; train.py is not signalled by us
        proc.wait(timeout=60)
        count("kill points")
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and any(alive(pid) for pid in trainers):
            time.sleep(0.05)
        left = [pid for pid in trainers if alive(pid)]
        assert not left, f"train.py {left} kept running after slmc was killed"
    finally:
        for pid in trainers:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
        kill_group(proc)
    assert scene.user_files() == scene.before
