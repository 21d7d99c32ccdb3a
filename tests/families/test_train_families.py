"""The train side for every family: the generated train.py loads each checkpoint in its own class
with LoRA targets on its own modules, and LoRA, QAT and distillation really train the fixtures.

Checkpoints are the published shapes of tests/families/conftest.py (2 layers, width ~64). Runs
that train go through the real stages (data -> tokenizer -> train: the generated train.py in a
subprocess, as a compile runs it) and stop before export; full compiles through export and
package are in test_hub_compile.py and, per family, under `slow` below.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest
import torch

from slmc import families
from slmc.cli import main
from slmc.layout import LAYOUT
from slmc.load import load_config
from slmc.render_train import render_train_script

from .conftest import FAMILY_OF, PAD, PUBLISHED

torch.set_num_threads(1)

SPLIT = ["q_proj", "k_proj", "v_proj", "o_proj"]
LORA_DEFAULT = {family: (["qkv_proj", "o_proj"] if families.get(family).fused_qkv else SPLIT)
                for family in families.SUPPORTED}
"""What the default train.lora.target_modules (q/k/v/o) becomes on each family."""

TINY_RUN = ("train.max_steps=2", "train.batch_size=2", "train.seq_len=32", "train.eval_every=2",
            "train.save_every=2", "train.eval_batches=1", "train.warmup_steps=0", "data.max_chars=20000",
            "export.max_seq_len=64", "generation.max_new_tokens=8")

FAMILY_E2E = ["qwen2.5-0.5b", "qwen3-0.6b", "mistral-7b-v0.3", "llama-3.2-1b"]
"""Full compiles (export included) of the families whose export already works."""
AFTER_FAMEXPORT = ["phi-3-mini-4k", "phi-4-mini", "gemma-3-1b", "mistral-7b-v0.1"]
"""Sliding-window and longrope families (exact windows by masking since the export learned them)."""


def config_block(text: str) -> dict:
    """train.py's CONFIG block executed (literals only): its names."""
    section = text[text.index("SEED = "):text.index("# Plumbing")].rsplit("\n# ====", 1)[0]
    namespace: dict = {}
    exec(compile(section, "<config>", "exec"), namespace)
    return namespace


def lora_modules(model) -> set[str]:
    """Names of the modules peft put an adapter on."""
    return {n.split(".lora_A")[0].rsplit(".", 1)[-1] for n, _ in model.named_parameters() if ".lora_A." in n}


# ----------------------------------------------------------------------------- rendering


@pytest.mark.parametrize("name", list(PUBLISHED))
def test_rendered_train_py_loads_each_family_in_its_class_with_its_lora_targets(name, family_checkpoints):
    """ARCH names the family's class, LORA the family's modules, and peft finds exactly those in the
    checkpoint loaded the way train.py loads it (that class, safetensors only)."""
    import transformers
    from peft import LoraConfig, get_peft_model

    folder = family_checkpoints[name]
    family = families.get(FAMILY_OF[name])
    block = config_block(render_train_script(load_config(["init=pretrained", f"init.path={folder}", "train=lora"])))
    assert block["ARCH"]["model"] == {"family": family.name, "class": family.causal_lm_class,
                                      "model_types": list(family.model_types)}
    assert block["INIT"] == {"kind": "pretrained", "path": str(folder), "hub": None, "revision": None}
    assert block["MODEL"] is None  # the unused model group is not rendered
    assert block["LORA"]["target_modules"] == LORA_DEFAULT[family.name]
    model = getattr(transformers, block["ARCH"]["model"]["class"]).from_pretrained(str(folder), use_safetensors=True)
    adapted = get_peft_model(model, LoraConfig(r=2, target_modules=block["LORA"]["target_modules"]))
    assert lora_modules(adapted) == set(LORA_DEFAULT[family.name])


def test_mlp_targets_land_on_fused_gate_up(family_checkpoints):
    folder = family_checkpoints["phi-3-mini-4k"]
    block = config_block(render_train_script(load_config(
        ["init=pretrained", f"init.path={folder}", "train=lora", "train.lora.target_modules=[gate_proj,up_proj,down_proj]"])))
    assert block["LORA"]["target_modules"] == ["gate_up_proj", "down_proj"]


@pytest.mark.parametrize("name", ["smollm2-135m", "llama-3.2-1b", "qwen2.5-0.5b", "qwen3-0.6b", "gemma-3-1b",
                                  "phi-3-mini-4k", "mistral-7b-v0.1"])
def test_plan_only_compile_names_the_checkpoints_family(name, family_checkpoints, tmp_path, capsys):
    folder = family_checkpoints[name]
    family = FAMILY_OF[name]
    rc = main(["compile", "--plan-only", "init=pretrained", f"init.path={folder}", "train=lora",
               "train.max_steps=2", "train.warmup_steps=0", f"out_dir={tmp_path}"])
    assert rc == 0, capsys.readouterr().out
    (run,) = tmp_path.iterdir()
    assert run.name.startswith(f"{family}-") and "-pretrained-lora-" in run.name
    plan = json.loads((run / LAYOUT.plan).read_text())
    assert plan["provenance"]["checkpoints"]["init.path"] == {
        "source": str(folder), "folder": str(folder), "hub": None, "revision": None, "family": family}
    block = config_block((run / LAYOUT.train_script).read_text())
    assert block["ARCH"]["model"]["class"] == families.get(family).causal_lm_class
    assert f"model | {family} checkpoint" in (run / LAYOUT.report).read_text()  # not the unused model=tiny


def test_train_py_refuses_a_checkpoint_of_another_family(family_checkpoints, tmp_path):
    """A script compiled for a qwen2 checkpoint pointed at a llama folder stops with one line."""
    import importlib.util

    text = render_train_script(load_config(["init=pretrained", f"init.path={family_checkpoints['qwen2.5-0.5b']}",
                                            "train=finetune"]))
    (tmp_path / "train.py").write_text(text)
    spec = importlib.util.spec_from_file_location("train_refuses", tmp_path / "train.py")
    script = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = script  # dataclasses look their module up while the class is built
    spec.loader.exec_module(script)
    with pytest.raises(script.TrainError, match="holds a 'llama' checkpoint, but this script was compiled for "
                                                "family 'qwen2'"):
        script.load_pretrained(str(family_checkpoints["smollm2-135m"]), "INIT['path']", script.ARCH["model"])
    assert type(script.load_pretrained(str(family_checkpoints["qwen2.5-0.5b"]), "INIT['path']",
                                       script.ARCH["model"])).__name__ == "Qwen2ForCausalLM"


# ----------------------------------------------------------------------------- training


def train_only(tmp_path: Path, *overrides: str) -> Path:
    """A compile of `overrides` checked and planned as usual, run through data, tokenizer and train only
    (quiet: train.py's output in train.log); returns the run folder."""
    import dataclasses

    from slmc import writer
    from slmc.execute import execute
    from slmc.pipeline import check_and_plan, render
    from slmc.stages import progress

    checked = check_and_plan(load_config([*TINY_RUN, f"out_dir={tmp_path}", *overrides]))
    plan = dataclasses.replace(checked.plan, stages=tuple(s for s in checked.plan.stages
                                                          if s.name in ("data", "tokenizer", "tokenize", "train")))
    checked = dataclasses.replace(checked, plan=plan)
    run_dir = writer.prepare_run_dir(checked.run_dir).resolve()
    writer.write_files(run_dir, render(checked))
    with progress.quiet():
        execute(checked, run_dir, use_cache=False)
    return run_dir


def records(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / LAYOUT.metrics).read_text().splitlines() if line.strip()]


def saved(run_dir: Path) -> tuple[dict, dict[str, torch.Tensor]]:
    from safetensors.torch import load_file

    final = run_dir / LAYOUT.final_checkpoint
    return json.loads((final / "config.json").read_text()), load_file(str(final / "model.safetensors"))


def source_weights(folder: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(folder / "model.safetensors"))


def assert_lora_run(run_dir: Path, source: Path, family: str) -> None:
    """Two finite LoRA steps; a plain merged checkpoint of the same family where exactly the adapted
    modules changed."""
    losses = [r["loss"] for r in records(run_dir) if "loss" in r]
    assert len(losses) == 2 and all(math.isfinite(v) for v in losses)
    config, merged = saved(run_dir)
    assert config["model_type"] in families.get(family).model_types
    base = source_weights(source)
    assert set(merged) == set(base)  # merged: no lora_A / lora_B tensors left
    changed = {k.rsplit(".", 2)[-2] for k in base if not torch.equal(base[k], merged[k])}
    assert changed == set(LORA_DEFAULT[family]), changed


@pytest.mark.parametrize("name", [
    "phi-3-mini-4k",  # fused qkv_proj / gate_up_proj (llama runs in test_hub_compile's full compile)
    *[pytest.param(n, marks=pytest.mark.slow)
      for n in ("smollm2-135m", "llama-3.2-1b", "qwen2.5-0.5b", "qwen3-0.6b", "gemma-3-1b", "phi-4-mini",
                "mistral-7b-v0.1", "mistral-7b-v0.3")],
])
def test_lora_trains_each_family(name, family_checkpoints, tmp_path):
    source = family_checkpoints[name]
    run_dir = train_only(tmp_path, "init=pretrained", f"init.path={source}", "train=lora", "train.lr=0.05")
    assert_lora_run(run_dir, source, FAMILY_OF[name])


def test_qat_distillation_of_a_qwen2_student_from_a_qwen3_teacher(family_checkpoints, tmp_path):
    """Two families that share a tokenizer: the qwen2 student (the model group, at the teacher's
    vocabulary) learns from the qwen3 teacher through int8 fake quantization, and is saved as a
    plain float qwen2 checkpoint whose Linear weights sit on their int8 grids."""
    teacher = family_checkpoints["qwen3-0.6b"]
    run_dir = train_only(tmp_path, "model=qwen2_tiny", "model.vocab_size=320", "model.num_hidden_layers=2",
                         "init=distill", f"init.distill.teacher_path={teacher}", "train=qat",
                         "train.qat.observer_steps=2", "compress=int8")
    block = config_block((run_dir / LAYOUT.train_script).read_text())
    assert block["ARCH"]["model"]["family"] == "qwen2" and block["ARCH"]["teacher"]["family"] == "qwen3"
    log = (run_dir / LAYOUT.train_log).read_text()
    assert "QAT for int8: fake quantization of 15 Linear layers" in log  # 7 per layer + the tied head
    losses = [r["loss"] for r in records(run_dir) if "loss" in r]
    assert len(losses) == 2 and all(math.isfinite(v) for v in losses)
    assert (run_dir / LAYOUT.tokenizer).read_bytes() == (teacher / "tokenizer.json").read_bytes()
    config, weights = saved(run_dir)
    assert config["model_type"] == "qwen2" and not any("parametrizations" in k for k in weights)
    # '<|pad|>' is spelled as train.py's TOKENS spell it; bos/eos are not ('<|bos|>', '<|eos|>'): the teacher's ids
    teacher_config = json.loads((teacher / "config.json").read_text())
    assert (config["bos_token_id"], config["eos_token_id"], config["pad_token_id"]) == (
        teacher_config["bos_token_id"], teacher_config["eos_token_id"], PAD)
    # Each saved weight sits on the grid training last rounded it to (the scales in the resumable state).
    state = torch.load(run_dir / LAYOUT.checkpoints / "step-2" / "state.pt", weights_only=True)["model"]
    for module in ("self_attn.q_proj", "self_attn.k_proj", "mlp.down_proj"):
        scale = state[f"model.layers.0.{module}.parametrizations.weight.0.scale"]
        steps = weights[f"model.layers.0.{module}.weight"] / scale.reshape(-1, 1)
        assert torch.allclose(steps, steps.round(), atol=1e-3) and steps.abs().max() <= 127 + 1e-3, module


@pytest.mark.slow
@pytest.mark.parametrize("name", ["qwen3-0.6b", "gemma-3-1b", "phi-3-mini-4k", "mistral-7b-v0.3"])
def test_qat_fine_tunes_each_family(name, family_checkpoints, tmp_path):
    run_dir = train_only(tmp_path, "init=pretrained", f"init.path={family_checkpoints[name]}", "train=qat",
                         "compress=int8")
    config, weights = saved(run_dir)
    assert config["model_type"] in families.get(FAMILY_OF[name]).model_types
    assert not any("parametrizations" in k for k in weights)
    assert all(math.isfinite(r["loss"]) for r in records(run_dir) if "loss" in r)


@pytest.mark.slow
def test_llama_student_distilled_from_a_mistral_teacher(family_checkpoints, tmp_path):
    run_dir = train_only(tmp_path, "model.vocab_size=320", "model.num_hidden_layers=2", "init=distill",
                         f"init.distill.teacher_path={family_checkpoints['mistral-7b-v0.3']}", "train.max_steps=4",
                         "train.log_every=1", "train.eval_every=4", "train.save_every=4")
    losses = [r["loss"] for r in records(run_dir) if "loss" in r]
    assert len(losses) == 4 and losses[-1] < losses[0]
    assert saved(run_dir)[0]["model_type"] == "llama"


# ----------------------------------------------------------------------------- through export


def compile_lora(tmp_path: Path, folder: Path):
    from slmc.pipeline import compile_config

    return compile_config(load_config([*TINY_RUN, f"out_dir={tmp_path}", "init=pretrained", f"init.path={folder}",
                                       "train=lora"]), quiet=True)


@pytest.mark.slow
@pytest.mark.parametrize("name", [
    *FAMILY_E2E,
    *AFTER_FAMEXPORT,
])
def test_lora_compile_through_export_names_the_family(name, family_checkpoints, tmp_path):
    result = compile_lora(tmp_path, family_checkpoints[name])
    family = families.get(FAMILY_OF[name])
    manifest = json.loads((result.bundle / "manifest.json").read_text())
    assert manifest["model"]["architecture"] == family.name
    assert manifest["provenance"]["checkpoints"]["init.path"] == {"hub": None, "revision": None, "family": family.name}
    assert manifest["metrics"]["parity"]["ok"]
    assert f"A {family.name} decoder" in (result.bundle / "README.md").read_text()
    assert f"| model | {family.name}, " in (result.run_dir / LAYOUT.report).read_text()
    genai = json.loads((result.bundle / "genai_config.json").read_text())
    assert genai["model"]["type"] == family.genai_type
