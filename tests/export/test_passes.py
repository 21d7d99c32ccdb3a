"""DecoderPipeline: passes over one in-memory model whose post-conditions (the bundle I/O,
logit parity with a reference graph) can and do fail."""

from __future__ import annotations

import numpy as np
import onnx_ir as ir
import pytest

from slmc.errors import StageError
from slmc.export import onnx_files
from slmc.export.onnx_files import load_model, ort_source
from slmc.export.passes import DecoderPipeline


class _Edit(ir.passes.InPlacePass):
    """Applies `edit(model)` in place."""

    def __init__(self, edit):
        self.edit = edit

    def call(self, model):
        self.edit(model)
        return ir.passes.PassResult(model, modified=True)


def _pipeline(edit, reference=None):
    return DecoderPipeline([_Edit(edit)], where="export.test", fix="a fix", reference=reference)


def _lm_head_weight(model) -> ir.Value:
    """The weight of the MatMul producing logits (the untied tiny Llama's lm_head)."""
    node = model.graph.outputs[0].producer()
    return next(v for v in node.inputs if v is not None and v.const_value is not None)


def test_an_unchanged_model_meets_both_post_conditions(tiny_llama_export):
    pipeline = _pipeline(lambda model: None, reference=tiny_llama_export.onnx_path)
    pipeline.run(load_model(tiny_llama_export.onnx_path))
    assert pipeline.parity.ok and max(pipeline.parity.diffs.values()) == 0.0
    assert "shared_kv_buffer" not in pipeline.parity.diffs  # an unfused graph declares no shared buffer


def test_a_renamed_output_breaks_the_io_contract(tiny_llama_export):
    def rename(model):
        model.graph.outputs[1].name = "present.0.k"

    with pytest.raises(StageError, match="bundle I/O contract.*present.0.k") as caught:
        _pipeline(rename).run(load_model(tiny_llama_export.onnx_path))
    assert caught.value.where == "export.test"


def test_changed_logits_break_parity(tiny_llama_export):
    def perturb(model):
        weight = _lm_head_weight(model)
        weight.const_value = ir.tensor(weight.const_value.numpy() * 1.01, name=weight.name)

    with pytest.raises(StageError, match="logits differ.*prefill") as caught:
        _pipeline(perturb, reference=tiny_llama_export.onnx_path).run(load_model(tiny_llama_export.onnx_path))
    assert caught.value.fix == "a fix"


def test_anything_else_a_pass_raises_is_one_stage_error_naming_it(tiny_llama_export):
    def trip(model):
        raise KeyError("an unexpected pattern")

    with pytest.raises(StageError, match="KeyError: 'an unexpected pattern'"):
        _pipeline(trip).run(load_model(tiny_llama_export.onnx_path))


def test_a_model_past_the_protobuf_limit_reaches_ort_as_a_file(tiny_llama_export, tmp_path, monkeypatch):
    model = load_model(tiny_llama_export.onnx_path)
    assert isinstance(ort_source(model, tmp_path), bytes)
    monkeypatch.setattr(onnx_files, "PROTOBUF_LIMIT", 0)
    source = ort_source(model, tmp_path)
    assert source == tmp_path / "model.onnx" and (tmp_path / "model.onnx.data").exists()
    pipeline = _pipeline(lambda m: None, reference=tiny_llama_export.onnx_path)
    pipeline.run(model)  # the parity post-condition through that file
    assert pipeline.parity.ok and np.isfinite(list(pipeline.parity.diffs.values())).all()
