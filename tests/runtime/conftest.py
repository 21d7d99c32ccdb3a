"""Fixture bundles for the runtime tests: a tiny random Llama exported by slmc.export,
a byte-level BPE tokenizer trained on generated text, and a manifest per BUNDLE.md.

Built once per test session (~15 s, most of it the ONNX export).
"""

from __future__ import annotations

import json
import platform
import random
import shutil
from pathlib import Path

import onnxruntime as ort
import pytest

from slmc.runtime.manifest import MANIFEST_NAME, manifest_json, with_hashes

SPECIALS = ["<pad>", "<s>", "</s>"]  # ids 0, 1, 2
CONTEXT = 160


def training_lines(count: int = 400) -> list[str]:
    """Sentences of made-up words (with accents) so BPE learns a few hundred merges."""
    rng = random.Random(0)
    syllables = ["ka", "lo", "mi", "ne", "ru", "sa", "to", "vi", "zé", "ön", "qu", "ar", "el", "is", "um"]
    words = ["".join(rng.choice(syllables) for _ in range(rng.randint(1, 3))) for _ in range(120)]
    words += "the small model runs on the device with a cache and a bundle".split()
    return [" ".join(rng.choice(words) for _ in range(rng.randint(4, 14))) + "." for _ in range(count)]


def build_tokenizer(vocab_size: int = 384):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIALS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tokenizer.train_from_iterator(training_lines(), trainer)
    return tokenizer


def build_checkpoint(folder: Path, vocab_size: int, context: int) -> None:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                         num_key_value_heads=2, vocab_size=vocab_size, max_position_embeddings=context,
                         bos_token_id=1, eos_token_id=2, pad_token_id=0)
    LlamaForCausalLM(config).eval().save_pretrained(folder)


def manifest_for(exported, *, name: str = "tiny", context: int = CONTEXT) -> dict:
    """A complete schema-1 manifest (without hashes) for the exported tiny model."""
    return {
        "schema_version": 1,
        "format": "slmc-bundle",
        "name": name,
        "device": {"name": "cpu", "isa": "x86-64", "arch": platform.machine()},
        "runtime": {"name": "ort", "version": ort.__version__,
                    "execution_provider": "CPUExecutionProvider", "min_onnxruntime": "1.20"},
        "precision": "fp32",
        "model": exported.model,
        "files": {"model": "model.onnx", "tokenizer": "tokenizer.json"},
        "io": exported.io,
        "kv_cache": exported.kv_cache,
        "limits": {"max_seq_len": context, "max_batch_size": 4},
        "tokens": {"bos_token_id": 1, "eos_token_ids": [2], "pad_token_id": 0},
        "generation": {"max_new_tokens": 16, "do_sample": False, "temperature": 1.0, "top_k": 0,
                       "top_p": 1.0, "repetition_penalty": 1.0},
        "metrics": {},
        "provenance": {"config_sha256": "0" * 64, "seed": 0, "versions": {"onnxruntime": ort.__version__},
                       "created": "2026-01-01T00:00:00+00:00"},
    }


def write_manifest(folder: Path, manifest: dict) -> None:
    """Hash the folder as it is now and write manifest.json (what the package stage does)."""
    (folder / MANIFEST_NAME).write_text(manifest_json(with_hashes(folder, manifest)), encoding="utf-8")


def build_bundle(root: Path, context: int = CONTEXT) -> tuple[Path, Path]:
    """(bundle folder, Hugging Face checkpoint folder)."""
    from slmc.export.onnx_export import export_decoder

    tokenizer = build_tokenizer()
    checkpoint, bundle = root / "hf", root / "bundle"
    build_checkpoint(checkpoint, tokenizer.get_vocab_size(), context)
    exported = export_decoder(checkpoint, bundle)
    tokenizer.save(str(bundle / "tokenizer.json"))
    (bundle / "tokenizer_config.json").write_text(json.dumps(
        {"bos_token": "<s>", "eos_token": "</s>", "pad_token": "<pad>", "model_max_length": context}))
    (bundle / "README.md").write_text("# tiny\nA random tiny Llama for the runtime tests.\n")
    write_manifest(bundle, manifest_for(exported, context=context))
    return bundle, checkpoint


@pytest.fixture(scope="session")
def text_tokenizer(tmp_path_factory):
    """The fixture tokenizer alone (session scope: hypothesis tests may use it)."""
    from slmc.runtime.tokenizer import TextTokenizer

    path = tmp_path_factory.mktemp("tok") / "tokenizer.json"
    build_tokenizer().save(str(path))
    return TextTokenizer(path)


@pytest.fixture(scope="session")
def built(tmp_path_factory) -> tuple[Path, Path]:
    return build_bundle(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="session")
def bundle_dir(built) -> Path:
    """The pristine fixture bundle; tests must not modify it (use `bundle_copy`)."""
    return built[0]


@pytest.fixture(scope="session")
def hf_model(built):
    import torch
    from transformers import LlamaForCausalLM

    torch.set_num_threads(1)
    return LlamaForCausalLM.from_pretrained(str(built[1])).eval()


@pytest.fixture(scope="session")
def bundle(bundle_dir):
    from slmc.runtime import load_bundle

    return load_bundle(bundle_dir, threads=1)


@pytest.fixture
def bundle_copy(bundle_dir, tmp_path) -> Path:
    """A private copy of the fixture bundle, safe to tamper with."""
    return Path(shutil.copytree(bundle_dir, tmp_path / "bundle"))


@pytest.fixture
def rewrite_manifest():
    """Edit a bundle's manifest with a function and re-hash (a legitimately re-packaged bundle)."""

    def rewrite(folder: Path, edit) -> Path:
        data = json.loads((folder / MANIFEST_NAME).read_text())
        data.pop("hashes")
        edit(data)
        write_manifest(folder, data)
        return folder

    return rewrite
