"""genai_config: the dict's keys, its checks, and onnxruntime-genai loading a bundle folder."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from slmc.errors import ConfigError
from slmc.export.genai_config import genai_config

BOS, EOS, PAD = 0, 1, 2  # the special tokens conftest.build_checkpoint gives the tiny model


def _config(export, **overrides):
    settings = dict(
        model=export.model, io=export.io, eos_token_ids=[EOS], bos_token_id=BOS, pad_token_id=PAD, max_seq_len=64,
        generation={"do_sample": False, "temperature": 0.7, "top_k": 20, "top_p": 0.9, "max_new_tokens": 16},
    )
    settings.update(overrides)
    return genai_config(**settings)


def test_config_names_the_standard_decoder_io(tiny_llama_export):
    config = json.loads(json.dumps(_config(tiny_llama_export)))
    decoder = config["model"]["decoder"]
    assert decoder["filename"] == "model.onnx"
    assert decoder["inputs"] == {
        "input_ids": "input_ids", "attention_mask": "attention_mask", "position_ids": "position_ids",
        "past_key_names": "past_key_values.%d.key", "past_value_names": "past_key_values.%d.value",
    }
    assert decoder["outputs"] == {
        "logits": "logits", "present_key_names": "present.%d.key", "present_value_names": "present.%d.value",
    }
    assert (decoder["head_size"], decoder["hidden_size"], decoder["num_hidden_layers"]) == (16, 64, 2)
    assert (decoder["num_attention_heads"], decoder["num_key_value_heads"]) == (4, 2)
    assert decoder["session_options"]["provider_options"] == []
    model = config["model"]
    assert (model["type"], model["vocab_size"], model["context_length"]) == ("llama", 384, 64)
    assert (model["bos_token_id"], model["eos_token_id"], model["pad_token_id"]) == (BOS, EOS, PAD)
    search = config["search"]
    assert search["past_present_share_buffer"] is False and search["max_length"] == 64
    assert (search["do_sample"], search["temperature"], search["top_k"], search["top_p"]) == (False, 0.7, 20, 0.9)


def test_several_eos_ids_and_a_cuda_provider(tiny_llama_export):
    config = _config(tiny_llama_export, eos_token_ids=[1, 2], provider="cuda")
    assert config["model"]["eos_token_id"] == [1, 2]
    assert config["model"]["decoder"]["session_options"]["provider_options"] == [{"cuda": {}}]


def test_unknown_provider_and_missing_io_are_config_errors(tiny_llama_export):
    with pytest.raises(ConfigError, match="available: cpu, cuda"):
        _config(tiny_llama_export, provider="tensorrt")
    io = {"inputs": tiny_llama_export.io["inputs"][:2], "outputs": tiny_llama_export.io["outputs"]}
    with pytest.raises(ConfigError, match="position_ids"):
        _config(tiny_llama_export, io=io)


def test_onnxruntime_genai_loads_the_folder_and_decodes_like_transformers(
    tiny_llama_dir, tiny_llama_export, tmp_path
):
    og = pytest.importorskip("onnxruntime_genai")
    from tokenizers import Tokenizer
    from transformers import AutoModelForCausalLM

    shutil.copy(tiny_llama_export.onnx_path, tmp_path / "model.onnx")
    shutil.copy(tiny_llama_dir / "tokenizer.json", tmp_path / "tokenizer.json")
    # onnxruntime-genai 0.18 refuses a folder without tokenizer_config.json.
    (tmp_path / "tokenizer_config.json").write_text(
        json.dumps({"tokenizer_class": "PreTrainedTokenizerFast", "bos_token": "<s>", "eos_token": "</s>",
                    "pad_token": "<pad>", "add_bos_token": False})
    )
    (tmp_path / "genai_config.json").write_text(json.dumps(_config(tiny_llama_export), indent=2))

    prompt = Tokenizer.from_file(str(tmp_path / "tokenizer.json")).encode("the model runs on a small device").ids
    model = og.Model(str(tmp_path))
    assert [int(t) for t in og.Tokenizer(model).encode("the model runs on a small device")] == prompt
    params = og.GeneratorParams(model)
    params.set_search_options(max_length=len(prompt) + 8, do_sample=False)
    generator = og.Generator(model, params)
    generator.append_tokens(prompt)
    genai_tokens = []
    while not generator.is_done():
        generator.generate_next_token()
        genai_tokens.append(int(generator.get_next_tokens()[0]))

    reference = AutoModelForCausalLM.from_pretrained(str(tiny_llama_dir)).eval()
    ids = torch.tensor([prompt])
    with torch.no_grad():
        out = reference.generate(
            ids, attention_mask=torch.ones_like(ids), max_new_tokens=8, do_sample=False, pad_token_id=PAD
        )
    assert genai_tokens == out[0, len(prompt) :].tolist()
    assert 1 <= len(genai_tokens) <= 8


@pytest.mark.parametrize("architecture,expected", [
    ("llama", "llama"), ("qwen2", "qwen2"), ("qwen3", "qwen3"), ("mistral", "mistral"), ("phi3", "phi3"),
    ("gemma3", "gemma3_text"), ("gemma3_text", "gemma3_text"),  # family name or config.json model_type
    ("granite", "granite"), ("gpt_neox", "llama"),
])
def test_genai_type_comes_from_the_family_registry(architecture, expected):
    from slmc.export.genai_config import genai_type

    assert genai_type(architecture) == expected
