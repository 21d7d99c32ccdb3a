"""The command line as a user meets it: exit codes, JSON, Hydra's flags, no tracebacks."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from slmc.cli import main


def slmc(*args, cwd=None, timeout=120):
    """Run the real console entry point in a subprocess (cold start, like a user)."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    return subprocess.run([sys.executable, "-m", "slmc.cli", *args], capture_output=True, text=True,
                          cwd=cwd, env=env, timeout=timeout)


def test_check_passes_on_defaults(capsys):
    assert main(["check"]) == 0


def test_check_fp8_on_jetson_lists_every_violation_with_a_fix():
    proc = slmc("check", "device=jetson_orin_nano", "compress=fp8")
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "precision.supported_by_device" in proc.stdout and "fix:" in proc.stdout
    assert "Traceback" not in proc.stderr


def test_check_json_is_machine_readable():
    proc = slmc("check", "--json", "device=cpu", "runtime=tensorrt")
    assert proc.returncode == 2
    payload = json.loads(proc.stdout)
    assert payload["ok"] is False
    rules = {v["rule"] for v in payload["violations"]}
    assert "runtime.available_on_device" in rules
    for v in payload["violations"]:
        assert set(v) == {"rule", "severity", "paths", "message", "fix"} and v["paths"]


def test_check_json_reports_schema_errors_as_json():
    proc = slmc("check", "--json", "train.max_steps=abc")
    assert proc.returncode == 2
    payload = json.loads(proc.stdout)
    assert payload["ok"] is False and "train.max_steps" in payload["violations"][0]["message"]


@pytest.mark.parametrize("args", [["compile", "device=nope"], ["check", "train.max_stepz=1"],
                                  ["check", "model.hidden_size=zero"], ["explain", "nosuchgroup"]])
def test_config_errors_exit_2_without_traceback(args):
    proc = slmc(*args)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr and "slmc:" in proc.stderr


def test_devices_table_and_json():
    proc = slmc("devices", "--json")
    assert proc.returncode == 0
    names = {d["name"] for d in json.loads(proc.stdout)}
    assert names == {"cpu", "gpu_server", "jetson_orin_nano", "jetson_agx_orin", "mobile_arm64"}
    assert "jetson_orin_nano" in slmc("devices").stdout


def test_hydra_cfg_flag_prints_the_composed_job_config(tmp_path):
    proc = slmc("compile", "--cfg", "job", "device=jetson_orin_nano", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "name: jetson_orin_nano" in proc.stdout and "max_seq_len" in proc.stdout
    assert not any(tmp_path.iterdir()), "--cfg must not write anything"


def test_plan_only_renders_and_runs_nothing(tmp_path):
    proc = slmc("compile", "--plan-only", "device=cpu", f"out_dir={tmp_path}")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (run,) = list(tmp_path.iterdir())
    assert sorted(p.name for p in run.iterdir()) == ["config.yaml", "plan.json", "report.md", "train.py"]
    plan = json.loads((run / "plan.json").read_text())
    assert [s["name"] for s in plan["stages"]][:3] == ["data", "tokenizer", "train"]
    assert len(plan["rules_checked"]) >= 20


def test_rerun_reports_identical_files(tmp_path):
    first = slmc("compile", "--plan-only", f"out_dir={tmp_path}")
    second = slmc("compile", "--plan-only", f"out_dir={tmp_path}")
    assert first.returncode == second.returncode == 0
    assert "create" in first.stdout and "identical" in second.stdout and "overwrite" not in second.stdout


def test_same_config_renders_byte_identical_files(tmp_path):
    import shutil

    seen = []
    for _ in range(2):
        assert slmc("compile", "--plan-only", f"out_dir={tmp_path}", "run_name=r").returncode == 0
        seen.append({p.name: p.read_bytes() for p in (tmp_path / "r").iterdir()})
        shutil.rmtree(tmp_path / "r")
    assert seen[0] == seen[1] and set(seen[0]) == {"config.yaml", "plan.json", "report.md", "train.py"}


# What `slmc check` must not import: torch and the export stack (never needed to check),
# Hydra/OmegaConf (once Hydra has composed an override set, its answer comes from the compose
# cache), rich (a passing check printed to a pipe is one plain line). Each of these costs
# 20-1000 ms of a cold start.
NOT_ON_CHECK_PATH = ("torch", "transformers", "onnx", "onnxruntime", "onnxscript", "numpy", "jinja2",
                     "hydra", "omegaconf", "rich")
IMPORTS_OF = f"""
import sys
from slmc.cli import main
rc = main(sys.argv[1:])
print("IMPORTED", sorted({{n.split(".")[0] for n in sys.modules}} & set({NOT_ON_CHECK_PATH!r})))
sys.exit(rc)
"""


@pytest.mark.parametrize("args", [
    ["check"],
    ["check", "--json", "device=jetson_orin_nano", "compress=int8", "train.max_steps=50", "train.lr=1e-3"],
])
def test_check_path_imports_no_heavy_modules(args, tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("FORCE_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE")}
    env["SLMC_CACHE_DIR"] = str(tmp_path)

    def imported():
        proc = subprocess.run([sys.executable, "-c", IMPORTS_OF, *args], capture_output=True, text=True, env=env,
                              timeout=120)
        assert proc.returncode in (0, 2), proc.stderr
        return proc.stdout

    assert "'hydra'" in imported()  # the first time, Hydra composes (and the answer is cached)
    second = imported()
    assert "IMPORTED []" in second, second[-500:]
