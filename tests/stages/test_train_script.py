"""The generated train.py: its context, its text (golden, deterministic, compiles for every
train option) and what it does when run (trains, resumes exactly, fine-tunes a local
checkpoint, LoRA, QAT, DDP under torchrun, stops on a non-finite loss)."""

from __future__ import annotations

import json
import math
import os
import py_compile
import sys
from pathlib import Path

import pytest
import torch

from slmc.errors import ConfigError
from slmc.layout import LAYOUT
from slmc.load import available_options, load_config
from slmc.render_train import (
    model_config,
    render_train_script,
    resolve_precision,
    train_script_context,
)

GOLDEN = Path(__file__).resolve().parents[1] / "golden"
GOLDEN_BASE = "/models/base"
"""Where the golden files say the checkpoint is (each test writes it under tmp_path and renames)."""
GOLDEN_CONFIGS = {  # name -> (overrides, the family of the checkpoint at {base}, or None)
    "train_pretrain_tiny": ([], None),
    "train_lora_qwen2": (["train=lora", "init=pretrained", "init.path={base}"], "qwen2_tiny"),
    "train_finetune_cuda": ([
        "device=gpu_server", "host.accelerator=cuda", "host.precisions=[fp16,bf16]",
        "train=finetune", "init=pretrained", "init.path={base}", "train.grad_accum_steps=4",
    ], "tiny"),
    "train_qat_tiny": (["train=qat", "init=pretrained", "init.path={base}", "compress=int8"], "tiny"),
    "train_distill_tiny": (["init=distill", "init.distill.teacher_path={base}"], "tiny"),
    "train_fsdp_tiny": (["host.num_processes=2", "train.parallel=fsdp"], None),
}
# Options that need more than the train group to compose.
EXTRA = {"finetune": ["init=pretrained", "init.path=/models/base"], "lora": ["init=pretrained", "init.path=/models/base"]}


# ----------------------------------------------------------------------------- helpers


def config_only_checkpoint(folder: Path, model: str = "tiny") -> Path:
    """A checkpoint folder holding only the config.json transformers writes for a model preset: all that
    rendering train.py reads from a checkpoint (its family)."""
    from transformers import AutoConfig

    folder.mkdir(parents=True, exist_ok=True)
    AutoConfig.for_model(**model_config(load_config([f"model={model}"]).model)).save_pretrained(str(folder))
    return folder


def config_block(text: str) -> dict:
    """train.py's CONFIG block executed (literals only): its names."""
    section = text[text.index("SEED = "):text.index("# Plumbing")].rsplit("\n# ====", 1)[0]
    namespace: dict = {}
    exec(compile(section, "<config>", "exec"), namespace)
    return namespace


def metrics(run_dir: Path) -> list[dict]:
    text = (run_dir / LAYOUT.metrics).read_text(encoding="utf-8")
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def losses(run_dir: Path) -> dict[int, float]:
    return {r["step"]: r["loss"] for r in metrics(run_dir) if "loss" in r}


def eval_ppl(run_dir: Path) -> dict[int, float]:
    return {r["step"]: r["eval_ppl"] for r in metrics(run_dir) if "eval_ppl" in r}


def weights(run_dir: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(run_dir / LAYOUT.final_checkpoint / "model.safetensors"))


def ok(result):
    assert result.returncode == 0, f"exit {result.returncode}\n--- stdout\n{result.stdout}\n--- stderr\n{result.stderr}"
    return result


def step_dirs(run_dir: Path) -> list[str]:
    return sorted(p.name for p in (run_dir / LAYOUT.checkpoints).iterdir())


# ----------------------------------------------------------------------------- context


def test_auto_precision_is_fp32_on_cpu_and_bf16_on_cuda():
    assert resolve_precision(load_config([]))[0] == "fp32"
    assert resolve_precision(load_config(["host.accelerator=cuda", "host.precisions=[fp16,bf16]"]))[0] == "bf16"
    assert resolve_precision(load_config(["host.accelerator=cuda", "host.precisions=[fp32,fp16]"]))[0] == "fp16"
    assert resolve_precision(load_config(["train.precision=bf16"]))[0] == "bf16"


@pytest.mark.parametrize("model", ["tiny", "qwen2_tiny", "small"])
def test_model_config_builds_the_configured_architecture(model):
    from transformers import AutoConfig

    cfg = load_config([f"model={model}"])
    built = AutoConfig.for_model(**model_config(cfg.model))
    assert built.model_type == cfg.model.family
    for key in ("hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
                "intermediate_size", "vocab_size", "max_position_embeddings", "tie_word_embeddings"):
        assert getattr(built, key) == getattr(cfg.model, key), key
    assert built.rope_parameters["rope_theta"] == cfg.model.rope_theta
    assert "eos_token_id" not in model_config(cfg.model)  # read from tokenizer.json at run time
    if model != "small":
        from transformers import AutoModelForCausalLM

        expected = {"llama": "LlamaForCausalLM", "qwen2": "Qwen2ForCausalLM"}[cfg.model.family]
        assert type(AutoModelForCausalLM.from_config(built)).__name__ == expected


def test_context_paths_come_from_the_layout_and_init_paths_are_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    ctx = train_script_context(load_config(["train=finetune", "init=pretrained", "init.path=base"]))
    assert ctx["init"] == {"kind": "pretrained", "path": str(tmp_path / "base"), "hub": None, "revision": None}
    assert ctx["paths"]["train_tokens"] == LAYOUT.train_tokens
    assert ctx["paths"]["final_checkpoint"] == LAYOUT.final_checkpoint
    assert train_script_context(load_config(["init=prune", "init.path=/big"]))["init"]["path"] == LAYOUT.init_checkpoint


def test_comments_in_the_config_section_are_single_lines():
    ctx = train_script_context(load_config([]))
    for rows in (ctx["model"], ctx["train"], ctx["lora"], ctx["distill"], ctx["qat"]):
        for _key, _value, note in rows:
            assert note and note == " ".join(note.split())


def test_distill_without_teacher_is_a_config_error():
    cfg = load_config(["init=distill", "init.distill.teacher_path=/t"])
    assert ("teacher_path", "/t") in [row[:2] for row in train_script_context(cfg)["distill"]]
    bad = cfg.model_copy(update={"init": cfg.init.model_copy(update={"distill": cfg.init.distill.model_copy(update={"teacher_path": None})})})
    with pytest.raises(ConfigError, match="init.distill.teacher_path"):
        train_script_context(bad)


# ----------------------------------------------------------------------------- rendered text


@pytest.mark.parametrize("option", available_options("train"))
def test_every_train_option_renders_to_a_script_that_compiles(option, tmp_path):
    text = render_train_script(load_config([f"train={option}", *EXTRA.get(option, [])]))
    path = tmp_path / "train.py"
    path.write_text(text, encoding="utf-8")
    py_compile.compile(str(path), doraise=True)
    assert "slmc" not in "".join(line for line in text.splitlines() if line.startswith(("import", "from")))
    assert f"'kind': {option!r}" in text


def test_rendering_is_deterministic_and_config_values_are_literals():
    cfg = load_config(["train.lr=0.00123", "seed=7"])
    first, second = render_train_script(cfg), render_train_script(load_config(["train.lr=0.00123", "seed=7"]))
    assert first == second
    assert "'lr': 0.00123," in first and "SEED = 7\n" in first
    assert first != render_train_script(load_config([]))


def test_a_hostile_path_stays_a_string_literal():
    evil = "/x'''\"\"\"\nimport os; os.system('echo pwned') # \u2028"
    cfg = load_config(["train=finetune", "init=pretrained", "init.path=/placeholder"])
    cfg = cfg.model_copy(update={"init": cfg.init.model_copy(update={"path": evil})})
    text = render_train_script(cfg)
    config_section = text[text.index("SEED = "):text.index("# Plumbing")].rsplit("\n# ====", 1)[0]
    namespace: dict = {}
    exec(compile(config_section, "<config>", "exec"), namespace)  # literals only: nothing to import
    assert namespace["INIT"]["path"] == evil
    assert "\nimport os; os.system" not in text


def test_a_loaded_checkpoint_renders_its_family_not_the_model_group(tmp_path):
    """init=pretrained: ARCH is the checkpoint's family (qwen2 here, with the default model group llama
    'tiny'), MODEL is not rendered; a model built from scratch keeps MODEL and the group's family."""
    base = config_only_checkpoint(tmp_path / "qwen2", "qwen2_tiny")
    loaded = config_block(render_train_script(load_config(["train=finetune", "init=pretrained", f"init.path={base}"])))
    assert loaded["ARCH"]["model"] == {"family": "qwen2", "class": "Qwen2ForCausalLM", "model_types": ["qwen2"]}
    assert loaded["MODEL"] is None and loaded["ARCH"]["teacher"] is None
    built = config_block(render_train_script(load_config(["model=qwen2_tiny"])))
    assert built["ARCH"]["model"]["class"] == "Qwen2ForCausalLM" and built["MODEL"]["model_type"] == "qwen2"
    distill = config_block(render_train_script(load_config(["init=distill", f"init.distill.teacher_path={base}"])))
    assert distill["ARCH"]["model"]["family"] == "llama" and distill["ARCH"]["teacher"]["family"] == "qwen2"
    assert distill["DISTILL"]["teacher_path"] == str(base)


def test_all_linear_reaches_peft_as_its_string_shortcut(tmp_path):
    """peft reads target_modules='all-linear' as every linear layer but the head; a list holding the
    string names a module called 'all-linear' and fails."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoConfig, AutoModelForCausalLM

    base = config_only_checkpoint(tmp_path / "base")
    block = config_block(render_train_script(load_config(["train=lora", "init=pretrained", f"init.path={base}",
                                                          "train.lora.target_modules=[all-linear]"])))
    assert block["LORA"]["target_modules"] == "all-linear"
    model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(str(base)))
    adapted = get_peft_model(model, LoraConfig(r=2, target_modules=block["LORA"]["target_modules"]))
    names = {n.split(".lora_A")[0].split(".")[-1] for n, _ in adapted.named_parameters() if "lora_A" in n}
    assert names == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}
    with pytest.raises(ValueError, match="all-linear"):
        get_peft_model(AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(str(base))),
                       LoraConfig(r=2, target_modules=["all-linear"]))


@pytest.mark.parametrize("name", sorted(GOLDEN_CONFIGS))
def test_golden(name, tmp_path):
    """Byte-for-byte; SLMC_UPDATE_GOLDEN=1 rewrites the files (review the diff). A checkpoint of the
    golden's family is written under tmp_path and its path renamed to GOLDEN_BASE in the text."""
    overrides, model = GOLDEN_CONFIGS[name]
    base = config_only_checkpoint(tmp_path / "base", model) if model else tmp_path / "base"
    text = render_train_script(load_config([o.format(base=base) for o in overrides]))
    text = text.replace(repr(str(base)), repr(GOLDEN_BASE))
    path = GOLDEN / f"{name}.py.golden"
    if os.environ.get("SLMC_UPDATE_GOLDEN") == "1":
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    assert path.is_file(), f"{path} missing: run with SLMC_UPDATE_GOLDEN=1"
    assert text == path.read_text(encoding="utf-8"), f"{path.name} differs: rerun with SLMC_UPDATE_GOLDEN=1 and review"


# ----------------------------------------------------------------------------- running it


def test_pretrain_trains_and_writes_a_loadable_checkpoint(trained_run):
    from tokenizers import Tokenizer
    from transformers import AutoModelForCausalLM, AutoTokenizer

    loss = losses(trained_run)
    assert sorted(loss) == list(range(1, 21))
    assert all(math.isfinite(v) for v in loss.values())
    assert sum(loss[s] for s in (18, 19, 20)) / 3 < loss[1] - 0.5
    ppl = eval_ppl(trained_run)
    assert set(ppl) == {0, 10, 20} and ppl[20] < ppl[0] / 2
    record = metrics(trained_run)[-1]
    assert {"step", "loss", "lr", "tokens_per_s", "elapsed", "eval_ppl"} <= set(record)
    assert step_dirs(trained_run) == ["step-10", "step-20"]

    final = trained_run / LAYOUT.final_checkpoint
    assert {"model.safetensors", "config.json", "generation_config.json", "tokenizer.json",
            "tokenizer_config.json"} <= {p.name for p in final.iterdir()}
    model = AutoModelForCausalLM.from_pretrained(str(final), local_files_only=True)
    tokenizer = AutoTokenizer.from_pretrained(str(final), local_files_only=True)
    source = Tokenizer.from_file(str(trained_run / LAYOUT.tokenizer))
    assert type(model).__name__ == "LlamaForCausalLM"
    assert model.config.eos_token_id == source.token_to_id("<|endoftext|>") == tokenizer.eos_token_id
    assert model.config.pad_token_id == source.token_to_id("<|pad|>") == tokenizer.pad_token_id
    ids = tokenizer("def main():\n    return 0\n")["input_ids"]
    assert ids == source.encode("def main():\n    return 0\n").ids
    with torch.no_grad():
        assert torch.isfinite(model(torch.tensor([ids])).logits).all()


def test_stopped_run_resumes_to_the_same_weights(trained_run, make_run, run_train):
    run_dir = make_run()
    stopped = run_train(run_dir, env={"SLMC_STOP_AFTER_STEP": "13"})
    assert stopped.returncode == 3, stopped.stderr
    assert "stopped after step 13" in stopped.stderr.strip().splitlines()[-1]
    assert step_dirs(run_dir) == ["step-10"]
    (run_dir / LAYOUT.checkpoints / ".tmp-step-11").mkdir()  # debris of a save that was killed

    resumed = ok(run_train(run_dir))
    assert "resumed from step 10" in resumed.stdout
    assert step_dirs(run_dir) == ["step-10", "step-20"]
    assert [r["step"] for r in metrics(run_dir)] == [r["step"] for r in metrics(trained_run)]
    assert losses(run_dir) == losses(trained_run)
    reference = weights(trained_run)
    resumed_weights = weights(run_dir)
    assert set(resumed_weights) == set(reference)
    for name, tensor in resumed_weights.items():  # bitwise: same ops in the same order on the same machine
        assert torch.equal(tensor, reference[name]), name


def test_finetune_starts_from_the_local_checkpoint(trained_run, make_run, run_train):
    base = trained_run / LAYOUT.final_checkpoint
    run_dir = make_run("train=finetune", "init=pretrained", f"init.path={base}", "train.max_steps=4",
                       "train.eval_every=4")
    ok(run_train(run_dir))
    # Same held-out blocks, same weights: the starting perplexity is the base's final one.
    assert eval_ppl(run_dir)[0] == pytest.approx(eval_ppl(trained_run)[20], rel=1e-4)
    # The first batch is the one the base saw at its step 1, where its loss was that of random weights.
    assert losses(run_dir)[1] < losses(trained_run)[1] - 0.5


def test_lora_trains_adapters_and_saves_a_merged_plain_model(trained_run, make_run, run_train):
    base_dir = trained_run / LAYOUT.final_checkpoint
    run_dir = make_run("train=lora", "init=pretrained", f"init.path={base_dir}", "train.max_steps=4",
                       "train.eval_every=4", "train.lr=0.01", "train.warmup_steps=0")
    out = ok(run_train(run_dir))
    assert "(0.03M trained)" in out.stdout  # r=8 adapters on q/k/v/o of 4 layers: 28,672 parameters
    assert eval_ppl(run_dir)[0] == pytest.approx(eval_ppl(trained_run)[20], rel=1e-4)
    base, merged = weights(trained_run), weights(run_dir)
    assert set(merged) == set(base)  # no lora_A/lora_B left: a plain model
    changed = {name for name in base if not torch.equal(base[name], merged[name])}
    assert changed and all(name.split(".")[-2] in ("q_proj", "k_proj", "v_proj", "o_proj") for name in changed)


def test_distillation_trains_a_student_against_a_teacher(trained_run, make_run, run_train):
    teacher = trained_run / LAYOUT.final_checkpoint
    run_dir = make_run("init=distill", f"init.distill.teacher_path={teacher}", "train.max_steps=6",
                       "train.eval_every=6")
    ok(run_train(run_dir))
    loss = losses(run_dir)
    assert all(math.isfinite(v) for v in loss.values()) and loss[6] < loss[1]
    assert (run_dir / LAYOUT.final_checkpoint / "model.safetensors").is_file()


def test_train_none_saves_the_initial_model_with_its_perplexity(make_run, run_train):
    run_dir = make_run("train=none")
    ok(run_train(run_dir))
    assert [r["step"] for r in metrics(run_dir)] == [0]
    assert eval_ppl(run_dir)[0] > 1000  # random weights over a 4096-token vocabulary
    assert (run_dir / LAYOUT.final_checkpoint / "model.safetensors").is_file()


def test_missing_data_exits_with_one_clear_line(make_run, run_train):
    run_dir = make_run()
    (run_dir / LAYOUT.heldout_tokens).unlink()
    result = run_train(run_dir)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith("train.py: error: heldout_tokens not found")


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(make_run, run_train):
    run_dir = make_run("train.lr=1e30", "train.warmup_steps=0", "train.grad_clip=0", "train.save_every=1",
                       "train.max_steps=10")
    result = run_train(run_dir)
    assert result.returncode == 2, result.stderr
    line = result.stderr.strip().splitlines()[-1]
    assert line.startswith("train.py: error: loss is ") and "stopped before applying it" in line
    bad_step = int(line.split(" at step ")[1].split(";")[0])
    assert step_dirs(run_dir) == [f"step-{s}" for s in range(max(1, bad_step - 2), bad_step)]
    assert all(math.isfinite(v) for v in losses(run_dir).values())
    assert not (run_dir / LAYOUT.final_checkpoint).exists()


# ----------------------------------------------------------------------------- data parallel

DDP_STEPS = ("train.max_steps=6", "train.eval_every=6", "train.save_every=6", "train.warmup_steps=2")


def test_torchrun_two_processes_match_one_process_with_the_same_global_batch(make_run, run_train):
    """2 processes x batch 4 see exactly the 8 sequences one process x batch 8 sees, and DDP
    averages their gradients: the same mean loss up to float summation order."""
    single = make_run(*DDP_STEPS, "train.batch_size=8", name="single")
    ddp = make_run(*DDP_STEPS, "train.batch_size=4", "host.num_processes=2", name="ddp")
    ok(run_train(single))
    out = ok(run_train(ddp, nproc=2))
    assert "2 process(es) on cpu" in out.stdout
    a, b = losses(single), losses(ddp)
    assert sorted(a) == sorted(b) == list(range(1, 7))
    for step in a:  # measured: relative differences <= 1.4e-7 (metrics round the loss to 1e-6)
        assert b[step] == pytest.approx(a[step], rel=1e-5), step
    assert eval_ppl(ddp)[6] == pytest.approx(eval_ppl(single)[6], rel=1e-5)
    reference = weights(single)
    for name, tensor in weights(ddp).items():  # measured: max |difference| 6.7e-7
        torch.testing.assert_close(tensor, reference[name], rtol=1e-4, atol=1e-5, msg=name)


@pytest.mark.slow  # accumulation equivalence also runs in test_fsdp_two_processes_match_one_process
def test_gradient_accumulation_matches_the_larger_batch(make_run, run_train):
    single = make_run(*DDP_STEPS, "train.batch_size=8", name="single")
    accum = make_run(*DDP_STEPS, "train.batch_size=4", "train.grad_accum_steps=2", name="accum")
    ok(run_train(single))
    ok(run_train(accum))
    a, b = losses(single), losses(accum)
    for step in a:
        assert b[step] == pytest.approx(a[step], rel=1e-5), step


def test_every_schema_kind_is_implemented_by_a_recipe_that_refuses_the_others():
    """A kind the schema allows but no recipe implements, or a recipe that silently trained
    another method's kind as its own, would be a lie."""
    from typing import get_args

    from slmc.schema import InitConfig, TrainConfig
    from slmc.render_train import NOT_IMPLEMENTED

    train_kinds, init_kinds = set(), set()
    for train in available_options("train"):
        for init in ("init=scratch", "init=pretrained", "init=distill"):
            cfg = load_config([f"train={train}", init, "init.path=/m", "init.distill.teacher_path=/t"])
            namespace: dict = {}
            text = render_train_script(cfg)
            exec(compile(text[text.index("# What this recipe"):text.index("class TrainError")], "<kinds>", "exec"),
                 namespace)
            assert cfg.train.kind in namespace["TRAIN_KINDS"] and cfg.init.kind in namespace["INIT_KINDS"]
            train_kinds |= set(namespace["TRAIN_KINDS"])
            init_kinds |= set(namespace["INIT_KINDS"])
            if cfg.train.kind in ("lora", "qat"):
                assert namespace["TRAIN_KINDS"] == (cfg.train.kind,)
    assert set(get_args(TrainConfig.model_fields["kind"].annotation)) == train_kinds | set(NOT_IMPLEMENTED)
    assert set(get_args(InitConfig.model_fields["kind"].annotation)) == init_kinds


def test_a_recipe_refuses_another_method_and_a_one_process_recipe_refuses_torchrun(make_run, run_train):
    """Edited to another method's kind, or launched with several processes, a recipe stops at start
    in one line rather than training something it has no code for."""
    run_dir = make_run()
    script = run_dir / LAYOUT.train_script
    text = script.read_text()
    assert "import torch.distributed" not in text and "peft" not in text and "def add_fake_quant" not in text
    script.write_text(text.replace("'kind': 'pretrain',", "'kind': 'lora',"))
    edited = run_train(run_dir)
    assert edited.returncode == 2
    assert "TRAIN['kind'] = 'lora' is not one of 'pretrain', 'finetune', 'none' (this script holds the " \
           "'pretrain' recipe" in edited.stderr
    script.write_text(text)
    several = run_train(run_dir, nproc=2)
    assert several.returncode != 0 and "this script trains in one process, torchrun started 2" in several.stderr
    assert not (run_dir / LAYOUT.metrics).exists()


def load_script(run_dir: Path):
    """The rendered train.py imported as a module (main() does not run on import)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"train_{run_dir.name}", run_dir / LAYOUT.train_script)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


def test_rows_are_the_whole_text_in_blocks_of_stride_seq_len(make_run):
    """The tokenize stage's text rows are the ids of the whole text, cut at stride seq_len with one
    shared token, every target trained: the blocks train.py used to pack itself."""
    run_dir = make_run()
    script = load_script(run_dir)
    tokenizer, ids = script.load_tokenizer()
    text = (run_dir / LAYOUT.heldout_text).read_text(encoding="utf-8")
    assert text.count("<|endoftext|>") >= 1
    whole = torch.tensor(tokenizer.encode(text, add_special_tokens=False).ids)
    rows = script.load_rows("heldout_tokens")
    n = (len(whole) - 1) // 32
    assert rows.shape == (n, 2, 33)
    assert torch.equal(rows[:, 0], whole[: n * 32 + 1].unfold(0, 33, 32))
    assert torch.equal(rows[:, 1, 1:], rows[:, 0, 1:])  # every target trained
    assert (rows[:, 1, 0] == -100).all()  # column 0 is never a target


def test_schedule_warms_up_linearly_then_decays_to_the_floor(make_run):
    script = load_script(make_run("train.max_steps=100", "train.warmup_steps=10", "train.min_lr_ratio=0.1"))
    factors = [script.lr_factor(step) for step in range(100)]
    assert factors[0] == pytest.approx(0.1) and factors[9] == pytest.approx(1.0)
    assert factors[10] == pytest.approx(1.0) and factors[99] == pytest.approx(0.1)
    assert all(a >= b for a, b in zip(factors[10:], factors[11:]))


def test_ranks_read_disjoint_slices_of_one_global_order(make_run):
    script = load_script(make_run("train.batch_size=4"))
    order = script.BlockOrder(20, seed=3)
    epoch0 = order.indices(0, 20)
    assert sorted(epoch0) == list(range(20)) and order.indices(20, 20) != epoch0  # reshuffled per epoch
    blocks = torch.arange(20).unsqueeze(1)
    shares = [script.micro_batch(blocks, order, 8, script.Env(r, r, 2, torch.device("cpu"))).flatten().tolist()
              for r in (0, 1)]
    assert shares == [epoch0[8:12], epoch0[12:16]]  # rank r takes the r-th slice of the global batch


@pytest.mark.gpu
@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_cuda_autocast_trains(precision, make_run, run_train):
    """On a CUDA host: bf16 autocast, and fp16 with a GradScaler, both train and save."""
    if not torch.cuda.is_available():
        pytest.skip("no CUDA GPU")
    run_dir = make_run("host.accelerator=cuda", "host.precisions=[fp32,fp16,bf16]", f"train.precision={precision}")
    ok(run_train(run_dir))
    loss = losses(run_dir)
    assert all(math.isfinite(v) for v in loss.values()) and loss[20] < loss[1] - 0.5
    assert (run_dir / LAYOUT.final_checkpoint / "model.safetensors").is_file()


# ----------------------------------------------------------------------------- quantization-aware training

QAT_LINEARS = 4 * 7 + 1  # model=tiny: q/k/v/o and gate/up/down in 4 layers, and the LM head (tied)


def expected_scale(module: torch.nn.Module, weight: torch.Tensor) -> torch.Tensor:
    """The scale ONNX Runtime's exporter computes for these weights: a Linear's per output
    channel (symmetric int8: max|row| / 127), the embedding table's one (uint8: range / 255)."""
    weight = weight.detach()
    if isinstance(module, torch.nn.Embedding):
        return ((weight.max().clamp(min=0) - weight.min().clamp(max=0)) / 255).reshape(1)
    return weight.abs().amax(dim=1) / 127


def qat_state(modules) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(float weight, current scale) of each fake-quantized module."""
    return [(m.parametrizations.weight.original.detach().clone(), m.parametrizations.weight[0].scale.clone())
            for m in modules]


def test_qat_forward_uses_int8_weights_and_inputs_and_observers_freeze(trained_run, make_run):
    """In-process: the weights a QAT forward uses are integers x their scale (int8 per output
    channel for Linear layers, the tied LM head too; uint8 for the embedding lookup);
    each Linear's input takes at most 256 values per sequence; the scales follow the weights for
    observer_steps steps, then stay, and evaluation never moves them."""
    base = trained_run / LAYOUT.final_checkpoint
    run_dir = make_run("train=qat", "init=pretrained", f"init.path={base}", "train.qat.observer_steps=2",
                       "train.warmup_steps=0", "train.lr=0.003")
    script = load_script(run_dir)
    run, blocks, heldout = script.prepare(script.Env(0, 0, 1, torch.device("cpu")))
    model = run.model
    embedding = model.model.embed_tokens
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    assert len(linears) == QAT_LINEARS and all(hasattr(m, "parametrizations") for m in linears)
    # One Parameter still (tied), rounded per use as the exporter rounds its two copies.
    assert model.lm_head.parametrizations.weight.original is embedding.parametrizations.weight.original
    assert not torch.equal(model.lm_head.weight, embedding.weight)

    for module in [*linears, embedding]:  # on the grid of the current weights' ranges
        fake_quant = module.parametrizations.weight[0]
        torch.testing.assert_close(fake_quant.scale, expected_scale(module, module.parametrizations.weight.original))
        steps = module.weight.detach() / fake_quant.scale.reshape(-1, 1) + fake_quant.zero_point.reshape(-1, 1)
        assert torch.allclose(steps, steps.round(), atol=1e-3)
        assert steps.min() >= fake_quant.quant_min - 1e-3 and steps.max() <= fake_quant.quant_max + 1e-3
        assert not torch.equal(module.weight, module.parametrizations.weight.original)

    seen = {}
    q_proj = model.model.layers[0].self_attn.q_proj
    q_proj.register_forward_pre_hook(lambda module, args: seen.update(x=args[0].detach()))  # runs after the QAT hook
    with torch.no_grad():
        model(input_ids=blocks[:2, 0, :-1])
    rows = seen["x"].flatten(1)
    assert rows.shape == (2, 32 * 128)
    assert all(len(row.unique()) <= 256 for row in rows)  # uint8, one range per sequence

    modules = [*linears, embedding]
    order = script.BlockOrder(len(blocks), script.SEED)
    history = [qat_state(modules)]
    for step in range(4):
        script.train_step(run, blocks, order)
        if step == 0:
            script.evaluate(model, heldout, run.env)  # must not move the observers
        history.append(qat_state(modules))
    for i, module in enumerate(modules):
        weights = [h[i][0] for h in history]
        scales = [h[i][1] for h in history]
        # Step k's forward sees the weights after k - 1 updates; steps 1 and 2 observe them, then the ranges stay.
        torch.testing.assert_close(scales[1], expected_scale(module, weights[0]))
        torch.testing.assert_close(scales[2], expected_scale(module, weights[1]))
        assert torch.equal(scales[3], scales[2]) and torch.equal(scales[4], scales[2])
    moved = [not torch.allclose(scale, expected_scale(m, w)) for m, (w, scale) in zip(modules, history[4])]
    assert sum(moved) > len(modules) // 2  # the weights moved on after the ranges froze
    assert all(torch.isfinite(w).all() for w, _ in history[4])


def test_qat_run_resumes_exactly_and_saves_weights_on_the_int8_grid(trained_run, make_run, run_train):
    """A short QAT run from the pretrained checkpoint saves a plain float checkpoint whose weights
    sit on their frozen grids, so that ONNX Runtime's own quantizer gives them back; an
    interrupted run resumes (observer ranges included) to bitwise the same weights."""
    base = trained_run / LAYOUT.final_checkpoint
    qat = ("train=qat", "init=pretrained", f"init.path={base}", "train.max_steps=6", "train.save_every=3",
           "train.eval_every=6", "train.qat.observer_steps=4")
    reference = make_run(*qat, name="qat")
    out = ok(run_train(reference)).stdout
    assert f"QAT for int8: fake quantization of {QAT_LINEARS} Linear layers (the tied LM head included)" in out
    assert "the embedding table uint8" in out and "QAT from scratch" not in out
    ppl = eval_ppl(reference)
    assert ppl[0] == pytest.approx(eval_ppl(trained_run)[20], rel=0.05)  # int8 costs little
    assert ppl[0] != eval_ppl(trained_run)[20]  # but the starting perplexity is the simulated int8 one
    assert all(math.isfinite(v) for v in losses(reference).values())

    final = weights(reference)
    assert set(final) == set(weights(trained_run))  # a plain model: no parametrizations, no observers
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(reference / LAYOUT.final_checkpoint), local_files_only=True)
    assert model.lm_head.weight is model.model.embed_tokens.weight  # still tied (saved once)
    frozen = torch.load(reference / LAYOUT.checkpoints / "step-6" / "state.pt", weights_only=True)["model"]
    exact = 0
    for name, module in model.named_modules():  # the tied table sits on the LM head's grid
        if isinstance(module, torch.nn.Linear):
            exact += check_int8_export(module.weight.detach(), frozen[f"{name}.parametrizations.weight.0.scale"])
    rows = sum(m.out_features for m in model.modules() if isinstance(m, torch.nn.Linear))
    assert exact > 0.5 * rows  # measured: ~80% of the rows, 2 steps after the ranges froze

    stopped_dir = make_run(*qat, name="qat-stopped")
    assert run_train(stopped_dir, env={"SLMC_STOP_AFTER_STEP": "4"}).returncode == 3
    assert "resumed from step 3" in ok(run_train(stopped_dir)).stdout
    assert losses(stopped_dir) == losses(reference)
    for name, tensor in weights(stopped_dir).items():
        assert torch.equal(tensor, final[name]), name


def check_int8_export(weight: torch.Tensor, scale: torch.Tensor) -> int:
    """Asserts `weight` lies on the int8 grid of `scale` (per row) and what ONNX Runtime's own
    per-channel quantizer makes of it; returns the number of rows it reproduces exactly.

    A row that still reaches +-127 steps is reproduced exactly. One whose largest weight moved
    inward after the ranges froze gets a finer grid from the exporter (scale max|row| / 127):
    its error is then the usual rounding error, at most half of that finer step.
    """
    from onnx import TensorProto
    from onnxruntime.quantization.quant_utils import quantize_data

    steps = weight / scale[:, None]
    assert torch.allclose(steps, steps.round(), atol=1e-4) and steps.abs().max() <= 127 + 1e-4
    exact = 0
    for row, row_scale in zip(weight.numpy(), scale.tolist()):
        _, export_scale, q = quantize_data(row, TensorProto.INT8, symmetric=True)
        error = abs(q.astype("float32") * export_scale - row).max()
        if abs(row).max() >= 126.5 * row_scale:
            assert error <= 1e-6 * abs(row).max()
            exact += 1
        else:
            assert export_scale < row_scale and error <= 0.5001 * export_scale
    return exact


def check_uint8_export(table: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor) -> None:
    """The embedding table lies on its uint8 grid, and ONNX Runtime's quantizer (asymmetric uint8,
    one range, as for the Gather) reproduces it when the grid's ends are still reached."""
    from onnx import TensorProto
    from onnxruntime.quantization.quant_utils import quantize_data

    steps = table / scale + zero_point
    assert torch.allclose(steps, steps.round(), atol=1e-3) and steps.min() >= -1e-3 and steps.max() <= 255 + 1e-3
    export_zero, export_scale, q = quantize_data(table.numpy(), TensorProto.UINT8, symmetric=False)
    error = abs((q.astype("float32") - float(export_zero)) * export_scale - table.numpy()).max()
    if steps.min() < 0.5 and steps.max() > 254.5:
        assert error <= 1e-5 * float(table.abs().max())
    else:
        assert error <= 0.5001 * float(export_scale)


def test_qat_from_scratch_says_so_and_an_untied_model_snaps_each_table_to_its_grid(make_run, capsys):
    """In-process, untrained: init=scratch is QAT from scratch (a log line says so); an untied head
    and embedding are saved each on its own grid (int8 per row; uint8 for the whole table)."""
    script = load_script(make_run("train=qat", "model.tie_word_embeddings=false"))
    model = script.build_model(script.load_tokenizer()[1])
    rounded = script.add_fake_quant(model)
    script.describe_qat(rounded, script.Console(script.Env(0, 0, 1, torch.device("cpu")), 0, 1))
    out = capsys.readouterr().out
    assert f"fake quantization of {QAT_LINEARS} Linear layers," in out
    assert "QAT from scratch: INIT['kind'] = 'scratch'" in out
    embedding = model.model.embed_tokens.parametrizations.weight[0]
    head_scale = model.lm_head.parametrizations.weight[0].scale.clone()
    table_scale, table_zero = embedding.scale.clone(), embedding.zero_point.clone()
    script.remove_fake_quant(model)
    assert not hasattr(model.lm_head, "parametrizations") and not hasattr(model.model.embed_tokens, "parametrizations")
    assert check_int8_export(model.lm_head.weight.detach(), head_scale) == model.config.vocab_size
    check_uint8_export(model.model.embed_tokens.weight.detach(), table_scale, table_zero)


@pytest.mark.gpu
def test_cuda_qat_trains_under_bf16_autocast(make_run, run_train):
    """On a CUDA host: the fake quantization runs in fp32 inside bf16 autocast and still saves a plain model."""
    if not torch.cuda.is_available():
        pytest.skip("no CUDA GPU")
    run_dir = make_run("train=qat", "host.accelerator=cuda", "host.precisions=[fp32,fp16,bf16]",
                       "train.precision=bf16", "train.lr=0.003")
    ok(run_train(run_dir))
    loss = losses(run_dir)
    assert all(math.isfinite(v) for v in loss.values()) and loss[20] < loss[1] - 0.5
    assert (run_dir / LAYOUT.final_checkpoint / "model.safetensors").is_file()
