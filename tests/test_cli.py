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
                                  ["check", "model.hidden_size=zero"], ["explain", "nosuchgroup"],
                                  ["-sc"], ["-sc", "bogus=bash"], ["compile", "-sc", "install=tcsh"]])
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
    assert sorted(p.name for p in run.iterdir()) == [".slmc.lock", "compile.log", "config.yaml", "plan.json",
                                                     "report.md", "train.py"]
    plan = json.loads((run / "plan.json").read_text())
    assert [s["name"] for s in plan["stages"]][:4] == ["data", "tokenizer", "tokenize", "train"]
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
    assert seen[0] == seen[1] and set(seen[0]) == {".slmc.lock", "compile.log", "config.yaml", "plan.json",
                                                               "report.md", "train.py"}


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


EXAMPLES = Path(__file__).resolve().parents[1] / "docs" / "examples" / "conf"
COMMANDS = ["compile", "check", "devices", "explain", "report", "lineage", "run", "bench", "verify"]


def test_version():
    from slmc import __version__

    proc = slmc("--version")
    assert proc.returncode == 0 and proc.stdout.strip() == f"slmc {__version__}"


def test_help_lists_each_command_once():
    proc = slmc("--help")
    assert proc.returncode == 0
    for command in COMMANDS:
        listed = [line for line in proc.stdout.splitlines() if line.split()[:1] == [command]]
        assert len(listed) == 1, (command, proc.stdout)
    assert "{" not in proc.stdout  # argparse's second, brace-delimited list of the same commands


def test_every_option_of_slmcs_own_commands_has_help_text():
    from slmc.cli import _parser
    from slmc.completion import _subparsers

    for name, sub in _subparsers(_parser()).items():
        if name in ("run", "bench", "verify"):
            continue  # parsed by slmc.runtime's own command line
        for action in sub._actions:
            assert action.help, (name, action.dest)


def test_explain_prints_types_a_person_reads():
    proc = slmc("explain", "compress")
    assert proc.returncode == 0, proc.stderr
    assert "int (≥ 16) | auto" in proc.stdout and "fp32 | fp16" in proc.stdout
    from slmc.options_catalogue import type_label
    from slmc.schema import Section

    def sections(model):
        yield model
        for field in model.model_fields.values():
            if isinstance(field.annotation, type) and issubclass(field.annotation, Section):
                yield from sections(field.annotation)

    from slmc.schema import SlmcConfig

    for model in sections(SlmcConfig):
        for name, field in model.model_fields.items():
            label = type_label(field.annotation)
            assert not any(raw in label for raw in ("typing", "Annotated", "Literal", "<class", "NoneType",
                                                    "FieldInfo")), (model.__name__, name, label)


@pytest.mark.parametrize("args, message, fix", [
    (["check", "train.max_step=20"], "train.max_step: not a key of the config", "did you mean train.max_steps=20?"),
    (["check", "compress=int3"], "no option file compress/int3.yaml", "did you mean compress=int4 or compress=int8?"),
])
def test_typos_get_the_nearest_key_or_option(args, message, fix):
    proc = slmc(*args)
    assert proc.returncode == 2
    assert message in proc.stderr and fix in proc.stderr and "+train" not in proc.stderr


def test_a_hostile_tensorrt_version_is_refused_by_check():
    proc = slmc("check", "device=jetson_orin_nano", "runtime=tensorrt", "device.tensorrt_version='10.3;touch x'")
    assert proc.returncode == 2 and "device.tensorrt_version" in proc.stderr and "Traceback" not in proc.stderr


# --config-dir: one way to add your own device, shared by check, compile, devices and explain.

def test_check_and_compile_take_the_example_device(tmp_path):
    check = slmc("check", "--config-dir", str(EXAMPLES), "device=my_board", "compress=int8")
    assert check.returncode == 0, check.stdout + check.stderr
    compiled = slmc("compile", "--plan-only", "-cd", str(EXAMPLES), "device=my_board", f"out_dir={tmp_path}")
    assert compiled.returncode == 0, compiled.stdout + compiled.stderr
    (run,) = tmp_path.iterdir()
    assert "my_board" in run.name and "name: my_board" in (run / "config.yaml").read_text()
    hydra_route = slmc("compile", "--cfg", "job", "--config-dir", str(EXAMPLES), "device=my_board")
    assert hydra_route.returncode == 0 and "memory_bandwidth_gbps: 30" in hydra_route.stdout
    listed = slmc("devices", "--json", "--config-dir", str(EXAMPLES))
    assert "my_board" in {d["name"] for d in json.loads(listed.stdout)}


@pytest.mark.parametrize("command", ["check", "compile"])
def test_a_config_dir_that_is_not_there_is_an_error(command, tmp_path):
    proc = slmc(command, "--config-dir", str(tmp_path / "nope"), "device=my_board", f"out_dir={tmp_path}")
    assert proc.returncode == 2 and "--config-dir" in proc.stderr and "Traceback" not in proc.stderr


# Tab completion, through the script Hydra installs and a real bash.

COMPLETE = r"""
eval "$(slmc compile -sc install=bash)"
comp() {
    COMP_LINE="$1"; COMP_POINT=${#COMP_LINE}; COMP_WORDS=($COMP_LINE)
    [[ "$1" == *" " ]] && COMP_WORDS+=("")
    COMP_CWORD=$((${#COMP_WORDS[@]} - 1)); COMPREPLY=()
    hydra_bash_completion
    echo "${COMPREPLY[*]}"
}
"""


def test_tab_completion_in_bash(tmp_path):
    import shutil

    if shutil.which("bash") is None:
        pytest.skip("no bash")
    bin_dir = Path(sys.executable).parent
    assert (bin_dir / "slmc").is_file(), "the slmc console script is installed next to the interpreter"
    lines = ["slmc co", "slmc ", "slmc compile dev", "slmc compile device=jet", "slmc check train.max_s",
             "slmc compile --pl", f"slmc check --config-dir {EXAMPLES} device=my", "slmc explain tr",
             "slmc compile model=small train.lo"]
    script = COMPLETE + "".join(f'comp "{line}"\n' for line in lines)
    env = dict(os.environ, PATH=f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
               SLMC_CACHE_DIR=str(tmp_path))
    proc = subprocess.run(["bash", "-c", script], capture_output=True, text=True, env=env, timeout=300)
    got = dict(zip(lines, (set(out.split()) for out in proc.stdout.splitlines())))
    assert len(got) == len(lines), proc.stdout + proc.stderr
    assert got["slmc co"] == {"compile"}
    assert set(COMMANDS) <= got["slmc "]
    assert "device=" in got["slmc compile dev"]
    assert got["slmc compile device=jet"] == {"device=jetson_orin_nano", "device=jetson_agx_orin"}
    assert got["slmc check train.max_s"] == {"train.max_steps="}
    assert got["slmc compile --pl"] == {"--plan-only"}
    assert got[f"slmc check --config-dir {EXAMPLES} device=my"] == {"device=my_board"}
    assert got["slmc explain tr"] == {"train"}
    assert {"train.lora.", "train.log_every="} <= got["slmc compile model=small train.lo"]
