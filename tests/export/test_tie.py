"""A tied embedding is stored once: in the optimized fp32 graph and in the int4 graph; int8 still
quantizes the lm_head (two int8 tables, said in the report)."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir
import pytest

from slmc.export import optimize as optimize_module
from slmc.export.graph_parity import compare_graphs
from slmc.export.onnx_export import export_decoder
from slmc.export.onnx_files import model_bytes
from slmc.export.optimize import optimize_for_ort
from slmc.export.quantize import quantize

from .conftest import VOCAB

HIDDEN = 64
TABLE_BYTES = VOCAB * HIDDEN * 4


class _KeepTwoTables(ir.passes.InPlacePass):
    """ShareTiedEmbedding switched off: what optimize wrote before this fix."""

    shared = False

    def call(self, model):
        return ir.passes.PassResult(model, modified=False)


@pytest.fixture(scope="module")
def tied_export(checkpoint_factory, tmp_path_factory):
    folder = checkpoint_factory(seed=5, tie_word_embeddings=True)
    return export_decoder(folder, tmp_path_factory.mktemp("tied_export"))


@pytest.fixture(scope="module")
def tied_optimized(tied_export, tmp_path_factory):
    out = tmp_path_factory.mktemp("tied_optimized") / "model.onnx"
    report = optimize_for_ort(tied_export.onnx_path, out, num_heads=4, hidden_size=HIDDEN,
                              model_info=tied_export.model)
    return out, report


def _tables(path) -> list[tuple[str, tuple[int, ...]]]:
    """Initializers holding vocab x hidden floats (the table or a transposed copy of it)."""
    graph = onnx.load(str(path)).graph
    return [(i.name, tuple(i.dims)) for i in graph.initializer
            if i.data_type == onnx.TensorProto.FLOAT and sorted(i.dims) == sorted((VOCAB, HIDDEN))]


def test_optimized_fp32_graph_stores_the_tied_table_once(tied_export, tied_optimized, tmp_path, monkeypatch):
    out, report = tied_optimized
    assert len(_tables(out)) == 1, _tables(out)
    assert report.ops_after.get("com.microsoft::FusedMatMul") == 1
    assert any("tied embedding stored once" in note for note in report.notes)
    assert max(report.parity.values()) < 1e-4, report.parity

    monkeypatch.setattr(optimize_module, "ShareTiedEmbedding", _KeepTwoTables)
    before = tmp_path / "two_tables.onnx"
    optimize_for_ort(tied_export.onnx_path, before, num_heads=4, hidden_size=HIDDEN, model_info=tied_export.model)
    assert len(_tables(before)) == 2
    saved = model_bytes(before) - model_bytes(out)
    assert abs(saved - TABLE_BYTES) < 0.05 * TABLE_BYTES, (model_bytes(before), model_bytes(out))


@pytest.mark.parametrize("level", ["basic", "extended"])
def test_every_optimization_level_keeps_one_table(tied_export, tmp_path, level):
    out = tmp_path / "model.onnx"
    optimize_for_ort(tied_export.onnx_path, out, num_heads=4, hidden_size=HIDDEN, level=level,
                     model_info=tied_export.model)
    assert len(_tables(out)) == 1


def test_untied_models_keep_their_own_output_layer(tiny_llama_export, tmp_path):
    out = tmp_path / "model.onnx"
    report = optimize_for_ort(tiny_llama_export.onnx_path, out, num_heads=4, hidden_size=HIDDEN,
                              model_info=tiny_llama_export.model)
    assert "com.microsoft::FusedMatMul" not in report.ops_after
    assert not any("tied" in note for note in report.notes)


def test_int4_reads_the_lm_head_weights_for_the_token_lookup(tied_optimized, tmp_path):
    source, _ = tied_optimized
    shared, separate = tmp_path / "shared.onnx", tmp_path / "separate.onnx"
    report = quantize(source, shared, precision="int4", target="ort")
    quantize(source, separate, precision="int4", target="ort", share_tied_embedding=False)
    assert any("stored once" in note for note in report.notes)
    graph = onnx.load(str(shared)).graph
    gather = next(n for n in graph.node if n.op_type == "GatherBlockQuantized")
    head = next(n for n in graph.node if n.op_type == "MatMulNBits" and n.output[0] == "logits")
    producers = {o: n for n in graph.node for o in n.output}
    assert producers[gather.input[0]].input[0] == head.input[1]  # Reshape of the lm_head's 4-bit weights
    assert not _tables(shared) and "Gather" not in report.ops_after
    # the same logits as quantizing the table separately, one int4 table less on disk
    result = compare_graphs(separate, shared, shared_buffer=True, quantized=True, tolerance=1e-6)
    assert result.ok, result.describe()
    table_int4 = VOCAB * HIDDEN // 2
    assert model_bytes(separate) - model_bytes(shared) > 0.9 * table_int4


def test_int8_quantizes_the_tied_lm_head(tied_optimized, tmp_path):
    source, _ = tied_optimized
    out = tmp_path / "int8.onnx"
    report = quantize(source, out, precision="int8", target="ort")
    graph = onnx.load(str(out)).graph
    producers = {o: n for n in graph.node for o in n.output}
    node, seen = producers["logits"], 0
    while node.op_type != "MatMulInteger" and seen < 6:  # logits = Mul(Cast(MatMulInteger), scale)
        node, seen = producers[next(i for i in node.input if i in producers)], seen + 1
    assert node.op_type == "MatMulInteger"
    assert not _tables(out) and "MatMul" not in report.ops_after
    assert any("stored twice at int8" in note for note in report.notes)
    ids = np.arange(2, 14)[None]
    from slmc.runtime.stepper import Decoder

    a = Decoder.open(source).stepper(1).logits(ids, np.ones_like(ids), np.arange(12)[None])
    b = Decoder.open(out).stepper(1).logits(ids, np.ones_like(ids), np.arange(12)[None])
    assert np.corrcoef(a.ravel(), b.ravel())[0, 1] > 0.99


def test_unfused_int4_graphs_keep_their_minimum_onnxruntime(tied_export, tmp_path):
    """The shared int4 table needs onnxruntime >= 1.23 (GatherBlockQuantized over uint8 data); an
    unfused graph promises 1.20, so by default it keeps a separate int4 table and says why."""
    out = tmp_path / "int4.onnx"
    report = quantize(tied_export.onnx_path, out, precision="int4", target="ort")
    assert any("stored twice at int4" in note and "1.23" in note for note in report.notes)
    assert report.ops_after["com.microsoft::GatherBlockQuantized"] == 1
    gather = next(n for n in onnx.load(str(out)).graph.node if n.op_type == "GatherBlockQuantized")
    assert "bits" not in {a.name for a in gather.attribute}  # the int4-typed form older runtimes read
    head = [n for n in onnx.load(str(out)).graph.node if n.op_type == "MatMulNBits" and n.output[0] == "logits"]
    assert head  # the lm_head is quantized all the same
    forced = tmp_path / "forced.onnx"
    assert any("stored once" in n for n in quantize(tied_export.onnx_path, forced, precision="int4", target="ort",
                                                     share_tied_embedding=True).notes)
