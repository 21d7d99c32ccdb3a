"""train.parallel=fsdp in the generated train.py: under `torchrun --nproc_per_node=2` (gloo, CPU)
FSDP2 trains the same model as one process with the same global batch, resumes from its own
(full-tensor) checkpoints, and refuses a checkpoint written in the other mode.

Runs use the stages conftest's corpus and FAST settings (model=tiny, 1.3M parameters).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from slmc.layout import LAYOUT

from .conftest import _make_run, _ok, _run_script

STEPS = ("train.max_steps=6", "train.eval_every=6", "train.warmup_steps=2")
# 2 processes x batch 2 x 2 accumulated micro-batches = the 8 sequences one process x batch 8
# reads per step; eval_batches keeps the evaluated blocks equal (eval_batches x batch x world = 16).
FSDP = (*STEPS, "host.num_processes=2", "train.parallel=fsdp", "train.batch_size=2", "train.grad_accum_steps=2",
        "train.eval_batches=4", "train.save_every=3")
SINGLE = (*STEPS, "train.batch_size=8", "train.save_every=6")


def records(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / LAYOUT.metrics).read_text().splitlines() if line.strip()]


def weights(run_dir: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(run_dir / LAYOUT.final_checkpoint / "model.safetensors"))


def assert_same_training(run: Path, reference: Path) -> None:
    """Per-step loss, final eval_ppl and final weights agree up to float summation order."""
    got, want = records(run), records(reference)
    losses = {r["step"]: r["loss"] for r in got if "loss" in r}
    assert losses.keys() == {r["step"] for r in want if "loss" in r} == set(range(1, 7))
    for r in want:
        if "loss" in r:  # measured: equal to the 6 printed digits
            assert losses[r["step"]] == pytest.approx(r["loss"], rel=1e-5), r["step"]
    evals = {r["step"]: r["eval_ppl"] for r in got if "eval_ppl" in r}
    assert evals[6] == pytest.approx(next(r["eval_ppl"] for r in want if r.get("step") == 6), rel=1e-5)
    reference_weights = weights(reference)
    shipped = weights(run)
    assert shipped.keys() == reference_weights.keys()
    for name, tensor in shipped.items():
        torch.testing.assert_close(tensor, reference_weights[name], rtol=1e-4, atol=1e-5, msg=name)


@pytest.fixture(scope="module")
def single(corpus_dir, tmp_path_factory) -> Path:
    run_dir = _make_run(corpus_dir, tmp_path_factory.mktemp("single"), SINGLE)
    _ok(_run_script(run_dir))
    return run_dir


def test_fsdp_two_processes_match_one_process(corpus_dir, tmp_path, single):
    """Sharded parameters, reduce-scattered gradients, gradient accumulation (sync on the last
    micro-batch only), gathered checkpoints: the same training as one process."""
    run_dir = _make_run(corpus_dir, tmp_path / "fsdp", FSDP)
    out = _ok(_run_script(run_dir, nproc=2))
    assert "2 process(es) on cpu (FSDP" in out.stdout
    assert_same_training(run_dir, single)
    state = torch.load(run_dir / LAYOUT.checkpoints / "step-6" / "state.pt", weights_only=True)
    assert state["sharded"] is True and state["world"] == 2
    assert set(state["model"]) >= set(weights(single))  # full tensors, plain parameter names
    assert all(t.shape == weights(single)[k].shape for k, t in state["model"].items() if k in weights(single))


@pytest.mark.slow  # FSDP: test_fsdp_two_processes_match_one_process; resume: test_stopped_run_resumes_...
def test_fsdp_resumes_from_its_checkpoint_and_refuses_the_other_mode(corpus_dir, tmp_path, single):
    run_dir = _make_run(corpus_dir, tmp_path / "fsdp", FSDP)
    stopped = _run_script(run_dir, nproc=2, env={"SLMC_STOP_AFTER_STEP": "3"})
    assert stopped.returncode != 0 and "SLMC_STOP_AFTER_STEP" in stopped.stderr
    assert (run_dir / LAYOUT.checkpoints / "step-3" / "state.pt").is_file()

    as_ddp = tmp_path / "as-ddp"  # the same folder with the DDP recipe's train.py
    shutil.copytree(run_dir, as_ddp)
    ddp = tuple(o for o in FSDP if o != "train.parallel=fsdp")
    ddp_script = _make_run(corpus_dir, tmp_path / "ddp", (*ddp, "train.parallel=ddp")) / LAYOUT.train_script
    shutil.copy2(ddp_script, as_ddp / LAYOUT.train_script)
    refused = _run_script(as_ddp, nproc=2)
    assert refused.returncode != 0
    assert "was written under FSDP, this run is DDP / one process" in refused.stderr

    resumed = _ok(_run_script(run_dir, nproc=2))
    assert "resumed from step 3" in resumed.stdout
    assert_same_training(run_dir, single)


def test_fsdp_refuses_lora_under_torchrun(corpus_dir, tmp_path):
    """The script's own guard (the compiler's rule train.parallel_supported refuses it earlier)."""
    # init=scratch with train=lora composes (the compiler only warns); the guard stops it before training.
    run_dir = _make_run(corpus_dir, tmp_path / "lora", (*STEPS, "train=lora", "host.num_processes=2",
                                                        "train.parallel=fsdp"))
    result = _run_script(run_dir, nproc=2)
    assert result.returncode != 0
    assert "TRAIN['parallel'] = 'fsdp' cannot train TRAIN['kind'] = 'lora'" in result.stderr
    assert not (run_dir / LAYOUT.metrics).exists() and not (run_dir / LAYOUT.final_checkpoint).exists()


@pytest.mark.slow  # a variant of the `single` reference run with one warning line more
def test_fsdp_recipe_in_one_process_trains_plainly(corpus_dir, tmp_path, single):
    """The FSDP recipe run as `python train.py` (world 1) shards nothing and trains as one process."""
    run_dir = _make_run(corpus_dir, tmp_path / "plain", (*SINGLE, "host.num_processes=2", "train.parallel=fsdp"))
    out = _ok(_run_script(run_dir))
    assert "1 process(es) on cpu, precision" in out.stdout
    assert_same_training(run_dir, single)
