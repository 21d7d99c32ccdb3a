"""quantize(): each (precision, target) gives the expected op format, shrinks, and keeps accuracy."""

from __future__ import annotations

import filecmp

import numpy as np
import onnx
import pytest
from ._fixtures_quant import SEQ, calibration_feeds, held_out_ids, trained_export  # noqa: F401
from onnx import numpy_helper

from slmc.errors import SlmcError
from slmc.export.perplexity import onnx_perplexity
from slmc.export.quantize import lm_head_node, quantize, weight_matmuls
from slmc.export.trt_ops import check_trt_ops
from slmc.runtime.stepper import Decoder


def _logits(onnx_path, ids: np.ndarray) -> np.ndarray:
    rows = ids.reshape(-1, SEQ)
    positions = np.tile(np.arange(SEQ, dtype=np.int64), (rows.shape[0], 1))
    return Decoder.open(onnx_path).stepper(rows.shape[0], capacity=SEQ).logits(rows, np.ones_like(rows), positions)


@pytest.fixture(scope="module")
def fp32(trained_export, held_out_ids):
    path = trained_export.onnx_path
    return {"path": path, "ppl": onnx_perplexity(path, held_out_ids, window=SEQ),
            "logits": _logits(path, held_out_ids)}


def _assert_close_to_fp32(path, fp32, held_out_ids, *, ppl_ratio: float, min_agreement: float):
    ppl = onnx_perplexity(path, held_out_ids, window=SEQ)
    agreement = float(np.mean(_logits(path, held_out_ids).argmax(-1) == fp32["logits"].argmax(-1)))
    assert ppl <= fp32["ppl"] * ppl_ratio, (ppl, fp32["ppl"])
    assert agreement >= min_agreement, agreement


def test_trained_model_learned_the_pattern(fp32, held_out_ids):
    # Guards the gates below: they only mean something if fp32 predicts well.
    rows = held_out_ids.reshape(-1, SEQ)
    predicted = fp32["logits"][:, 1:-1].argmax(-1)
    assert np.mean(predicted == rows[:, 2:]) > 0.95
    assert fp32["ppl"] < 1.5


def test_ort_int8_is_dynamic_matmulinteger(trained_export, fp32, held_out_ids, tmp_path):
    out = tmp_path / "model.onnx"
    report = quantize(trained_export.onnx_path, out, precision="int8", target="ort")
    source = onnx.load(str(trained_export.onnx_path))
    assert report.format == "MatMulInteger"
    assert report.ops_after["MatMulInteger"] == len(weight_matmuls(source))
    assert report.ops_after["DynamicQuantizeLinear"] > 0
    assert report.bytes_after < report.bytes_before
    _assert_close_to_fp32(out, fp32, held_out_ids, ppl_ratio=1.02, min_agreement=0.98)


def test_ort_int8_per_channel_weights(trained_export, tmp_path):
    out = tmp_path / "model.onnx"
    quantize(trained_export.onnx_path, out, precision="int8", target="ort")
    model = onnx.load(str(out))
    inits = {i.name: i for i in model.graph.initializer}
    node = next(n for n in model.graph.node if n.op_type == "MatMulInteger")
    weight_zero_point = numpy_helper.to_array(inits[node.input[3]])
    assert weight_zero_point.size > 1 and not weight_zero_point.any()  # per channel, symmetric
    assert inits[node.input[1]].data_type == onnx.TensorProto.INT8


def test_ort_int4_is_matmulnbits(trained_export, fp32, held_out_ids, tmp_path):
    out = tmp_path / "model.onnx"
    report = quantize(trained_export.onnx_path, out, precision="int4", target="ort", block_size=32,
                      accuracy_level=4)
    model = onnx.load(str(out))
    nbits = [n for n in model.graph.node if n.op_type == "MatMulNBits"]
    assert report.format == "MatMulNBits"
    assert nbits and all(n.domain == "com.microsoft" for n in nbits)
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in nbits[0].attribute}
    assert attrs["block_size"] == 32 and attrs["bits"] == 4 and attrs["accuracy_level"] == 4
    assert report.bytes_after < report.bytes_before
    _assert_close_to_fp32(out, fp32, held_out_ids, ppl_ratio=1.05, min_agreement=0.95)


def test_keep_lm_head_float(trained_export, tmp_path):
    out = tmp_path / "model.onnx"
    source = onnx.load(str(trained_export.onnx_path))
    head = lm_head_node(source)
    report = quantize(trained_export.onnx_path, out, precision="int4", target="ort", keep_lm_head_float=True)
    kept = {n.name: n.op_type for n in onnx.load(str(out)).graph.node}
    assert head and report.excluded_nodes == [head] and kept[head] == "MatMul"


def test_ort_fp16_keeps_logits_fp32(trained_export, fp32, held_out_ids, tmp_path):
    out = tmp_path / "model.onnx"
    report = quantize(trained_export.onnx_path, out, precision="fp16", target="ort")
    model = onnx.load(str(out))
    types = {v.name: v.type.tensor_type.elem_type for v in [*model.graph.input, *model.graph.output]}
    assert report.format == "fp16-cast"
    assert types["logits"] == onnx.TensorProto.FLOAT
    assert types["past_key_values.0.key"] == onnx.TensorProto.FLOAT16
    assert types["present.1.value"] == onnx.TensorProto.FLOAT16
    _assert_close_to_fp32(out, fp32, held_out_ids, ppl_ratio=1.005, min_agreement=0.99)


def test_ort_bf16_is_refused(trained_export, tmp_path):
    with pytest.raises(SlmcError, match="bf16 is not supported"):
        quantize(trained_export.onnx_path, tmp_path / "m.onnx", precision="bf16", target="ort")


def test_tensorrt_int8_is_qdq_with_zero_points_0(trained_export, fp32, held_out_ids, tmp_path):
    out = tmp_path / "model.onnx"
    summary = trained_export.model
    feeds = calibration_feeds(summary["num_hidden_layers"], summary["num_key_value_heads"], summary["head_dim"])
    report = quantize(trained_export.onnx_path, out, precision="int8", target="tensorrt", calibration=feeds)
    model = onnx.load(str(out))
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    qdq = [n for n in model.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")]
    assert report.format == "QDQ" and report.ops_after["QuantizeLinear"] > 0
    assert all(n.domain in ("", "ai.onnx") for n in model.graph.node)
    zero_points = [inits[n.input[2]] for n in qdq]
    assert all(z.dtype == np.int8 and not z.any() for z in zero_points)
    assert check_trt_ops(out, "10.3") == []
    assert report.bytes_after < report.bytes_before
    _assert_close_to_fp32(out, fp32, held_out_ids, ppl_ratio=1.02, min_agreement=0.98)


def test_tensorrt_int8_needs_calibration(trained_export, tmp_path):
    with pytest.raises(SlmcError, match="calibration"):
        quantize(trained_export.onnx_path, tmp_path / "m.onnx", precision="int8", target="tensorrt")


def test_tensorrt_int4_is_refused(trained_export, tmp_path):
    with pytest.raises(SlmcError, match="int4 for TensorRT"):
        quantize(trained_export.onnx_path, tmp_path / "m.onnx", precision="int4", target="tensorrt")


def test_tensorrt_fp16_is_a_builder_flag(trained_export, tmp_path):
    out = tmp_path / "model.onnx"
    report = quantize(trained_export.onnx_path, out, precision="fp16", target="tensorrt")
    assert report.format == "builder-flag" and "builder flag" in report.notes[0]
    assert filecmp.cmp(out, trained_export.onnx_path, shallow=False)


def test_external_data_round_trip(trained_export, fp32, held_out_ids, tmp_path):
    out = tmp_path / "model.onnx"
    report = quantize(trained_export.onnx_path, out, precision="int4", target="ort", external_data=True)
    assert report.external_data and (tmp_path / "model.onnx.data").stat().st_size > 0
    assert report.bytes_after == out.stat().st_size + (tmp_path / "model.onnx.data").stat().st_size
    _assert_close_to_fp32(out, fp32, held_out_ids, ppl_ratio=1.05, min_agreement=0.95)


def test_embedding_is_quantized_by_default(trained_export, tmp_path):
    int8, int4, plain = tmp_path / "int8.onnx", tmp_path / "int4.onnx", tmp_path / "plain.onnx"
    quantize(trained_export.onnx_path, int8, precision="int8", target="ort")
    quantize(trained_export.onnx_path, int4, precision="int4", target="ort")
    report = quantize(trained_export.onnx_path, plain, precision="int8", target="ort", quantize_embedding=False)
    model = onnx.load(str(int8))
    inits = {i.name: i for i in model.graph.initializer}
    gather = next(n for n in model.graph.node if n.op_type == "Gather" and n.input[0] in inits)
    assert inits[gather.input[0]].data_type in (onnx.TensorProto.INT8, onnx.TensorProto.UINT8)
    assert any(n.op_type == "DequantizeLinear" and n.input[0] == gather.output[0] for n in model.graph.node)
    assert report.ops_after.get("DequantizeLinear", 0) == 0 and plain.stat().st_size > int8.stat().st_size
    assert quantize(trained_export.onnx_path, tmp_path / "x.onnx", precision="int4",
                    target="ort").ops_after["com.microsoft::GatherBlockQuantized"] == 1


@pytest.mark.parametrize("algo", ["rtn", "hqq", "gptq", "kquant"])
def test_each_int4_algo_keeps_accuracy_and_quantizes_the_embedding(trained_export, fp32, held_out_ids, tmp_path,
                                                                   algo):
    out = tmp_path / "model.onnx"
    feeds = list(calibration_feeds(num_layers=2, kv_heads=2, head_dim=16)) if algo == "gptq" else None
    report = quantize(trained_export.onnx_path, out, precision="int4", target="ort", block_size=32,
                      algo=algo, calibration=feeds)
    assert report.algo == algo and report.block_size == 32
    assert report.ops_after["com.microsoft::MatMulNBits"] == len(weight_matmuls(onnx.load(str(
        trained_export.onnx_path))))  # every linear layer, the lm_head included
    assert report.ops_after["com.microsoft::GatherBlockQuantized"] == 1  # the table: rtn whatever the algo
    assert any(algo in note for note in report.notes) == (algo != "rtn")  # says it is asymmetric
    # quant.int4_algo_cpu_speed's premise: only hqq's zero points are float (the CPU kernel cannot prepack those)
    model = onnx.load(str(out))
    inits = {i.name: i.data_type for i in model.graph.initializer}
    zero_point_types = {inits[n.input[3]] for n in model.graph.node
                        if n.op_type == "MatMulNBits" and len(n.input) > 3 and n.input[3]}
    expected = {"rtn": set(), "hqq": {onnx.TensorProto.FLOAT}}.get(algo, {onnx.TensorProto.UINT8})
    assert zero_point_types == expected
    _assert_close_to_fp32(out, fp32, held_out_ids, ppl_ratio=1.05, min_agreement=0.95)


def test_gptq_without_calibration_is_refused(trained_export, tmp_path):
    with pytest.raises(SlmcError) as err:
        quantize(trained_export.onnx_path, tmp_path / "model.onnx", precision="int4", target="ort", algo="gptq")
    assert "calibration" in err.value.render()
