"""build_engine.sh / build_engine.py: valid scripts, shapes from trt_profile, a working version guard.

TensorRT is not installable here, so the scripts run against stand-ins: a fake
`trtexec` that prints TensorRT's banner and records its arguments, and a fake
`tensorrt` module that records the builder calls. The real build is the
gpu-marked test at the end (never run in this workplace).
"""

from __future__ import annotations

import ast
import json
import os
import shlex
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from slmc.errors import ConfigError
from slmc.export.trt_build_script import render_build_engine
from slmc.export.io_spec import decoder_io
from slmc.export.trt_profile import parse_trtexec_shapes, trt_profile

IO = decoder_io(num_layers=2, num_key_value_heads=2, head_dim=16, vocab_size=384)["inputs"]
PROFILE = trt_profile(IO, max_seq_len=256, max_batch_size=4)


def _render(precision="fp16", onnx_file="model.onnx", trt_version="10.3"):
    return render_build_engine(profile=PROFILE, precision=precision, trt_version=trt_version,
                               workspace_mib=2048, onnx_file=onnx_file)


def _trtexec_words(script: str) -> list[str]:
    """The words of the trtexec command, as bash would split them."""
    lines = script[script.index('"$TRTEXEC" \\\n'):].splitlines()
    end = next(i for i, line in enumerate(lines) if not line.endswith("\\"))
    return shlex.split(" ".join(line.rstrip("\\") for line in lines[: end + 1]))[1:]


def _options(words: list[str]) -> dict[str, str]:
    return dict(w[2:].split("=", 1) if "=" in w else (w[2:], "") for w in words)


def _write_bundle(tmp_path: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    return tmp_path


def _fake_trtexec(tmp_path: Path, banner_version: str) -> Path:
    fake = tmp_path / "bin" / "trtexec"
    fake.parent.mkdir()
    fake.write_text(textwrap.dedent(f"""\
        #!/usr/bin/env bash
        echo "&&&& RUNNING TensorRT.trtexec [TensorRT v{banner_version}] [b26] # trtexec $*"
        [[ "$1" == "--help" ]] && exit 0
        printf '%s\\n' "$@" > "$(dirname "$0")/args.txt"
        for arg in "$@"; do [[ "$arg" == --saveEngine=* ]] && echo engine > "${{arg#--saveEngine=}}"; done
        exit 0
        """))
    fake.chmod(0o755)
    return fake


def _run_sh(bundle: Path, fake: Path | str, cwd: Path | str = "/", **env) -> subprocess.CompletedProcess:
    environment = {**os.environ, "TRTEXEC": str(fake), **env}
    return subprocess.run(["bash", str(bundle / "build_engine.sh")], capture_output=True, text=True,
                          env=environment, cwd=cwd, timeout=60)


@pytest.mark.parametrize("precision", ["fp32", "fp16", "bf16", "int8"])
def test_scripts_are_valid(tmp_path, precision):
    files = _render(precision)
    script = tmp_path / "build_engine.sh"
    script.write_text(files["build_engine.sh"])
    subprocess.run(["bash", "-n", str(script)], check=True)
    assert "set -euo pipefail" in files["build_engine.sh"]
    ast.parse(files["build_engine.py"])


def test_trtexec_shapes_equal_the_profile():
    options = _options(_trtexec_words(_render()["build_engine.sh"]))
    for key, corner in (("minShapes", 0), ("optShapes", 1), ("maxShapes", 2)):
        assert parse_trtexec_shapes(options[key]) == {n: s[corner] for n, s in PROFILE.items()}
    assert options["onnx"] == "model.onnx" and options["saveEngine"] == "model.engine"
    assert options["memPoolSize"] == "workspace:2048M" and options["timingCacheFile"] == "timing.cache"


@pytest.mark.parametrize(("precision", "flags"), [
    ("fp32", set()), ("fp16", {"fp16"}), ("bf16", {"bf16"}), ("int8", {"int8", "fp16"})])
def test_precision_flags(precision, flags):
    options = _options(_trtexec_words(_render(precision)["build_engine.sh"]))
    assert {k for k in options if k in ("fp16", "bf16", "int8", "best")} == flags


def test_file_names_with_quotes_and_spaces_stay_quoted(tmp_path):
    name = "my model's.onnx"
    files = _render(onnx_file=name)
    script = tmp_path / "build_engine.sh"
    script.write_text(files["build_engine.sh"])
    subprocess.run(["bash", "-n", str(script)], check=True)
    assert shlex.quote(f"--onnx={name}") in files["build_engine.sh"]
    assert _options(_trtexec_words(files["build_engine.sh"]))["onnx"] == name
    namespace: dict = {}
    tree = ast.parse(files["build_engine.py"])
    assigns = [n for n in tree.body if isinstance(n, ast.Assign)]
    exec(compile(ast.Module(body=assigns, type_ignores=[]), "constants", "exec"), namespace)
    assert namespace["ONNX_FILE"] == name and namespace["PROFILE"]["input_ids"] == [[1, 1], [1, 1], [4, 256]]


def test_shell_script_runs_trtexec_with_its_arguments(tmp_path):
    bundle = _write_bundle(tmp_path, _render("int8"))
    fake = _fake_trtexec(tmp_path, "100300")
    result = _run_sh(bundle, fake)
    assert result.returncode == 0, result.stderr
    recorded = (fake.parent / "args.txt").read_text().splitlines()
    assert recorded == _trtexec_words(_render("int8")["build_engine.sh"])
    assert (bundle / "model.engine").read_text() == "engine\n"  # written in the bundle folder


def test_shell_script_refuses_another_tensorrt_version(tmp_path):
    (tmp_path / "bundle").mkdir()
    bundle = _write_bundle(tmp_path / "bundle", _render())
    fake = _fake_trtexec(tmp_path, "100500")
    refused = _run_sh(bundle, fake)
    assert refused.returncode == 1 and "pinned to TensorRT 10.3 but found 10.5" in refused.stderr
    assert not (fake.parent / "args.txt").exists()
    # TRTEXEC given relative to the caller's folder still resolves after the script's cd
    allowed = _run_sh(bundle, "bin/trtexec", cwd=tmp_path, SLMC_ALLOW_TRT_VERSION_MISMATCH="1")
    assert allowed.returncode == 0 and "building anyway" in allowed.stderr


_FAKE_TENSORRT = '''
"""Records what build_engine.py asks of TensorRT (a stand-in; no engine is built)."""
import json, os
__version__ = os.environ["FAKE_TRT_VERSION"]
CALLS = []
class _Enum:
    def __getattr__(self, name):
        return name
BuilderFlag = _Enum(); MemoryPoolType = _Enum()
class Logger:
    WARNING = "WARNING"
    def __init__(self, level): pass
class _Profile:
    def set_shape(self, name, lo, opt, hi): CALLS.append(["set_shape", name, lo, opt, hi])
class _Cache:
    def serialize(self): return b"cache"
class _Config:
    def set_memory_pool_limit(self, pool, size): CALLS.append(["pool", pool, size])
    def set_flag(self, flag): CALLS.append(["flag", flag])
    def add_optimization_profile(self, profile): CALLS.append(["profile"])
    def create_timing_cache(self, data): return _Cache()
    def set_timing_cache(self, cache, ignore_mismatch): CALLS.append(["timing_cache"])
    def get_timing_cache(self): return _Cache()
class Builder:
    def __init__(self, logger): pass
    def create_network(self, flags): return "network"
    def create_builder_config(self): return _Config()
    def create_optimization_profile(self): return _Profile()
    def build_serialized_network(self, network, config):
        with open("calls.json", "w") as f: json.dump(CALLS, f)
        return b"engine"
class OnnxParser:
    num_errors = 0
    def __init__(self, network, logger): pass
    def parse_from_file(self, path): CALLS.append(["parse", path]); return True
'''


def _run_py(bundle: Path, fake_dir: Path, version: str, **env) -> subprocess.CompletedProcess:
    environment = {**os.environ, "PYTHONPATH": str(fake_dir), "FAKE_TRT_VERSION": version, **env}
    return subprocess.run([sys.executable, str(bundle / "build_engine.py")], capture_output=True,
                          text=True, env=environment, cwd="/", timeout=60)


def test_python_script_drives_the_builder(tmp_path):
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    _write_bundle(bundle, _render("int8"))
    fake_dir = tmp_path / "fake"
    fake_dir.mkdir()
    (fake_dir / "tensorrt.py").write_text(_FAKE_TENSORRT)
    result = _run_py(bundle, fake_dir, "10.3.0.30")
    assert result.returncode == 0, result.stderr
    calls = json.loads((bundle / "calls.json").read_text())
    shapes = {c[1]: tuple(c[2:]) for c in calls if c[0] == "set_shape"}
    assert shapes == {n: tuple(s) for n, s in PROFILE.items()}
    assert ["flag", "INT8"] in calls and ["flag", "FP16"] in calls
    assert ["pool", "WORKSPACE", 2048 << 20] in calls and ["parse", "model.onnx"] in calls
    assert (bundle / "model.engine").read_bytes() == b"engine"
    refused = _run_py(bundle, fake_dir, "10.5.0")
    assert refused.returncode != 0 and "pinned to TensorRT 10.3" in refused.stderr


def test_rendering_is_deterministic_and_checked():
    assert _render("int8") == _render("int8")
    with pytest.raises(ConfigError, match="precision 'int4'"):
        _render("int4")
    with pytest.raises(ConfigError, match="known|knows"):
        _render(trt_version="9.2")


@pytest.mark.gpu
def test_real_engine_build(tiny_llama_export, tmp_path):
    """On a machine with TensorRT 10.x: the generated Python script builds a loadable engine."""
    tensorrt = pytest.importorskip("tensorrt")
    version = ".".join(tensorrt.__version__.split(".")[:2])
    import shutil

    shutil.copy(tiny_llama_export.onnx_path, tmp_path / "model.onnx")
    files = render_build_engine(profile=trt_profile(tiny_llama_export.io["inputs"], max_seq_len=64,
                                                    max_batch_size=2),
                                precision="fp16", trt_version="10.3", workspace_mib=1024)
    _write_bundle(tmp_path, files)
    env = {**os.environ, "SLMC_ALLOW_TRT_VERSION_MISMATCH": "1" if version != "10.3" else "0"}
    subprocess.run([sys.executable, str(tmp_path / "build_engine.py")], check=True, env=env, timeout=600)
    runtime = tensorrt.Runtime(tensorrt.Logger(tensorrt.Logger.WARNING))
    engine = runtime.deserialize_cuda_engine((tmp_path / "model.engine").read_bytes())
    assert engine is not None and engine.num_io_tensors == len(tiny_llama_export.io["inputs"]) + len(
        tiny_llama_export.io["outputs"])
