"""Resource limits: what cannot fit is refused before anything runs; divergence stops cleanly.

- For every shipped device, the rules find the exact model size that stops fitting:
  one layer less passes, one more is refused with the computed numbers (need > usable),
  and `slmc compile` then refuses before creating anything.
- A training host that is too small is refused the same way; the fixes the rules print are
  real: applying any one of them makes that violation go away.
- A run whose loss becomes NaN stops with one clear line, keeps its last good checkpoint
  (complete, finite), publishes no checkpoint, bundle or cache entry, and does so again when
  the same command is rerun.
"""

from __future__ import annotations

import json
import math
import re
import zipfile
from pathlib import Path

import pytest

from slmc.cli import main as slmc_main
from slmc.load import available_options, load_config, run_name
from slmc.rules._engine import run_rules

from .conftest import TINY, count, run_slmc

UNITS = {"B": 1, "kB": 1e3, "MB": 1e6, "GB": 1e9, "TB": 1e12}
BIG = ["model.hidden_size=4096", "model.intermediate_size=11008", "model.num_attention_heads=32",
       "model.num_key_value_heads=8", "model.vocab_size=32000", "model.max_position_embeddings=4096"]


def amount(text: str) -> float:
    number, unit = text.split()
    return float(number) * UNITS[unit]


def deploy_violation(cfg):
    found = run_rules(cfg, only=["memory.fits_device"])
    return found[0] if found else None


def with_layers(cfg, layers: int):
    return cfg.model_copy(update={"model": cfg.model.model_copy(update={"num_hidden_layers": layers})})


def runtime_for(device: str) -> str:
    return "tensorrt" if device.startswith(("jetson", "gpu")) else "ort"


@pytest.mark.parametrize("device", available_options("device"))
def test_the_largest_model_that_fits_each_device_is_exact(device):
    """Binary search on depth with the rule as oracle: at the boundary the rule's own numbers
    agree with its verdict (need <= usable just inside, need > usable one layer further)."""
    base = load_config([f"device={device}", f"runtime={runtime_for(device)}", *BIG])

    def fits(layers: int) -> bool:
        count("resource-limit cases")
        return deploy_violation(with_layers(base, layers)) is None

    low, high = 1, 4096
    assert fits(low) and not fits(high)
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (middle, high) if fits(middle) else (low, middle)
    violation = deploy_violation(with_layers(base, high))
    need = amount(re.search(r"needs ([\d.]+ \w+)", violation.message).group(1))
    usable = amount(re.search(r"([\d.]+ [kMGT]?B) (?:is )?usable", violation.message).group(1))
    assert need > usable * 0.995, violation.message  # printed to 3 significant digits
    assert "device.memory_gb" in violation.paths
    assert violation.fix


@pytest.mark.parametrize("device", available_options("device"))
def test_compile_refuses_a_model_that_does_not_fit_before_anything_runs(device, tmp_path, capsys):
    out = tmp_path / "out"
    overrides = [f"device={device}", f"runtime={runtime_for(device)}", *BIG, "model.num_hidden_layers=4000",
                 f"out_dir={out}"]
    count("resource-limit cases")
    assert slmc_main(["compile", *overrides]) == 2
    printed = capsys.readouterr()
    assert "memory.fits_device" in printed.out and "nothing was run" in printed.err
    assert re.search(r"needs [\d.]+ [kMGT]?B .* has [\d.]+ [kMGT]?B usable", " ".join(printed.out.split()))
    assert not out.exists(), "a refused compile created its output folder"


def fixes(violation) -> list[list[str]]:
    """Each alternative fix that is a set of overrides (`key=value ...`)."""
    found = []
    for option in violation.fix.split("; or "):
        overrides = re.findall(r"\b([a-z_]+(?:\.[a-z_]+)*=[\w.]+)", option)
        if overrides:
            found.append(overrides)
    return found


CASES = {
    "mobile, 1B model": (["device=mobile_arm64", "model.hidden_size=2048", "model.num_hidden_layers=22",
                          "model.num_attention_heads=32", "model.num_key_value_heads=4",
                          "model.intermediate_size=5632", "model.vocab_size=32000",
                          "model.max_position_embeddings=2048"], "memory.fits_device"),
    "mobile, long cache": (["device=mobile_arm64", "model.hidden_size=2048", "model.num_hidden_layers=22",
                            "model.num_attention_heads=32", "model.num_key_value_heads=4",
                            "model.intermediate_size=5632", "model.vocab_size=32000",
                            "model.max_position_embeddings=4096", "compress=int4", "export.max_seq_len=4096",
                            "export.max_batch_size=8"], "memory.fits_device"),
    "small host, big batch": (["model=small", "host.memory_gb=1.5", "train.batch_size=64"],
                              "memory.fits_training_host"),
    "small host, finetune": (["model=small", "train=finetune", "init=scratch", "host.memory_gb=1",
                              "train.batch_size=32"], "memory.fits_training_host"),
    "finetune, LoRA fits as is": (["model=small", "train=finetune", "init=scratch", "host.memory_gb=3.1",
                                   "train.batch_size=32"], "memory.fits_training_host"),
    "several processes": (["model=small", "host.memory_gb=3", "train.batch_size=8", "host.num_processes=4"],
                          "memory.fits_training_host"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_every_suggested_fix_makes_the_violation_go_away(case):
    overrides, rule = CASES[case]
    (violation,) = run_rules(load_config(overrides), only=[rule])
    assert re.search(r"\d+(\.\d+)? [kMGT]?B", violation.message), violation.message
    suggestions = fixes(violation)
    assert suggestions, violation.fix
    for extra in suggestions:
        count("resource-limit cases")
        after = run_rules(load_config([*overrides, *extra]), only=[rule])
        assert after == [], (case, extra, after)


@pytest.mark.parametrize("memory_gb, offered", [(3.1, "train=lora (needs"),
                                               (1, "train=lora train.batch_size=4 train.grad_accum_steps=8"),
                                               (0.2, None)])
def test_lora_is_offered_only_where_it_fits(memory_gb, offered):
    """The LoRA fix carries its own estimate, at the batch that fits; where none does, it is not
    offered (no 'train=lora' to apply) and the fix says what even LoRA would need."""
    overrides = ["model=small", "train=finetune", "init=scratch", f"host.memory_gb={memory_gb}", "train.batch_size=32"]
    (violation,) = run_rules(load_config(overrides), only=["memory.fits_training_host"])
    count("resource-limit cases")
    if offered:
        assert offered in violation.fix, violation.fix
        needs = re.search(r"train=lora[^(]*\(needs ([\d.]+ [kMGT]?B)", violation.fix).group(1)
        assert amount(needs) <= memory_gb * 1e9
    else:
        assert "train=lora" not in violation.fix
        assert re.search(r"a smaller model \(even LoRA at batch size 1 needs [\d.]+ [kMGT]?B\)", violation.fix)
    more = float(re.search(r"host.memory_gb ≥ ([\d.]+)", violation.fix).group(1))
    assert run_rules(load_config([*overrides, f"host.memory_gb={more}"]), only=["memory.fits_training_host"]) == []


def test_a_training_host_that_is_too_small_is_refused_before_anything_runs(tmp_path):
    """The real command, cold: exit 2, the peak and the host's memory printed, no folder created."""
    out = tmp_path / "out"
    proc = run_slmc("compile", "model=small", "host.memory_gb=1.5", "train.batch_size=64", f"out_dir={out}",
                    cwd=tmp_path, timeout=120)
    count("resource-limit cases")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    text = " ".join(proc.stdout.split())
    assert "memory.fits_training_host" in text and re.search(r"peak [\d.]+ [kMGT]?B > host.memory_gb 1.5 GB", text)
    assert not out.exists()


# ----------------------------------------------------------------------------- divergence

DIVERGE = ("train.warmup_steps=0", "train.grad_clip=0", "train.save_every=1", "train.max_steps=10",
           "train.eval_every=5")


def complete_checkpoint(state: Path) -> bool:
    with zipfile.ZipFile(state) as archive:
        return archive.testzip() is None


def diverge(tmp_path: Path, lr: str = "1e30"):
    out = tmp_path / "out"
    overrides = [*TINY, *DIVERGE, f"train.lr={lr}", f"out_dir={out}"]
    run_dir = out / run_name(load_config(overrides))
    proc = run_slmc("compile", *overrides, cwd=tmp_path, timeout=600)
    count("resource-limit cases")
    return proc, run_dir, out


def assert_stopped_cleanly(proc, run_dir: Path, out: Path) -> int:
    """The failure as a person sees it, and what is left on disk. Returns the bad step."""
    assert proc.returncode == 1, proc.stdout[-2000:] + proc.stderr[-2000:]
    lines = (proc.stdout + proc.stderr).splitlines()
    reason = next(line for line in lines if line.startswith("train.py: error: loss is "))
    assert "stopped before applying it" in reason and "last good checkpoint is" in reason, reason
    assert "stage 'train' failed" in proc.stderr and "Traceback" not in proc.stderr + proc.stdout
    bad = int(reason.split(" at step ")[1].split(";")[0])
    kept = sorted(int(p.name.split("-")[1]) for p in (run_dir / "checkpoints").glob("step-*"))
    assert kept and kept[-1] == bad - 1, (kept, bad)
    assert all(complete_checkpoint(run_dir / "checkpoints" / f"step-{s}" / "state.pt") for s in kept)
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert all(math.isfinite(r["loss"]) for r in records if "loss" in r)
    assert not (run_dir / "checkpoint").exists() and not (run_dir / "bundle").exists()
    assert not list((out / ".cache").glob("train/*/result.json")), "a diverged run was cached"
    return bad


def test_a_diverging_run_stops_clearly_and_keeps_the_last_good_checkpoint(tmp_path):
    proc, run_dir, out = diverge(tmp_path)
    bad = assert_stopped_cleanly(proc, run_dir, out)
    last = run_dir / "checkpoints" / f"step-{bad - 1}" / "state.pt"
    assert str(last.parent) in proc.stdout + proc.stderr


@pytest.mark.slow
@pytest.mark.parametrize("lr", ["1e30", "1e12", "1e6"])
def test_divergence_at_any_step_then_the_same_command_again(tmp_path, lr):
    """Whatever step diverges, the state is clean; rerunning fails the same way, keeping that state."""
    proc, run_dir, out = diverge(tmp_path, lr)
    if proc.returncode == 0:
        pytest.skip(f"lr={lr} did not diverge within 10 steps")
    bad = assert_stopped_cleanly(proc, run_dir, out)
    again, _, _ = diverge(tmp_path, lr)
    assert assert_stopped_cleanly(again, run_dir, out) == bad
