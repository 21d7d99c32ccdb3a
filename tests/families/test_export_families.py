"""Every family through the export side: export with KV cache, parity, the fused graph, int8 /
int4, the TensorRT op check and ONNX Runtime GenAI, from checkpoints transformers wrote.

Each case is a family's published shape cut to 2 layers (conftest.cut) with what makes it
itself kept, and a sliding window of WINDOW tokens wherever the family has one, so every
prompt here is longer than the window: one `sliding_window` for every layer (Mistral,
Phi-3), per layer through `layer_types` (Gemma 3's real pattern; Qwen2 / Qwen3 with
use_sliding_window). Weights are drawn wider than transformers' init (std 0.2) so logits
are not near-ties and greedy tokens vary: a token comparison then means something.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from slmc import families
from slmc.export.attention import LAYER_WINDOWS_KEY
from slmc.export.fuse import fuse_for_ort
from slmc.export.genai_config import genai_config
from slmc.export.graph_parity import compare_graphs
from slmc.export.io_spec import io_mismatches, read_io
from slmc.export.onnx_export import export_decoder
from slmc.export.parity import check_parity
from slmc.export.quantize import quantize
from slmc.export.trt_ops import prepare_for_tensorrt
from slmc.runtime.stepper import Decoder

from .conftest import BOS, EOS, PAD, cut, write_tokenizer

torch.set_num_threads(1)

WINDOW = 5
MAX_SEQ_LEN = 64
"""export.max_seq_len of these bundles: sizes the fused rotary caches."""


def _phi4_partial_rotary() -> dict:
    """Phi-4-mini's layout at head_dim 64: 3/4 of each head rotates (48 channels, what
    GroupQueryAttention's kernels can take), longrope with distinct short and long factors."""
    config = cut("phi-4-mini")
    pairs = int(64 * config["partial_rotary_factor"]) // 2
    config.update(hidden_size=192, num_attention_heads=3, num_key_value_heads=1, intermediate_size=128,
                  sliding_window=WINDOW, rope_scaling={
                      "type": "longrope", "long_factor": [2.0] * pairs,
                      "short_factor": [1.0 + i / pairs for i in range(pairs)]})
    return config


CASES: dict[str, tuple[str, object]] = {
    # name: (family, config) -- what each case exercises is in its comment
    "llama": ("llama", lambda: cut("llama-3.2-1b")),  # llama3 RoPE scaling, tied embedding, GQA 4:1
    "qwen2": ("qwen2", lambda: {**cut("qwen2.5-0.5b"), "use_sliding_window": True, "sliding_window": WINDOW,
                                "max_window_layers": 1}),  # q/k/v biases; layer 1 slides (layer_types)
    "qwen3": ("qwen3", lambda: {**cut("qwen3-0.6b"), "use_sliding_window": True, "sliding_window": WINDOW,
                                "max_window_layers": 1}),  # qk-norm; layer 1 slides
    "gemma3": ("gemma3", lambda: {**cut("gemma-3-1b"), "sliding_window": WINDOW, "query_pre_attn_scalar": 24,
                                  "final_logit_softcapping": 30.0}),
    # ^ sliding + full layers with their own RoPE bases, qk-norm after the transpose, queries scaled by
    #   24 ** -0.5 (not head_dim's), sandwich norms, embeddings scaled, logits soft-capped
    "phi3": ("phi3", lambda: {**cut("phi-3-mini-4k"), "sliding_window": WINDOW}),  # fused qkv / gate_up
    "phi3-partial": ("phi3", _phi4_partial_rotary),  # partial rotary + longrope, tied
    "mistral": ("mistral", lambda: {**cut("mistral-7b-v0.1"), "sliding_window": WINDOW}),
}


def _expected_windows(config) -> list[int | None]:
    """Per layer: transformers' own view of which layers slide (config.layer_types, or the one
    sliding_window a Mistral / Phi-3 config applies to every layer)."""
    window = getattr(config, "sliding_window", None)
    layer_types = getattr(config, "layer_types", None)
    if layer_types:
        return [window if t == "sliding_attention" else None for t in layer_types]
    return [window] * config.num_hidden_layers


def build(folder: Path, config: dict) -> Path:
    from transformers import AutoConfig, AutoModelForCausalLM

    values = {k: v for k, v in config.items() if k not in ("model_type", "architectures", "auto_map")}
    hf_config = AutoConfig.for_model(config["model_type"], **values)
    hf_config.architectures = config["architectures"]
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(hf_config)
    # Gemma scales embeddings by sqrt(hidden): its (tied) table is drawn that much narrower, or the
    # input token's own embedding dominates the tied output layer and greedy decoding repeats it
    scaled = families.for_model_type(config["model_type"]).embedding_scale == "sqrt_hidden"
    with torch.no_grad():
        for name, param in model.named_parameters():
            if param.dim() == 2:
                param.normal_(0.0, 0.2 / (config["hidden_size"] ** 0.5 if scaled and "embed" in name else 1.0))
    model.save_pretrained(str(folder))
    write_tokenizer(folder)
    return folder


class Case:
    """One family case: its checkpoint, export and fused graph, each made once when first asked."""

    def __init__(self, name: str, root: Path):
        self.name, self.root = name, root
        self.family = families.get(CASES[name][0])
        self._checkpoint = self._export = self._fused = None
        self._model = None

    @property
    def checkpoint(self) -> Path:
        if self._checkpoint is None:
            self._checkpoint = build(self.root / "checkpoint", CASES[self.name][1]())
        return self._checkpoint

    @property
    def model(self):
        from slmc.export.onnx_export import load_checkpoint

        if self._model is None:
            self._model = load_checkpoint(self.checkpoint)
        return self._model

    @property
    def export(self):
        if self._export is None:
            self._export = export_decoder(self.checkpoint, self.root / "export")
        return self._export

    @property
    def fused(self):
        """(path, FuseReport) of the export fused for ONNX Runtime, rotary caches at MAX_SEQ_LEN."""
        if self._fused is None:
            path = self.root / "fused.onnx"
            self._fused = (path, fuse_for_ort(self.export.onnx_path, path, model_info=self.export.model,
                                              max_seq_len=MAX_SEQ_LEN))
        return self._fused


@pytest.fixture(scope="module")
def cases(tmp_path_factory):
    made: dict[str, Case] = {}

    def get(name: str) -> Case:
        if name not in made:
            made[name] = Case(name, tmp_path_factory.mktemp(name))
        return made[name]

    return get


def _torch_logits(model, ids: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model(input_ids=torch.from_numpy(ids), use_cache=False).logits.numpy()


def _prefill_then_decode(decoder: Decoder, ids: np.ndarray, prefill: int, loop: str) -> np.ndarray:
    """Logits of every position: `prefill` tokens at once, then one token per step with the past."""
    stepper = decoder.stepper(1, capacity=ids.shape[1], loop=loop)
    out = [stepper.logits(ids[:, :prefill], np.ones((1, prefill), np.int64), np.arange(prefill)[None])]
    for pos in range(prefill, ids.shape[1]):
        # copied: the shared-buffer loop returns a view of its step buffer, valid until the next call
        out.append(np.array(stepper.logits(ids[:, pos:pos + 1], np.ones((1, pos + 1), np.int64), np.asarray([[pos]]))))
    return np.concatenate(out, axis=1)


@pytest.mark.parametrize("name", list(CASES))
def test_export_matches_transformers(cases, name):
    """Prefill, decode with past, left-padded batch and greedy tokens (slmc.export.parity, which
    drives slmc.runtime); every prompt there is longer than WINDOW."""
    case = cases(name)
    exported = case.export
    assert exported.model["architecture"] in case.family.model_types and exported.exporter == "dynamo"
    report = check_parity(case.checkpoint, exported.onnx_path, greedy_steps=10)
    assert report.ok, report.describe()
    assert max(report.cases.values()) < 1e-4, report.cases
    assert len(set(report.greedy_torch)) > 1, report.greedy_torch  # tokens that vary: the comparison means something
    metadata = {p.key: p.value for p in onnx.load(str(exported.onnx_path), load_external_data=False).metadata_props}
    expected = _expected_windows(case.model.config)
    if any(expected):
        assert json.loads(metadata[LAYER_WINDOWS_KEY]) == expected
    else:
        assert LAYER_WINDOWS_KEY not in metadata


@pytest.mark.parametrize("name", [n for n in CASES if CASES[n][0] != "llama"])
def test_sliding_windows_are_exact_past_the_window(cases, name):
    """A 4x-window prompt, prefilled and decoded with the full KV cache the bundle keeps, gives
    transformers' logits; with the window lifted transformers' own logits change, so the
    agreement shows the window is applied (export and fused graph, shared-buffer loop)."""
    case = cases(name)
    ids = np.random.default_rng(1).integers(0, 256, (1, 4 * WINDOW))
    reference = _torch_logits(case.model, ids)
    unpadded = _prefill_then_decode(Decoder.open(case.export.onnx_path), ids, prefill=2 * WINDOW + 1, loop="numpy")
    fused = _prefill_then_decode(Decoder.open(case.fused[0]), ids, prefill=WINDOW + 2, loop="shared")
    assert np.abs(unpadded - reference).max() < 1e-4
    assert np.abs(fused - reference).max() < 1e-4
    model = case.model
    window = model.config.sliding_window
    try:
        model.config.sliding_window = 10 * ids.shape[1]
        lifted = _torch_logits(model, ids)
    finally:
        model.config.sliding_window = window
    assert np.abs(lifted[:, :WINDOW] - reference[:, :WINDOW]).max() < 1e-5  # inside the window: the same
    assert np.abs(lifted[:, WINDOW:] - reference[:, WINDOW:]).max() > 1e-2  # past it: the window matters


@pytest.mark.parametrize("name", list(CASES))
def test_fused_graph_has_group_query_attention_in_every_layer(cases, name):
    """GroupQueryAttention per layer (local_window_size on sliding layers, the query scale, qk-norm
    outside, partial rotary through the cos/sin width), one shared KV buffer, and the export's
    logits through slmc.runtime's loops, the shared-buffer one included (fuse's post-condition)."""
    case = cases(name)
    path, report = case.fused
    layers = case.export.model["num_hidden_layers"]
    assert report.attention_layers == layers and report.kv_share_buffer, report.notes
    assert set(report.parity) >= {"prefill", "decode_with_past", "left_padded_batch2", "shared_kv_buffer"}
    windowed = any(_expected_windows(case.model.config))
    assert ("tokens_past_window" in report.parity) == windowed  # a past longer than the window, checked
    assert max(report.parity.values()) < 1e-4, report.parity
    assert io_mismatches(read_io(path), case.export.io) == []
    graph = onnx.load(str(path))
    gqa = [n for n in graph.graph.node if n.op_type == "GroupQueryAttention"]
    attrs = [{a.name: onnx.helper.get_attribute_value(a) for a in n.attribute} for n in gqa]
    expected = _expected_windows(case.model.config)
    assert sorted(a.get("local_window_size", -1) for a in attrs) == sorted(w or -1 for w in expected)
    scale = case.model.model.layers[0].self_attn.scaling
    assert all(abs(a["scale"] - scale) < 1e-6 for a in attrs)
    caches = {i.name: tuple(i.dims) for i in graph.graph.initializer if i.name.startswith("slmc_rope_cos_cache")}
    parameters = case.model.config.rope_parameters
    factor = parameters.get("partial_rotary_factor", 1.0) if "rope_type" in parameters else 1.0
    rotary = int(case.export.model["head_dim"] * factor)
    assert caches and all(shape == (MAX_SEQ_LEN, rotary // 2) for shape in caches.values()), caches
    # Gemma 3's local and global layers rotate with their own bases: two caches
    assert len(caches) == (2 if case.family.name == "gemma3" else 1)


@pytest.mark.parametrize("precision", ["int8", "int4"])
@pytest.mark.parametrize("name", list(CASES))
def test_quantized_fused_graph(cases, name, precision, tmp_path):
    """int8 (MatMulInteger) / int4 (MatMulNBits) of the fused graph, lm_head included: the bundle I/O,
    the shared KV buffer, and logits that follow fp32's. (Random weights have no margins: int4's
    top-1 agreement on them says little, so the bound is on the logits' correlation; a broken
    graph's is near 0.)"""
    case = cases(name)
    fused, _ = case.fused
    out = tmp_path / f"{precision}.onnx"
    report = quantize(fused, out, precision=precision, target="ort")
    assert io_mismatches(read_io(out), case.export.io) == []
    op = {"int8": "MatMulInteger", "int4": "com.microsoft::MatMulNBits"}[precision]
    linear = 4 * case.export.model["num_hidden_layers"] + 1  # o, gate/up (fused or packed), down per layer; lm_head
    assert report.ops_after.get(op, 0) >= linear, report.ops_after
    # no float weight product left, the (tied or not) lm_head included
    assert "MatMul" not in report.ops_after and "com.microsoft::FusedMatMul" not in report.ops_after, report.ops_after
    parity = compare_graphs(fused, out, shared_buffer=True, quantized=True, max_positions=MAX_SEQ_LEN)
    assert parity.diffs["shared_kv_buffer"] < 1e-4, parity.describe()
    ids = np.random.default_rng(2).integers(0, 256, (1, 24))
    a = Decoder.open(fused).stepper(1, capacity=24).logits(ids, np.ones_like(ids), np.arange(24)[None])
    b = Decoder.open(out).stepper(1, capacity=24).logits(ids, np.ones_like(ids), np.arange(24)[None])
    correlation = float(np.corrcoef(a.ravel(), b.ravel())[0, 1])
    assert correlation > (0.98 if precision == "int8" else 0.8), correlation


@pytest.mark.parametrize("name", list(CASES))
def test_tensorrt_graph_passes_the_static_op_check(cases, name, tmp_path):
    """prepare_for_tensorrt keeps the export's logits and leaves only ops both pinned TensorRT
    versions' ONNX parsers take (sliding masks, qk-norm, partial rotary, soft-capping included)."""
    case = cases(name)
    out = tmp_path / "trt.onnx"
    report = prepare_for_tensorrt(case.export.onnx_path, out, trt_version="10.3")
    assert report.problems == [], [str(p) for p in report.problems]
    assert max(report.parity.values()) < 1e-4, report.parity
    from slmc.export.trt_ops import check_trt_ops

    assert check_trt_ops(out, "10.15") == []
    assert not any("::" in op for op in report.ops_after), report.ops_after


@pytest.mark.parametrize("recorded", [[WINDOW + 1] * 2, None])
def test_a_wrong_window_fails_the_fusions_own_parity_check(cases, tmp_path, recorded):
    """The fusion trusts the windows the export recorded; its post-condition runs a past longer
    than the window, so a wrong or missing record fails the step instead of shipping."""
    from slmc.errors import StageError

    export = cases("mistral").export
    model = onnx.load(str(export.onnx_path))
    kept = [p for p in model.metadata_props if p.key != LAYER_WINDOWS_KEY]
    del model.metadata_props[:]
    model.metadata_props.extend(kept)
    if recorded is not None:
        onnx.helper.set_model_props(model, {**{p.key: p.value for p in kept}, LAYER_WINDOWS_KEY: json.dumps(recorded)})
    tampered = tmp_path / "tampered.onnx"
    onnx.save(model, str(tampered))
    with pytest.raises(StageError, match="logits differ"):
        fuse_for_ort(tampered, tmp_path / "fused.onnx", model_info=export.model, max_seq_len=MAX_SEQ_LEN)


@pytest.mark.parametrize("name,why", [
    ("phi-4-mini", "multiple of 16"),  # head_dim 16 at 3/4 rotary: 12 rotated channels per head
    ("phi3-partial-long", "longrope switches to its long factors past 4096"),  # rotary caches past 4096
])
def test_attention_gqa_cannot_express_stays_unfused_exact_and_reported(cases, tmp_path, name, why):
    """Where GroupQueryAttention cannot compute a layer exactly, the graph keeps that layer's own
    attention (lowered to MultiHeadAttention, mask included), no shared KV buffer is claimed, the
    logits are still the export's, and the report says which layers and why."""
    if name == "phi3-partial-long":  # the fusable case, but serving past original_max_position_embeddings
        export = cases("phi3-partial").export
    else:
        case_dir = tmp_path / name
        export = export_decoder(build(case_dir, {**cut(name), "sliding_window": WINDOW}), case_dir / "export")
    out = tmp_path / "fused.onnx"
    report = fuse_for_ort(export.onnx_path, out, model_info=export.model, max_seq_len=None if "long" in name else 64)
    layers = export.model["num_hidden_layers"]
    assert report.attention_layers == 0 and not report.kv_share_buffer
    assert report.fusions.get("MultiHeadAttention") == layers
    assert f"not fused in {layers} of {layers} layers" in report.notes[0] and why in report.notes[0], report.notes
    assert max(report.parity.values()) < 1e-4, report.parity
    assert "slmc.kv_share_buffer" not in {p.key for p in onnx.load(str(out), load_external_data=False).metadata_props}


def _genai_tokens(folder: Path, prompt: list[int], steps: int) -> list[int]:
    og = pytest.importorskip("onnxruntime_genai")
    model = og.Model(str(folder))
    params = og.GeneratorParams(model)
    params.set_search_options(max_length=len(prompt) + steps, do_sample=False)
    generator = og.Generator(model, params)
    generator.append_tokens(prompt)
    tokens = []
    while not generator.is_done():
        generator.generate_next_token()
        tokens.append(int(generator.get_next_tokens()[0]))
    return tokens


@pytest.mark.parametrize("name", list(CASES))
def test_onnxruntime_genai_decodes_like_transformers(cases, name, tmp_path):
    """GenAI opens a bundle-shaped folder (graph, tokenizer, genai_config.json with the family's
    GenAI type) as is, and its greedy tokens equal transformers' generate, for the export and for
    the fused graph with its shared KV buffer; the prompt + tokens run past the window."""
    case = cases(name)
    prompt = np.random.default_rng(3).integers(0, 256, 3 * WINDOW).tolist()
    steps = 2 * WINDOW
    ids = torch.tensor([prompt])
    with torch.no_grad():
        expected = case.model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=steps,
                                       do_sample=False, pad_token_id=PAD, eos_token_id=None)[0, len(prompt):].tolist()
    assert len(set(expected)) > 1, expected
    for graph, shares in ((case.export.onnx_path, False), (case.fused[0], True)):
        folder = tmp_path / graph.stem
        folder.mkdir()
        shutil.copy(graph, folder / "model.onnx")
        for file in ("tokenizer.json", "tokenizer_config.json"):
            shutil.copy(case.checkpoint / file, folder / file)
        config = genai_config(model=case.export.model, io=case.export.io, eos_token_ids=[EOS], bos_token_id=BOS,
                              pad_token_id=PAD, max_seq_len=MAX_SEQ_LEN)
        assert config["model"]["type"] == case.family.genai_type
        config["search"]["past_present_share_buffer"] = shares  # what the package stage writes for this graph
        (folder / "genai_config.json").write_text(json.dumps(config))
        assert _genai_tokens(folder, prompt, steps) == expected, graph.name
