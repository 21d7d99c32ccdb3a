"""Every shipped device × model × compress × runtime composes and fails only with the errors expected.

The expectation comes from a small table here, derived from device facts and
the runtime support matrix (docs/architecture.md, "Device profiles") — not from the rules themselves.
Speed: each group option is composed once through Hydra; combinations swap those
validated sections into one base config (the groups do not interpolate each
other). A covering sample is checked to equal a full Hydra compose, and the full
cartesian compose runs under `-m slow`.
"""

from __future__ import annotations

import itertools
import shutil
from functools import lru_cache

import pytest

from slmc.errors import ConfigError
from slmc.load import conf_dir, load_config
from slmc.rules._engine import run_rules

AXES = ("device", "model", "compress", "runtime")
FIXED = ["init=scratch", "train=pretrain", "data=builtin"]

# Runtime support, written down independently of the rules:
# precisions ONNX Runtime cannot run at all; what TensorRT cannot take as slmc writes it.
ORT_UNRUNNABLE = {"bf16", "fp8"}
TRT_UNRUNNABLE = {"int4", "fp8"}   # int4 is MatMulNBits (an ORT contrib op); no fp8 Q/DQ path is built
TRT_REJECTED_OPS = {"int4"}  # int8 ships as static QDQ on TensorRT (int8_mode=auto)


def _groups() -> dict[str, list[str]]:
    """Option names per group, walking the installed conf folder recursively (skipping _base and
    hydra/, whose launcher options configure Hydra itself; tests/test_sweep.py covers them)."""
    root = conf_dir()
    out: dict[str, list[str]] = {}
    for path in sorted(root.rglob("*.yaml")):
        rel = path.relative_to(root)
        if len(rel.parts) < 2 or rel.parts[0].startswith("_") or rel.parts[0] == "hydra":
            continue
        out.setdefault("/".join(rel.parts[:-1]), []).append(path.stem)
    return out


GROUPS = _groups()


@lru_cache(maxsize=None)
def _option(group: str, name: str):
    return load_config([*FIXED, f"{group}={name}"])


@lru_cache(maxsize=1)
def _base():
    return load_config(FIXED)


def _swap(choice: dict[str, str]):
    return _base().model_copy(update={g: getattr(_option(g, n), g) for g, n in choice.items()})


def _expected_errors(cfg) -> set[str]:
    d, p, rt = cfg.device, cfg.compress.precision, cfg.runtime.name
    exp = set()
    if rt not in d.runtimes:
        exp.add("runtime.available_on_device")
    if p not in d.precisions:
        exp.add("precision.supported_by_device")
    if (rt == "ort" and p in ORT_UNRUNNABLE) or (rt == "tensorrt" and p in TRT_UNRUNNABLE):
        exp.add("precision.supported_by_runtime")
    if rt == "tensorrt" and p in TRT_REJECTED_OPS:
        exp.add("trt.ops_supported")
    return exp


def _combinations():
    return [dict(zip(AXES, values)) for values in itertools.product(*(GROUPS[a] for a in AXES))]


def test_conf_has_the_expected_groups():
    assert set(AXES) | {"init", "train", "data"} <= set(GROUPS)
    assert len(_combinations()) == 5 * 3 * 6 * 2


def test_every_combination_has_exactly_the_expected_errors():
    wrong = []
    for choice in _combinations():
        cfg = _swap(choice)
        got = {v.rule for v in run_rules(cfg) if v.severity == "error"}
        if got != _expected_errors(cfg):
            wrong.append(f"{choice}: got {sorted(got)}, expected {sorted(_expected_errors(cfg))}")
    assert not wrong, "\n".join(wrong)


def test_swapped_sections_equal_a_full_hydra_compose():
    """Covering sample: every option of every axis appears in at least one full compose."""
    longest = max(len(GROUPS[a]) for a in AXES)
    for i in range(longest):
        choice = {a: GROUPS[a][(i * 7 + j) % len(GROUPS[a])] for j, a in enumerate(AXES)}
        full = load_config([*FIXED, *(f"{g}={n}" for g, n in choice.items())])
        assert full == _swap(choice), choice


def _missing_is_reported(overrides: list[str], key: str) -> bool:
    """A required value left out fails at load (ConfigError) or as an error rule naming the key."""
    try:
        cfg = load_config(overrides)
    except ConfigError as err:
        return key in str(err)
    return any(v.severity == "error" and key in v.paths for v in run_rules(cfg))


def test_every_option_of_every_group_composes(tmp_path, make_checkpoint):
    """Every option composes; one with a required value ('???') is reported without it and composes with it."""
    ckpt = make_checkpoint(tokenizer_size=4096)
    text = tmp_path / "a.txt"
    text.write_text("hello")
    run = tmp_path / "run"  # an slmc run folder: its final checkpoint is what init=from_run loads
    shutil.copytree(ckpt, run / "checkpoint")
    (run / "config.yaml").write_text("seed: 0\n")
    (run / "plan.json").write_text("{}")
    needs = {
        "init/pretrained": f"init.path={ckpt}", "init/prune": f"init.path={ckpt}", "init/from_run": f"init.run={run}",
        "init/distill": f"init.distill.teacher_path={ckpt}", "data/files": f"data.train_files=[{text}]",
    }
    for group, options in GROUPS.items():
        for name in options:
            key = f"{group}/{name}"
            if key in needs:
                assert _missing_is_reported([f"{group}={name}"], needs[key].split("=")[0]), key
                cfg = load_config([f"{group}={name}", needs[key]])
            else:
                cfg = load_config([f"{group}={name}"])
            assert getattr(cfg, group).name == name


@pytest.mark.slow
def test_every_combination_composes_through_hydra():
    for choice in _combinations():
        cfg = load_config([*FIXED, *(f"{g}={n}" for g, n in choice.items())])
        assert {v.rule for v in run_rules(cfg) if v.severity == "error"} == _expected_errors(cfg)
