"""A device gets only onnxruntime, numpy and tokenizers plus the slmc wheel without its dependencies.

Builds the wheel, installs it with --no-deps into a fresh virtual environment
that has no torch, transformers, hydra or jinja2, and runs a bundle there.
Slow (a venv and a wheel build): `pytest -m slow`.
"""

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_bundle_runs_in_a_venv_without_the_compiler_dependencies(tmp_path, bundle_dir):
    wheels = tmp_path / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(wheels), str(REPO)],
                   check=True, timeout=600)
    venv = tmp_path / "device-venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q"]
    subprocess.run([*pip, "onnxruntime", "numpy", "tokenizers"], check=True, timeout=900)
    subprocess.run([*pip, "--no-deps", *map(str, wheels.glob("slmc-*.whl"))], check=True, timeout=300)
    python = str(venv / "bin" / "python")
    probe = subprocess.run([python, "-c", "import importlib.util as u; "
                            "print([m for m in ('torch','transformers','hydra','jinja2') if u.find_spec(m)])"],
                           capture_output=True, text=True, check=True)
    assert probe.stdout.strip() == "[]"
    run = subprocess.run([python, "-m", "slmc.runtime", "run", str(bundle_dir), "--prompt", "hello",
                          "--max-new-tokens", "8"], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    verify = subprocess.run([python, "-m", "slmc.runtime", "verify", str(bundle_dir)], capture_output=True, text=True)
    assert verify.returncode == 0 and "ok" in verify.stdout
