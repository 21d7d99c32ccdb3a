"""export_decoder: the bundle I/O contract, determinism, external data, fallback, Qwen2."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from slmc.errors import StageError
from slmc.export import onnx_export
from slmc.export.io_spec import read_io
from slmc.export.onnx_export import export_decoder
from slmc.export.parity import check_parity
from slmc.runtime.stepper import Decoder

PAST = ["batch", 2, "past_sequence", 16]
PRESENT = ["batch", 2, "total_sequence", 16]


def _step(path, batch: int, seq: int, past: int, seed: int = 0):
    """(random past, logits, presents) of one forward pass from that past, run by the runtime's loop."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, 384, (batch, seq))
    cache = [rng.standard_normal((batch, 2, past, 16), np.float32) for _ in range(4)]
    stepper = Decoder.open(path).stepper(batch, past=cache)
    positions = np.broadcast_to(np.arange(past, past + seq), (batch, seq)).copy()
    logits = stepper.logits(ids, np.ones((batch, past + seq), np.int64), positions)
    return cache, logits, stepper.past


@pytest.fixture(scope="module")
def external_exports(tiny_llama_dir, tmp_path_factory):
    """The same checkpoint exported twice with external data, into two folders."""
    return [
        export_decoder(tiny_llama_dir, tmp_path_factory.mktemp(f"ext{i}"), external_data=True) for i in range(2)
    ]


def test_io_names_dtypes_and_axes_follow_the_bundle_contract(tiny_llama_export):
    io = read_io(tiny_llama_export.onnx_path)
    assert io["inputs"] == [
        {"name": "input_ids", "dtype": "int64", "shape": ["batch", "sequence"]},
        {"name": "attention_mask", "dtype": "int64", "shape": ["batch", "total_sequence"]},
        {"name": "position_ids", "dtype": "int64", "shape": ["batch", "sequence"]},
        {"name": "past_key_values.0.key", "dtype": "float32", "shape": PAST},
        {"name": "past_key_values.0.value", "dtype": "float32", "shape": PAST},
        {"name": "past_key_values.1.key", "dtype": "float32", "shape": PAST},
        {"name": "past_key_values.1.value", "dtype": "float32", "shape": PAST},
    ]
    assert io["outputs"] == [
        {"name": "logits", "dtype": "float32", "shape": ["batch", "sequence", 384]},
        {"name": "present.0.key", "dtype": "float32", "shape": PRESENT},
        {"name": "present.0.value", "dtype": "float32", "shape": PRESENT},
        {"name": "present.1.key", "dtype": "float32", "shape": PRESENT},
        {"name": "present.1.value", "dtype": "float32", "shape": PRESENT},
    ]
    assert tiny_llama_export.io == io


def test_exported_model_describes_the_file(tiny_llama_export):
    result = tiny_llama_export
    proto = onnx.load(str(result.onnx_path))
    onnx.checker.check_model(proto)
    assert result.exporter == "dynamo" and result.fallback_reason is None
    assert result.opset == 18 and any(o.domain in ("", "ai.onnx") and o.version == 18 for o in proto.opset_import)
    assert result.node_count == len(proto.graph.node)
    assert result.data_path is None and not (result.onnx_path.parent / "model.onnx.data").exists()
    assert result.model == {
        "architecture": "llama", "vocab_size": 384, "num_hidden_layers": 2, "num_attention_heads": 4,
        "num_key_value_heads": 2, "head_dim": 16, "hidden_size": 64, "max_position_embeddings": 256,
        "parameters": 2 * 384 * 64 + 2 * (4 * 64 * 64 - 2 * 64 * 32 + 3 * 64 * 128 + 2 * 64) + 64,
    }
    assert result.kv_cache == {
        "layout": "batch,num_key_value_heads,sequence,head_dim", "num_layers": 2, "num_key_value_heads": 2,
        "head_dim": 16, "dtype": "float32", "past_key": "past_key_values.{layer}.key",
        "past_value": "past_key_values.{layer}.value", "present_key": "present.{layer}.key",
        "present_value": "present.{layer}.value",
    }
    assert not any(p.key.endswith("stack_trace") for n in proto.graph.node for p in n.metadata_props)


@pytest.mark.parametrize("batch,seq,past", [(1, 1, 0), (3, 5, 0), (2, 1, 9), (1, 4, 6)])
def test_axes_are_dynamic_including_an_empty_past(tiny_llama_export, batch, seq, past):
    _, logits, presents = _step(tiny_llama_export.onnx_path, batch, seq, past)
    assert logits.shape == (batch, seq, 384)
    assert len(presents) == 4 and all(p.shape == (batch, 2, past + seq, 16) for p in presents)
    assert np.isfinite(logits).all() and all(np.isfinite(p).all() for p in presents)


def test_present_is_past_followed_by_the_new_positions(tiny_llama_export):
    past, _, presents = _step(tiny_llama_export.onnx_path, 2, 3, 4)
    np.testing.assert_array_equal(presents[0][:, :, :4], past[0])  # present.0.key
    np.testing.assert_array_equal(presents[3][:, :, :4], past[3])  # present.1.value


def test_export_is_byte_deterministic(external_exports):
    first, second = external_exports
    assert first.onnx_path.read_bytes() == second.onnx_path.read_bytes()
    assert first.data_path.read_bytes() == second.data_path.read_bytes()


def test_external_data_is_written_and_runs_like_the_inline_graph(external_exports, tiny_llama_export):
    result = external_exports[0]
    assert result.data_path == result.onnx_path.parent / "model.onnx.data" and result.data_path.exists()
    assert result.onnx_path.stat().st_size < result.data_path.stat().st_size
    onnx.checker.check_model(str(result.onnx_path))
    _, external_logits, external = _step(result.onnx_path, 1, 6, 0)
    _, inline_logits, inline = _step(tiny_llama_export.onnx_path, 1, 6, 0)
    for a, b in zip([external_logits, *external], [inline_logits, *inline]):
        np.testing.assert_array_equal(a, b)


def test_dynamo_failure_falls_back_to_the_legacy_exporter(tiny_llama_dir, tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("simulated dynamo failure")

    monkeypatch.setattr(onnx_export, "_export_dynamo", broken)
    result = export_decoder(tiny_llama_dir, tmp_path)
    assert result.exporter == "legacy"
    assert "simulated dynamo failure" in result.fallback_reason
    assert read_io(result.onnx_path) == result.io
    report = check_parity(tiny_llama_dir, result.onnx_path, greedy_steps=4)
    assert report.ok, report.describe()

    with pytest.raises(StageError, match="dynamo=True"):
        export_decoder(tiny_llama_dir, tmp_path / "strict", fallback=False)


def test_qwen2_exports_with_parity(tiny_qwen2_dir, tmp_path):
    result = export_decoder(tiny_qwen2_dir, tmp_path)
    assert result.model["architecture"] == "qwen2" and result.exporter == "dynamo"
    report = check_parity(tiny_qwen2_dir, result.onnx_path, greedy_steps=4)
    assert report.ok, report.describe()
    assert max(report.cases.values()) < 1e-4


def test_sliding_window_layers_export_exactly_and_record_their_windows(checkpoint_factory, tmp_path):
    """Qwen2 with use_sliding_window: layer 1 slides (window 4), layer 0 attends to everything.
    The export keeps every past position and is exact on prompts past the window."""
    import json

    from slmc.export.attention import LAYER_WINDOWS_KEY

    folder = checkpoint_factory("qwen2", use_sliding_window=True, sliding_window=4, max_window_layers=1)
    result = export_decoder(folder, tmp_path)
    report = check_parity(folder, result.onnx_path, greedy_steps=4)  # 7-token prompts, window 4
    assert report.ok and max(report.cases.values()) < 1e-4, report.describe()
    metadata = {p.key: p.value for p in onnx.load(str(result.onnx_path)).metadata_props}
    assert json.loads(metadata[LAYER_WINDOWS_KEY]) == [None, 4]


def test_layer_kinds_without_a_full_cache_are_refused():
    from types import SimpleNamespace

    with pytest.raises(StageError, match="chunked_attention"):
        onnx_export._check_supported(SimpleNamespace(layer_types=["full_attention", "chunked_attention"]))
    with pytest.raises(StageError, match="bidirectional"):
        onnx_export._check_supported(SimpleNamespace(use_bidirectional_attention=True))
    onnx_export._check_supported(SimpleNamespace(layer_types=["sliding_attention", "full_attention"]))
