"""Chat and instruction fine-tuning data compile end to end on model=tiny from scratch."""

from __future__ import annotations

import json

import numpy as np
import pytest
from safetensors.numpy import load_file

from slmc.layout import LAYOUT
from slmc.load import load_config
from slmc.pipeline import compile_config

from .conftest import FAST


def _compile(tmp_path, *overrides):
    return compile_config(load_config([*FAST, f"out_dir={tmp_path / 'out'}", *overrides]))


def test_chat_compiles_to_a_bundle_that_ships_the_template(tmp_path, chat_jsonl, capsys):
    summary = _compile(tmp_path, "data=chat", f"data.train_files=[{chat_jsonl}]")
    assert "0 truncated, 0 dropped, 0 rejected" in capsys.readouterr().out  # the tokenize stage's counts
    run = summary.run_dir
    config = json.loads((run / "bundle" / "tokenizer_config.json").read_text())
    assert "<|im_start|>" in config["chat_template"]
    checkpoint = json.loads((run / LAYOUT.final_checkpoint / "tokenizer_config.json").read_text())
    assert checkpoint["chat_template"] == config["chat_template"]  # train.py keeps it with the checkpoint
    tok = json.loads((run / "bundle" / "tokenizer.json").read_text())
    special = {t["content"] for t in tok["added_tokens"] if t["special"]}
    assert {"<|im_start|>", "<|im_end|>"} <= special  # added by the tokenizer stage: one id each
    manifest = json.loads((run / "bundle" / "manifest.json").read_text())
    assert manifest["data"] == {"format": "chat", "chat_template": "chatml"}
    # the model learns to end each reply with <|im_end|>: the bundle stops there (and at the checkpoint's eos)
    im_end = next(t["id"] for t in tok["added_tokens"] if t["content"] == "<|im_end|>")
    eos = json.loads((run / LAYOUT.final_checkpoint / "config.json").read_text())["eos_token_id"]
    assert manifest["tokens"]["eos_token_ids"] == [eos, im_end]
    assert json.loads((run / "bundle" / "genai_config.json").read_text())["model"]["eos_token_id"] == [eos, im_end]
    rows = load_file(str(run / LAYOUT.train_tokens))
    assert rows["input_ids"].dtype == np.int32 and rows["input_ids"].shape[1] == 65
    assert rows["loss_mask"][:, 0].sum() == 0
    # fewer targets than real tokens: the prompts are not trained on
    assert 0 < rows["loss_mask"].sum() < rows["attention_mask"].sum()
    trained = [m for m in map(json.loads, (run / LAYOUT.metrics).read_text().splitlines()) if "loss" in m]
    assert trained[-1]["step"] == 3 and np.isfinite(trained[-1]["loss"])
    assert "chat: 57 training / 3 held-out examples" in (run / "report.md").read_text()
    # ORT GenAI renders with the template it finds in the bundle's tokenizer_config.json
    og = pytest.importorskip("onnxruntime_genai")
    tokenizer = og.Tokenizer(og.Model(str(run / "bundle")))
    prompt = tokenizer.apply_chat_template(json.dumps([{"role": "user", "content": "hi"}]), add_generation_prompt=True)
    assert prompt == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"


@pytest.mark.slow  # a second whole compile (export included): minutes on a busy 2-core machine
def test_instruction_compiles_with_llama3_template(tmp_path, instruction_jsonl):
    summary = _compile(tmp_path, "data=instruction", f"data.train_files=[{instruction_jsonl}]",
                       "data.chat_template=llama3", "data.packing=false")
    run = summary.run_dir
    config = json.loads((run / LAYOUT.tokenizer_config).read_text())
    assert "<|start_header_id|>" in config["chat_template"]
    rows = load_file(str(run / LAYOUT.heldout_tokens))
    # no packing: one example per row, so each row holds one <|eot_id|> per turn (user + assistant)
    from tokenizers import Tokenizer

    eot = Tokenizer.from_file(str(run / LAYOUT.tokenizer)).token_to_id("<|eot_id|>")
    assert ((rows["input_ids"] == eot) & (rows["attention_mask"] == 1)).sum(axis=1).tolist() == [2] * len(rows["input_ids"])
    assert (run / "bundle" / "model.onnx").is_file()


@pytest.mark.slow  # two whole compiles
def test_chat_finetune_from_a_checkpoint_with_its_own_template(tmp_path, chat_jsonl):
    """A chat model trained here is fine-tuned on parquet chat data: data.chat_template=auto takes
    the checkpoint's template and its tokenizer (which holds the template's tokens) as they are."""
    from datasets import Dataset

    base = _compile(tmp_path, "data=chat", f"data.train_files=[{chat_jsonl}]").run_dir
    records = [json.loads(line) for line in chat_jsonl.read_text().splitlines()]
    Dataset.from_list(records).to_parquet(str(tmp_path / "chat.parquet"))
    tuned = _compile(tmp_path, "data=chat", f"data.train_files=[{tmp_path / 'chat.parquet'}]", "init=pretrained",
                     f"init.path={base / LAYOUT.final_checkpoint}", "train=finetune").run_dir
    manifest = json.loads((tuned / "bundle" / "manifest.json").read_text())
    assert manifest["data"] == {"format": "chat", "chat_template": "checkpoint"}
    assert (tuned / LAYOUT.tokenizer).read_text() == (base / LAYOUT.tokenizer).read_text()
    assert load_file(str(tuned / LAYOUT.train_tokens))["input_ids"].tolist() == \
        load_file(str(base / LAYOUT.train_tokens))["input_ids"].tolist()  # same examples, same template, same rows
