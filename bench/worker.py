"""Run one system's measurement in this (fresh) process: `python bench/worker.py SPEC.json`.

The spec names the system, its artifact, the prompts and the settings; the
result (or the error) is written as JSON to spec["result_path"]. The same
script runs under the project's venv and under the Optimum venv, so it imports
only the stdlib here and the system's own module after that.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def main(spec_path: str) -> int:
    spec = json.loads(Path(spec_path).read_text())
    started = time.perf_counter()
    load_before = os.getloadavg()[0]
    try:
        from bench.systems.common import set_thread_env

        set_thread_env(spec["threads"])
        module = importlib.import_module(f"bench.systems.{spec['system']}")
        result = {"ok": True, **module.measure(spec)}
    except Exception as exc:  # noqa: BLE001 - reported to the harness, which records it and goes on
        lines = traceback.format_exc().strip().splitlines()
        result = {"ok": False, "error": f"{type(exc).__name__}: {exc}"[:2000], "traceback": lines[-12:]}
    result["process_seconds"] = round(time.perf_counter() - started, 3)
    result["loadavg_1m"] = round(load_before, 2)
    Path(spec["result_path"]).write_text(json.dumps(result))
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
