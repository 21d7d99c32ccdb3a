"""Every family through the whole command line, as a user runs it: `slmc compile` of the checkpoint
at int8 and int4, `slmc verify` of the bundle, `slmc run` streaming tokens from it; and `init=prune`
compiles of the families with fused projections or sliding/full layer mixes.

The fixtures are the published shapes of tests/families/conftest.py (2 layers, width ~64, random
weights), so the tokens are not meaningful; what is checked is that each stage runs for each
family and that the bundle's manifest describes what it ships. One family runs in the default
suite; the rest are `slow` (about 20 s each).
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from slmc import families
from slmc.estimate import round_half_up

from .conftest import FAMILY_OF, slmc_env

RUN = ("train=none", "export.max_seq_len=64", "data.max_chars=20000", "generation.max_new_tokens=8")
DEFAULT_CASE = ("gemma-3-1b", "int4")
"""Sliding and full layers, two RoPE bases, a query scale, a tied table: the most that differs."""

CASES = [(name, precision) for name in ("smollm2-135m", "llama-3.2-1b", "qwen2.5-0.5b", "qwen3-0.6b", "gemma-3-1b",
                                         "phi-3-mini-4k", "phi-4-mini", "mistral-7b-v0.1")
         for precision in ("int8", "int4")]


def slmc(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "slmc.cli", *args], capture_output=True, text=True,
                          env=slmc_env(), timeout=timeout)


def compile_bundle(tmp_path, *overrides: str):
    done = slmc("compile", *RUN, f"out_dir={tmp_path}", *overrides)
    assert done.returncode == 0, done.stderr[-3000:]
    (run_dir,) = [p for p in tmp_path.iterdir() if p.is_dir() and not p.name.startswith(".")]
    return run_dir / "bundle"


def verify_and_run(bundle):
    verified = slmc("verify", str(bundle))
    assert verified.returncode == 0, verified.stdout + verified.stderr
    ran = slmc("run", str(bundle), "--prompt", "hello", "--max-new-tokens", "4")
    assert ran.returncode == 0, ran.stderr
    return ran


@pytest.mark.parametrize("name,precision", [
    pytest.param(*case, marks=() if case == DEFAULT_CASE else pytest.mark.slow) for case in CASES])
def test_compile_verify_run(name, precision, family_checkpoints, tmp_path):
    bundle = compile_bundle(tmp_path, "init=pretrained", f"init.path={family_checkpoints[name]}",
                            f"compress={precision}")
    manifest = json.loads((bundle / "manifest.json").read_text())
    family = families.get(FAMILY_OF[name])
    assert manifest["precision"] == precision and manifest["model"]["architecture"] == family.name
    assert manifest["metrics"]["export_parity"]["ok"]  # the fp32 export matched transformers exactly
    shipped = manifest["metrics"]["parity"]  # measured on the quantized graph itself, not copied from the export
    assert shipped["precision"] == precision and shipped["greedy"]["tokens"] > 0
    assert shipped["max_abs_logit_diff"] is not None and shipped["max_abs_logit_diff"] > 0
    assert json.loads((bundle / "genai_config.json").read_text())["model"]["type"] == family.genai_type
    verify_and_run(bundle)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["gemma-3-1b", "phi-3-mini-4k", "mistral-7b-v0.1"])
def test_prune_compile(name, family_checkpoints, tmp_path):
    """Half the MLP channels (Phi-3's fused gate_up_proj too), then export, package, verify, run."""
    bundle = compile_bundle(tmp_path, "init=prune", f"init.path={family_checkpoints[name]}",
                            "init.prune.mlp_ratio=0.5")
    source = json.loads((family_checkpoints[name] / "config.json").read_text())
    pruned = json.loads((bundle.parent / "init" / "config.json").read_text())
    # half the channels, the width rounded to a multiple of 8 as estimate.prune_arch predicts (168 -> 88)
    assert pruned["intermediate_size"] == round_half_up(source["intermediate_size"] / 2 / 8) * 8
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["model"]["architecture"] == families.get(FAMILY_OF[name]).name
    assert manifest["metrics"]["export_parity"]["ok"]
    verify_and_run(bundle)
