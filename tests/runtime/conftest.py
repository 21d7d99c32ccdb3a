"""Fixtures only the runtime tests use; the fixture bundle itself (`built`, `bundle_dir`, `bundle`,
`bundle_copy`, `rewrite_manifest`) comes from tests/fixtures/bundle.py, shared with the hardening suites."""

from __future__ import annotations

import pytest

from tests.fixtures.bundle import build_tokenizer


@pytest.fixture(scope="session")
def text_tokenizer(tmp_path_factory):
    """The fixture tokenizer alone (session scope: hypothesis tests may use it)."""
    from slmc.runtime.tokenizer import TextTokenizer

    path = tmp_path_factory.mktemp("tok") / "tokenizer.json"
    build_tokenizer().save(str(path))
    return TextTokenizer(path)


@pytest.fixture(scope="session")
def hf_model(built):
    import torch
    from transformers import LlamaForCausalLM

    torch.set_num_threads(1)
    return LlamaForCausalLM.from_pretrained(str(built[1])).eval()
