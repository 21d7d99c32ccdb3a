"""fuse_for_ort(): GroupQueryAttention graphs with the bundle I/O, the export's logits, fewer nodes."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from slmc.errors import SlmcError
from slmc.export.fuse import fuse_for_ort
from slmc.export.graph_parity import compare_graphs
from slmc.export.io_spec import io_mismatches, read_io
from slmc.runtime.session import SHARE_BUFFER_KEY, shares_kv_buffer
from slmc.runtime.stepper import Decoder

from .conftest import training_lines


def _fuse(export, tmp_path, source=None, **kwargs):
    out = tmp_path / "fused.onnx"
    return out, fuse_for_ort(source or export.onnx_path, out, model_info=export.model, **kwargs)


def test_fp32_fused_graph_keeps_io_and_logits(tiny_llama_export, tmp_path):
    out, report = _fuse(tiny_llama_export, tmp_path)
    layers = tiny_llama_export.model["num_hidden_layers"]
    assert io_mismatches(read_io(out), tiny_llama_export.io) == []
    assert report.fusions["GroupQueryAttention"] == report.attention_layers == layers
    assert report.fusions["PackedQKV"] == layers
    assert report.ops_after["com.microsoft::GroupQueryAttention"] == layers
    # the first norm has no residual yet; every later one (and the final norm) adds one
    assert report.ops_after["SimplifiedLayerNormalization"] == 1
    assert report.ops_after["com.microsoft::SkipSimplifiedLayerNormalization"] == 2 * layers
    assert report.nodes_after < report.nodes_before / 3
    assert not any(op.startswith("ai.onnxruntime._fusion") for op in report.ops_after)
    # prefill, decode with a past, 3 tokens with a past at batch 2, left-padded batch of 2, shared buffer
    assert set(report.parity) == {"prefill", "decode_with_past", "tokens_with_past_batch2",
                                  "decode_far_position", "left_padded_batch2", "shared_kv_buffer"}
    assert max(report.parity.values()) < 1e-4, report.parity
    model = onnx.load(str(out))
    assert {p.key: p.value for p in model.metadata_props}[SHARE_BUFFER_KEY] == "1"
    assert report.kv_share_buffer


def test_fused_graph_runs_on_the_cpu_provider_with_ort_optimizations(tiny_llama_export, tmp_path):
    out, _ = _fuse(tiny_llama_export, tmp_path, check=False)
    decoder = Decoder.open(out)  # the runtime's session: every ORT optimization on
    assert decoder.session.get_modelmeta().custom_metadata_map[SHARE_BUFFER_KEY] == "1"
    assert shares_kv_buffer(decoder.session) and decoder.kv.num_layers == tiny_llama_export.model["num_hidden_layers"]
    result = compare_graphs(tiny_llama_export.onnx_path, out, shared_buffer=True, seed=3)
    assert result.ok, result.describe()


def test_qwen2_projection_biases_are_packed(tiny_qwen2_dir, tmp_path):
    from slmc.export.onnx_export import export_decoder

    export = export_decoder(tiny_qwen2_dir, tmp_path / "export")
    out, report = _fuse(export, tmp_path)
    assert report.fusions["GroupQueryAttention"] == report.fusions["PackedQKV"] == export.model["num_hidden_layers"]
    assert max(report.parity.values()) < 1e-4, report.parity
    ops = {n.op_type for n in onnx.load(str(out)).graph.node}
    assert "Add" in ops  # the packed q/k/v bias


def test_int4_fused_keeps_perplexity(tiny_llama_export, tiny_llama_dir, tmp_path):
    from tokenizers import Tokenizer

    from slmc.export.perplexity import onnx_perplexity
    from slmc.export.quantize import quantize

    quantized = tmp_path / "int4.onnx"
    quantize(tiny_llama_export.onnx_path, quantized, precision="int4", target="ort")
    out, report = _fuse(tiny_llama_export, tmp_path, source=quantized)
    layers = report.num_layers
    assert report.fusions["PackedQKV"] == layers
    assert report.ops_after["com.microsoft::MatMulNBits"] == 5 * layers + 1  # qkv, o, gate, up, down; lm_head
    ids = Tokenizer.from_file(str(tiny_llama_dir / "tokenizer.json")).encode(" ".join(training_lines(60))).ids
    before = onnx_perplexity(quantized, ids[:256], window=64)
    after = onnx_perplexity(out, ids[:256], window=64)
    assert abs(after / before - 1) < 0.005, (before, after)


def test_a_fused_graph_has_nothing_left_to_fuse(tiny_llama_export, tmp_path):
    out, _ = _fuse(tiny_llama_export, tmp_path, check=False)
    again = tmp_path / "again.onnx"
    report = fuse_for_ort(out, again, model_info=tiny_llama_export.model)
    assert report.attention_layers == 0 and "already uses GroupQueryAttention" in report.notes[0]
    assert report.ops_after["com.microsoft::GroupQueryAttention"] == tiny_llama_export.model["num_hidden_layers"]
    assert report.kv_share_buffer  # the presents still come from GroupQueryAttention
    assert report.parity["prefill"] < 1e-5 and report.parity["left_padded_batch2"] < 1e-5


def test_fp16_graphs_are_refused(tiny_llama_export, tmp_path):
    from slmc.export.quantize import quantize

    fp16 = tmp_path / "fp16.onnx"
    quantize(tiny_llama_export.onnx_path, fp16, precision="fp16", target="ort")
    with pytest.raises(SlmcError, match="float32 KV cache"):
        fuse_for_ort(fp16, tmp_path / "fused.onnx", model_info=tiny_llama_export.model)


def test_multi_head_attention_with_tied_embeddings(checkpoint_factory, tmp_path):
    """Heads == KV heads: transformers skips repeat_kv, the second rule form matches."""
    from slmc.export.onnx_export import export_decoder

    folder = checkpoint_factory(seed=3, num_key_value_heads=4, tie_word_embeddings=True)
    export = export_decoder(folder, tmp_path / "export")
    _, report = _fuse(export, tmp_path)
    assert report.attention_layers == export.model["num_hidden_layers"] and report.kv_share_buffer
    assert max(report.parity.values()) < 1e-4, report.parity


def test_unrecognised_rotary_falls_back_to_multi_head_attention(tiny_llama_export, tmp_path, monkeypatch):
    """When slmc's rule does not match, onnxscript's SDPA is lowered to MultiHeadAttention:
    still a valid, equivalent graph, but no shared KV buffer is claimed."""
    import slmc.export.fuse_gqa as fuse_gqa

    def unrecognised(*args):
        raise fuse_gqa.NotFusable("a rotary form this test invents")

    monkeypatch.setattr(fuse_gqa, "rope_inv_freq", unrecognised)
    out, report = _fuse(tiny_llama_export, tmp_path)
    assert report.attention_layers == 0 and not report.kv_share_buffer
    assert "not fused in 2 of 2 layers" in report.notes[0] and "a rotary form this test invents" in report.notes[0]
    assert report.fusions["MultiHeadAttention"] == tiny_llama_export.model["num_hidden_layers"]
    assert max(report.parity.values()) < 1e-4, report.parity
    assert SHARE_BUFFER_KEY not in {p.key for p in onnx.load(str(out)).metadata_props}


def test_short_rotary_range_fuses_and_checks_inside_it(checkpoint_factory, tmp_path):
    """A model with 128 positions: the fused rotary caches hold 128, and the far-position
    parity case stays inside them (it used to ask GQA for position 150 and fail the compile)."""
    from slmc.export.onnx_export import export_decoder

    export = export_decoder(checkpoint_factory(max_position_embeddings=128), tmp_path / "export")
    out, report = _fuse(export, tmp_path)
    assert report.max_positions == 128 and report.attention_layers == export.model["num_hidden_layers"]
    assert max(report.parity.values()) < 1e-4, report.parity
    assert compare_graphs(export.onnx_path, out, shared_buffer=True, max_positions=128).ok
    with pytest.raises(Exception, match="cos_cache"):  # beyond the cache, GQA itself refuses
        compare_graphs(export.onnx_path, out, shared_buffer=True, max_positions=None)


def test_rotary_caches_follow_the_bundles_sequence_length(tiny_llama_export, tmp_path):
    """max_seq_len (export.max_seq_len) sizes the cos/sin caches instead of max_position_embeddings
    (256 here; 131072 for Llama 3.2, 33.5 MB of fp32 caches)."""
    default_out, default = _fuse(tiny_llama_export, tmp_path / "default")
    short_out = tmp_path / "short.onnx"
    short = fuse_for_ort(tiny_llama_export.onnx_path, short_out, model_info=tiny_llama_export.model, max_seq_len=32)
    assert (default.max_positions, short.max_positions) == (256, 32)
    caches = {i.name: tuple(i.dims) for i in onnx.load(str(short_out)).graph.initializer if "rope" in i.name}
    assert caches == {"slmc_rope_cos_cache_0": (32, 8), "slmc_rope_sin_cache_0": (32, 8)}
    saved = default_out.stat().st_size - short_out.stat().st_size
    assert abs(saved - 2 * (256 - 32) * 8 * 4) < 512
    assert max(short.parity.values()) < 1e-4 and short.kv_share_buffer  # far-position case inside the 32


def test_optimize_passes_the_sequence_length_to_the_fusion(tiny_llama_export, tmp_path):
    from slmc.export.optimize import optimize_for_ort

    out = tmp_path / "model.onnx"
    optimize_for_ort(tiny_llama_export.onnx_path, out, num_heads=4, hidden_size=64,
                     model_info=tiny_llama_export.model, max_seq_len=48)
    caches = [tuple(i.dims) for i in onnx.load(str(out)).graph.initializer if "rope" in i.name]
    assert caches == [(48, 8), (48, 8)]
