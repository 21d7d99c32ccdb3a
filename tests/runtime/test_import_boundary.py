"""The runtime must import on a device that has no torch, transformers, hydra or jinja2."""

from __future__ import annotations

import subprocess
import sys

CHECK = """
import importlib, pkgutil, sys
import slmc.runtime
names = [m.name for m in pkgutil.walk_packages(slmc.runtime.__path__, "slmc.runtime.")]
assert {"slmc.runtime.cli", "slmc.runtime.generate", "slmc.runtime.__main__"} <= set(names), names
for name in names:
    importlib.import_module(name)
for name in slmc.runtime.__all__:
    getattr(slmc.runtime, name)
bad = {"torch", "transformers", "hydra", "jinja2", "omegaconf", "onnx", "slmc.errors"} & set(sys.modules)
assert not bad, bad
print(len(names))
"""


def test_runtime_imports_no_compiler_dependencies():
    done = subprocess.run([sys.executable, "-c", CHECK], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert int(done.stdout) >= 10
