"""optimize_for_ort(): saved optimized graphs keep the logits and report what changed."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir
import pytest

from slmc.errors import SlmcError
from slmc.export.graph_parity import UNPADDED_CASES, compare_graphs
from slmc.export.onnx_files import op_histogram, save_model
from slmc.export.optimize import optimize_for_ort


def _summary(export):
    return {"num_heads": export.model["num_attention_heads"], "hidden_size": export.model["hidden_size"]}


@pytest.mark.parametrize("level", ["basic", "extended", "all"])
def test_levels_preserve_logits(tiny_llama_export, tmp_path, level):
    out = tmp_path / "model.onnx"
    report = optimize_for_ort(tiny_llama_export.onnx_path, out, level=level, **_summary(tiny_llama_export))
    # the saved file, on other random inputs than the pipeline's own post-condition used
    again = compare_graphs(tiny_llama_export.onnx_path, out, shared_buffer=report.kv_share_buffer, seed=5,
                           max_positions=tiny_llama_export.model["max_position_embeddings"])
    assert again.ok and max(again.diffs.values()) < 1e-4, (level, again.describe())
    assert report.max_abs_logit_diff is not None and report.max_abs_logit_diff < 1e-4
    assert report.max_abs_logit_diff == max(report.parity[k] for k in UNPADDED_CASES)
    assert report.nodes_before == len(onnx.load(str(tiny_llama_export.onnx_path)).graph.node)
    assert report.nodes_after == sum(report.ops_after.values())


def test_all_fuses_rmsnorm_and_shrinks_graph(tiny_llama_export, tmp_path):
    out = tmp_path / "model.onnx"
    report = optimize_for_ort(tiny_llama_export.onnx_path, out, level="all", **_summary(tiny_llama_export))
    layers = tiny_llama_export.model["num_hidden_layers"]
    assert report.transformer_fusions["SkipSimplifiedLayerNormalization"] == 2 * layers
    assert report.ops_after["com.microsoft::SkipSimplifiedLayerNormalization"] == 2 * layers
    assert report.nodes_after < report.nodes_before
    # saved at EXTENDED at most: no hardware-specific (NCHWc) layout ops in the file
    assert not any("nchwc" in op for op in report.ops_after)
    assert report.ort_level == "ORT_ENABLE_EXTENDED"


def test_external_data_output(tiny_llama_export, tmp_path):
    out = tmp_path / "model.onnx"
    report = optimize_for_ort(tiny_llama_export.onnx_path, out, level="extended", external_data=True,
                              **_summary(tiny_llama_export))
    assert report.external_data and (tmp_path / "model.onnx.data").stat().st_size > 0
    assert report.max_abs_logit_diff < 1e-4


def test_unknown_level_is_an_error(tiny_llama_export, tmp_path):
    with pytest.raises(SlmcError, match="unknown optimization level"):
        optimize_for_ort(tiny_llama_export.onnx_path, tmp_path / "m.onnx", level="max",
                         **_summary(tiny_llama_export))


def test_save_model_replaces_stale_external_data(tmp_path):
    weight = onnx.numpy_helper.from_array(np.ones((64, 64), np.float32), "w")
    graph = onnx.helper.make_graph(
        [onnx.helper.make_node("MatMul", ["x", "w"], ["y"])], "g",
        [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 64])],
        [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 64])], [weight])
    model = ir.from_proto(onnx.helper.make_model(graph))
    path = tmp_path / "model.onnx"
    save_model(model, path, external=True)
    size = (tmp_path / "model.onnx.data").stat().st_size
    save_model(model, path, external=True)  # the data file of the first save is replaced, not appended to
    assert (tmp_path / "model.onnx.data").stat().st_size == size == 64 * 64 * 4
    assert op_histogram(onnx.load(str(path))) == {"MatMul": 1}


@pytest.mark.parametrize("precision", ["int8", "int4"])
def test_all_works_on_quantized_graphs(tiny_llama_export, tmp_path, precision):
    # the gpt2 recipe's QuickGelu matcher crashed on MatMulInteger graphs; it is switched off
    from slmc.export.quantize import quantize

    quantized = tmp_path / "q.onnx"
    quantize(tiny_llama_export.onnx_path, quantized, precision=precision, target="ort")
    report = optimize_for_ort(quantized, tmp_path / "model.onnx", level="all", **_summary(tiny_llama_export))
    assert report.transformer_fusions.get("SkipSimplifiedLayerNormalization", 0) > 0
    assert report.max_abs_logit_diff < 1e-4


def test_fp16_graphs_are_refused(tiny_llama_export, tmp_path):
    from slmc.export.quantize import quantize

    fp16 = tmp_path / "fp16.onnx"
    quantize(tiny_llama_export.onnx_path, fp16, precision="fp16", target="ort")
    with pytest.raises(SlmcError, match="fp16 graph"):
        optimize_for_ort(fp16, tmp_path / "model.onnx", level="basic", **_summary(tiny_llama_export))
