"""The tokenize stage: loss masks counted independently, packing, overflow counts, chunked streaming."""

from __future__ import annotations

import json

import numpy as np
import pytest
from safetensors.numpy import load_file
from tokenizers import Tokenizer

from slmc.chat import CATALOGUE, ChatTemplate, render
from slmc.errors import ConfigError
from slmc.layout import LAYOUT
from slmc.load import load_config
from slmc.stages import prepare
from slmc.stages.base import Results

from .conftest import conversation, write_jsonl


def compiled_data(run, data_file, *overrides):
    """data, tokenizer and tokenize stages of a chat run, as the compile runs them."""
    cfg = load_config(["data=chat", f"data.train_files=[{data_file}]", "model.vocab_size=512", "train.seq_len=128",
                       *overrides])
    results = Results()
    for name, stage in (("data", prepare.run_data), ("tokenizer", prepare.run_tokenizer),
                        ("tokenize", prepare.run_tokenize)):
        results.add(name, stage(cfg, run, results))
    return cfg, results


def examples(run, split="train"):
    path = run / (LAYOUT.train_records if split == "train" else LAYOUT.heldout_records)
    return [json.loads(line)["messages"] for line in path.read_text().splitlines()]


@pytest.mark.parametrize("template", sorted(CATALOGUE))
def test_loss_mask_is_the_assistant_content_and_its_end_token(tmp_path, chat_jsonl, template):
    run = tmp_path / "run"
    compiled_data(run, chat_jsonl, "data.packing=false", f"data.chat_template={template}")
    tok = Tokenizer.from_file(str(run / LAYOUT.tokenizer))
    rows = load_file(str(run / LAYOUT.train_tokens))
    convs = examples(run)
    assert len(rows["input_ids"]) == len(convs)  # one example per row, none cut at seq_len 128
    # independently: the tokens of each assistant message's text plus one end token per assistant turn
    expected = [sum(len(tok.encode(m["content"], add_special_tokens=False).ids) + 1 for m in c if m["role"] == "assistant")
                for c in convs]
    assert rows["loss_mask"].sum(axis=1).tolist() == expected
    end = {"chatml": "<|im_end|>", "llama3": "<|eot_id|>", "zephyr": "<|endoftext|>"}[template]
    end_id = tok.token_to_id(end)
    # every end token of an assistant turn is a target; the prompt's are not
    for ids, mask, conv in zip(rows["input_ids"], rows["loss_mask"], convs):
        assistant_ends = int(((ids == end_id) & (mask == 1)).sum())
        assert assistant_ends == sum(m["role"] == "assistant" for m in conv)
    assert (rows["attention_mask"].sum(axis=1) > rows["loss_mask"].sum(axis=1)).all()
    assert (rows["input_ids"][rows["attention_mask"] == 0] == tok.token_to_id("<|pad|>")).all()


def test_loss_on_all_trains_every_real_token_but_the_first(tmp_path, chat_jsonl):
    run = tmp_path / "run"
    compiled_data(run, chat_jsonl, "data.packing=false", "data.loss_on=all")
    rows = load_file(str(run / LAYOUT.train_tokens))
    assert rows["loss_mask"].sum(axis=1).tolist() == (rows["attention_mask"].sum(axis=1) - 1).tolist()


def test_packing_keeps_examples_whole(tmp_path, chat_jsonl):
    run = tmp_path / "run"
    _, results = compiled_data(run, chat_jsonl, "train.seq_len=100")
    rows = load_file(str(run / LAYOUT.train_tokens))
    tok = Tokenizer.from_file(str(run / LAYOUT.tokenizer))
    start = tok.token_to_id("<|im_start|>")
    convs = examples(run)
    # each example opens with <|im_start|> and has one per message: count the examples each row starts
    opened = [int((r == start).sum()) for r in rows["input_ids"]]
    assert sum(opened) == sum(len(c) for c in convs)
    for ids, att in zip(rows["input_ids"], rows["attention_mask"]):
        assert ids[0] == start  # a row starts with an example, never in the middle of one
        assert att[: att.sum()].all()  # padding only at the end
    unpacked = compiled_data(tmp_path / "unpacked", chat_jsonl, "train.seq_len=100", "data.packing=false")[1]
    assert results["tokenize"].train_rows < unpacked["tokenize"].train_rows == len(convs)
    assert results["tokenize"].train_targets == unpacked["tokenize"].train_targets  # the same tokens trained
    assert results["tokenize"].padding < unpacked["tokenize"].padding


def _lengths(run, split):
    tok = Tokenizer.from_file(str(run / LAYOUT.tokenizer))
    config = json.loads((run / LAYOUT.tokenizer_config).read_text())
    template = ChatTemplate("chatml", *CATALOGUE["chatml"])
    tokens = {"bos": config["bos_token"], "eos": config["eos_token"]}
    return [len(tok.encode(render(template, c, tokens), add_special_tokens=False).ids) for c in examples(run, split)]


@pytest.mark.parametrize("overflow", ["drop", "truncate"])
def test_overflow_counts(tmp_path, chat_jsonl, overflow):
    run = tmp_path / "run"
    _, results = compiled_data(run, chat_jsonl, "data.packing=false", "data.max_length=60", f"data.overflow={overflow}")
    lengths = _lengths(run, "train") + _lengths(run, "heldout")
    too_long = sum(n > 60 for n in lengths)
    assert 0 < too_long < len(lengths)
    r = results["tokenize"]
    rows = load_file(str(run / LAYOUT.train_tokens))
    assert rows["attention_mask"].sum(axis=1).max() <= 60
    if overflow == "drop":
        assert (r.dropped, r.truncated) == (too_long, 0)
        assert r.train_rows + r.heldout_rows == len(lengths) - too_long
    else:
        assert (r.dropped, r.truncated) == (0, too_long)
        assert r.train_rows + r.heldout_rows + r.rejected == len(lengths)
    assert f"{r.dropped:,} dropped" in r.figure() and f"{r.truncated:,} truncated" in r.figure()


def test_everything_dropped_is_an_error_naming_the_setting(tmp_path, chat_jsonl):
    with pytest.raises(ConfigError, match="no example left"):
        compiled_data(tmp_path / "run", chat_jsonl, "data.max_length=8", "data.overflow=drop")


def test_chunked_processing_gives_the_same_rows(tmp_path, chat_jsonl, monkeypatch):
    whole = tmp_path / "whole"
    compiled_data(whole, chat_jsonl)
    sizes = []
    real = Tokenizer.encode_batch

    class Spy:  # Tokenizer is a Rust class; wrap the object the stage loads to see its batches
        def __init__(self, tok):
            self.tok = tok

        def encode_batch(self, items, **kw):
            sizes.append(len(items))
            return real(self.tok, items, **kw)

        def __getattr__(self, name):
            return getattr(self.tok, name)

    load = Tokenizer.from_file
    monkeypatch.setattr("tokenizers.Tokenizer.from_file", staticmethod(lambda p: Spy(load(p))), raising=False)
    chunked = tmp_path / "chunked"
    compiled_data(chunked, chat_jsonl, "data.chunk_records=3")
    assert sizes and max(sizes) <= 3 and len(sizes) >= 57 // 3
    for split in (LAYOUT.train_tokens, LAYOUT.heldout_tokens):
        assert (whole / split).read_bytes() == (chunked / split).read_bytes()


def test_text_rows_do_not_depend_on_the_chunk_size(tmp_path):
    """data.format=text: rows are the whole text's ids at stride seq_len, whatever the chunk size."""
    write_jsonl(tmp_path / "t.jsonl", [{"text": f"line {i} " * (i % 7 + 1)} for i in range(300)])
    outs = []
    for chunk in (1000, 2):
        run = tmp_path / f"run{chunk}"
        cfg = load_config(["data=files", f"data.train_files=[{tmp_path}/t.jsonl]", "model.vocab_size=512",
                           "train.seq_len=16", f"data.chunk_records={chunk}"])
        results = Results()
        results.add("data", prepare.run_data(cfg, run, results))
        results.add("tokenizer", prepare.run_tokenizer(cfg, run, results))
        results.add("tokenize", prepare.run_tokenize(cfg, run, results))
        outs.append((run / LAYOUT.train_tokens).read_bytes())
        tok = Tokenizer.from_file(str(run / LAYOUT.tokenizer))
        whole = tok.encode((run / LAYOUT.train_text).read_text(), add_special_tokens=False).ids
        rows = load_file(str(run / LAYOUT.train_tokens))["input_ids"]
        n = (len(whole) - 1) // 16
        assert rows.shape == (n, 17)
        assert (rows == np.lib.stride_tricks.sliding_window_view(np.array(whole[: n * 16 + 1]), 17)[::16]).all()
    assert outs[0] == outs[1]
