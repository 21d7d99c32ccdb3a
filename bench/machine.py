"""The machine a result came from: CPU, memory, load, package versions (without importing them)."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path

PACKAGES = ("slmc", "onnxruntime", "onnxruntime-genai", "onnx", "torch", "transformers", "numpy", "tokenizers")


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _memory_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    return None


def _version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def describe() -> dict:
    """CPU model, cores, memory, OS, Python and the versions of the packages that matter here."""
    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {
        "cpu": _cpu_model(),
        "logical_cpus": os.cpu_count(),
        "cpus_available": affinity,
        "memory_gib": _memory_gib(),
        "os": platform.platform(),
        "python": platform.python_version(),
        "packages": {name: _version(name) for name in PACKAGES},
    }


def loadavg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def bandwidth(threads: int, mib: int) -> dict:
    """bench/bandwidth.py in its own process (its arrays never inflate this one)."""
    script = Path(__file__).with_name("bandwidth.py")
    done = subprocess.run([sys.executable, str(script), "--threads", str(threads), "--mib", str(mib)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"bandwidth measurement failed: {done.stderr.strip()[-300:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])
