"""CheckContext: facts from local files, recorded rather than raised."""

from __future__ import annotations

import json

from slmc.estimate import Arch
from slmc.load import load_config
from slmc.rules.context import CheckContext, deployed_arch, ensure_context


def test_reads_checkpoint_config_and_its_tokenizer(make_checkpoint):
    ckpt = make_checkpoint(tokenizer_size=300, max_position_embeddings=128)
    cfg = load_config(["init=pretrained", f"init.path={ckpt}", "train=finetune"])
    ctx = CheckContext.from_config(cfg)
    assert ctx.init_arch.max_position_embeddings == 128 and ctx.init_config["model_type"] == "llama"
    assert ctx.tokenizer.size == 300 and ctx.tokenizer.vocab["<|eos|>"] == 299
    assert ctx.paths["init.path"].exists and ctx.paths["init.path"].has_weights()
    assert not ctx.problems
    assert deployed_arch(cfg, ctx).arch == ctx.init_arch


def test_missing_and_malformed_files_are_recorded_not_raised(tmp_path):
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "config.json").write_text("{not json")
    cfg = load_config(["init=pretrained", f"init.path={bad}", f"data.tokenizer={tmp_path / 'none.json'}"])
    ctx = CheckContext.from_config(cfg)
    assert ctx.init_arch is None and ctx.tokenizer is None
    (finding,) = ctx.checkpoints["init.path"].of("config")
    assert "is not valid JSON" in finding.message and finding.file == str(bad / "config.json")
    assert "does not exist" in ctx.problems["data.tokenizer"]


def test_unigram_vocab_and_teacher_facts(tmp_path, make_checkpoint, tokenizer_file):
    tok = tokenizer_file(tmp_path / "uni" / "tokenizer.json", 50, unigram=True)
    teacher = make_checkpoint("teacher", tokenizer_size=4096)
    cfg = load_config(["init=distill", f"init.distill.teacher_path={teacher}", f"data.tokenizer={tok}"])
    ctx = CheckContext.from_config(cfg)
    assert ctx.tokenizer.size == 50 and ctx.tokenizer.vocab["t3"] == 3
    assert ctx.teacher_arch.vocab_size == 4096 and ctx.teacher_tokenizer.size == 4096
    assert deployed_arch(cfg, ctx).arch == Arch.from_model(cfg.model)


def test_ensure_context_builds_one_when_missing(make_checkpoint):
    ckpt = make_checkpoint()
    cfg = load_config(["init=prune", f"init.path={ckpt}"])
    given = CheckContext()
    assert ensure_context(cfg, given) is given
    built = ensure_context(cfg, None)
    assert built.init_arch.num_hidden_layers == 4
    assert deployed_arch(cfg, built).arch.num_hidden_layers == 2  # shipped prune: layer_ratio 0.5


def test_config_without_architecture_fields_is_a_problem(tmp_path):
    folder = tmp_path / "ckpt"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "llama"}))
    ctx = CheckContext.from_config(load_config(["init=pretrained", f"init.path={folder}"]))
    assert ctx.init_config == {"model_type": "llama"} and ctx.init_arch is None
    missing = {f.message.split(": has no ")[1] for f in ctx.checkpoints["init.path"].of("config")}
    assert missing == {"hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "vocab_size"}
