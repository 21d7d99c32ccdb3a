"""docs/rules.md is the generator's output (compiler/rules/docs.py), so the rule documentation stays true."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

from slmc.load import load_config
from slmc.rules.docs import _Recorder, render

DOC = Path(__file__).resolve().parents[2] / "docs" / "rules.md"


def test_committed_rules_doc_equals_the_generator_output():
    generated = render()
    assert DOC.read_text(encoding="utf-8") == generated, (
        "docs/rules.md is out of date with the rule catalogue: run `python -m slmc.rules.docs > docs/rules.md`"
    )
    assert all(f"### `{rid}`" in generated for rid in _registered_ids())


def _registered_ids():
    import slmc.rules.catalogue  # noqa: F401
    from slmc.rules._engine import REGISTRY

    return list(REGISTRY.rules)


def test_the_recorder_sees_nested_reads_and_reads_of_what_if_copies():
    seen: set[str] = set()
    cfg = _Recorder(load_config([]), "", seen)
    assert cfg.device.memory_gb > 0 and cfg.train.lora.r > 0
    variant = cfg.model_copy(update={"train": cfg.train.model_copy(update={"kind": "lora"})})
    assert variant.train.kind == "lora" and variant.export.max_seq_len > 0
    assert seen == {"device.memory_gb", "train.lora.r", "train.kind", "export.max_seq_len"}
    facts: set[str] = set()
    _Recorder(SimpleNamespace(init_arch=None, paths={}), "", facts).init_arch
    assert facts == {"init_arch"}
