"""Deploy stages: export -> optimize | prepare_tensorrt -> compress, with evaluation.

Each stage reads the current model (`results.model`, the ONNX file the previous deploy
stage wrote) and writes its own where the layout says (work/<stage>/model.onnx); the
held-out perplexity of every model that changes weights is measured on the same tokens,
so the cost of each step is visible in metrics and the manifest.
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict
from pathlib import Path

import numpy as np

from ..errors import StageError
from ..layout import LAYOUT
from .base import EVAL_WINDOW, HELDOUT_EVAL_TOKENS, Results
from .progress import step
from .results import CompressResult, DeployResult, ExportResult, OptimizeResult, PrepareTensorrtResult


def heldout_tokens(run_dir: Path, limit: int = HELDOUT_EVAL_TOKENS) -> np.ndarray:
    """The first `limit` held-out token ids: the one evaluation set for every stage."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(run_dir / LAYOUT.tokenizer))
    text = (run_dir / LAYOUT.heldout_text).read_text(encoding="utf-8")
    return np.asarray(tokenizer.encode(text).ids[:limit], dtype=np.int64)


def _rel(path: Path, run_dir: Path) -> str:
    """Run-relative path: results (and the stage cache) must not depend on where the run folder is."""
    return Path(path).relative_to(run_dir).as_posix()


def _window(cfg) -> int:
    return min(EVAL_WINDOW, cfg.export.max_seq_len)


def _onnx_ppl(path: Path, tokens: np.ndarray, cfg) -> float:
    from ..export import onnx_perplexity

    with step(f"held-out perplexity of {path.parent.name}/{path.name} ({len(tokens):,} tokens, onnxruntime)"):
        return onnx_perplexity(path, tokens, window=_window(cfg))


def _output(run_dir: Path, relative: str) -> Path:
    out = run_dir / relative
    out.parent.mkdir(parents=True, exist_ok=True)
    return out


def run_export(cfg, run_dir: Path, results: Results) -> ExportResult:
    from ..export import check_parity, export_decoder, torch_perplexity

    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # per-tensor "Loading weights" bars would drown the stage log
    checkpoint = run_dir / LAYOUT.final_checkpoint
    with step(f"exporting {LAYOUT.final_checkpoint}/ to ONNX (opset {cfg.export.opset})"):
        exported = export_decoder(checkpoint, (run_dir / LAYOUT.export_model).parent, opset=cfg.export.opset)
    if _rel(exported.onnx_path, run_dir) != LAYOUT.export_model:
        raise StageError(f"the exporter wrote {exported.onnx_path}, not {LAYOUT.export_model} as planned",
                         where="export", fix="report this as an slmc bug, with the run folder")
    with step("parity: ONNX vs PyTorch (prefill, decode with past, batch)"):
        parity = check_parity(checkpoint, exported.onnx_path, seed=cfg.seed, tolerance=cfg.export.parity_tolerance)
    if not parity.ok:
        raise StageError(parity.describe(), where="export",
                         fix="report this with the run folder; export.parity_tolerance loosens the check")
    tokens = heldout_tokens(run_dir)
    ppl = _onnx_ppl(exported.onnx_path, tokens, cfg)
    with step(f"held-out perplexity of {LAYOUT.final_checkpoint}/ ({len(tokens):,} tokens, PyTorch)"):
        checkpoint_ppl = torch_perplexity(checkpoint, tokens, window=_window(cfg))
    return ExportResult(
        onnx=LAYOUT.export_model, checkpoint_ppl=checkpoint_ppl, heldout_ppl=ppl,
        heldout_eval_tokens=int(len(tokens)), exporter=exported.exporter, opset=exported.opset,
        nodes=exported.node_count, export_seconds=exported.seconds, io=exported.io, kv_cache=exported.kv_cache,
        model=exported.model, parity=parity.to_dict(), fallback_reason=exported.fallback_reason,
        shipped=_shipped_if_last("export", cfg, run_dir, exported.onnx_path, ppl),
    )


def run_optimize(cfg, run_dir: Path, results: Results) -> OptimizeResult:
    from ..export.optimize import optimize_for_ort
    from .registry import EXPORT

    quiet_onnxruntime_tools()
    model = results[EXPORT].model
    out = _output(run_dir, LAYOUT.optimized_model)
    with step("fusing for ONNX Runtime (attention, norms)"):
        report = optimize_for_ort(results.model_path(run_dir), out, num_heads=model["num_attention_heads"],
                                  hidden_size=model["hidden_size"], model_info=model,
                                  # rotary caches for the positions the bundle serves, not max_position_embeddings
                                  max_seq_len=cfg.export.max_seq_len)
    ppl = _onnx_ppl(out, heldout_tokens(run_dir), cfg)
    return OptimizeResult(onnx=LAYOUT.optimized_model, report=_plain(report), heldout_ppl=ppl,
                          kv_share_buffer=report.kv_share_buffer,
                          shipped=_shipped_if_last("optimize", cfg, run_dir, out, ppl))


def run_prepare_tensorrt(cfg, run_dir: Path, results: Results) -> PrepareTensorrtResult:
    from ..export.trt_ops import prepare_for_tensorrt

    out = _output(run_dir, LAYOUT.tensorrt_model)
    with step(f"standard ops for TensorRT {cfg.device.tensorrt_version}; parser op check"):
        report = prepare_for_tensorrt(results.model_path(run_dir), out, trt_version=cfg.device.tensorrt_version)
    if report.problems:
        listing = "; ".join(f"{p.op_type} ({p.domain or 'ai.onnx'}) at node {p.node_name}: {p.reason}"
                            for p in report.problems[:10])
        raise StageError(f"TensorRT {cfg.device.tensorrt_version}'s ONNX parser would reject "
                         f"{len(report.problems)} node(s): {listing}", where="trt.ops_supported",
                         fix="use compress=fp16 or int8 (static QDQ) for TensorRT; int4 and dynamic int8 are ORT-only")
    # no perplexity of its own: measured with the shipped graph when this graph ships (runtime=tensorrt, fp32)
    return PrepareTensorrtResult(onnx=LAYOUT.tensorrt_model, report=_plain(report),
                                 shipped=_shipped_if_last("prepare_tensorrt", cfg, run_dir, out, None))


def calibration_feeds(cfg, tokens: np.ndarray, kv_cache: dict, samples: int, *, seq: int | None = None,
                      shared_buffer: bool = False):
    """Static-quantization calibration inputs from held-out text (prefill, empty past).

    `shared_buffer`: the graph shares its KV buffer (GroupQueryAttention reads the cache length from
    attention_mask), so each past is a zero buffer as long as the prompt, as SharedStepper binds it.
    """
    seq = seq or min(64, cfg.export.max_seq_len)
    dtype = np.float16 if kv_cache.get("dtype") == "float16" else np.float32
    for i in range(min(samples, len(tokens) // seq)):
        ids = tokens[i * seq:(i + 1) * seq][None]
        feed = {"input_ids": ids, "attention_mask": np.ones_like(ids), "position_ids": np.arange(seq)[None]}
        for layer in range(kv_cache["num_layers"]):
            empty = np.zeros((1, kv_cache["num_key_value_heads"], seq if shared_buffer else 0,
                              kv_cache["head_dim"]), dtype)
            feed[kv_cache["past_key"].format(layer=layer)] = empty
            feed[kv_cache["past_value"].format(layer=layer)] = empty
        yield feed


#: onnxruntime 1.32's k-quant and GPTQ (its copy of Intel Neural Compressor) pack 4-bit zero points
#: across rows when a column has an odd number of blocks, and fail (a reshape error); MatMulNBits
#: wants each row's zero points padded to whole bytes. Those blocks are left out for them.
ZERO_POINT_PACKING_ALGOS = ("kquant", "gptq")


def even_block_sizes(model: Path, sizes: list[int], algo: str) -> list[int]:
    """The block sizes that cut every weight MatMul's input dimension into an even number of blocks."""
    import onnx

    graph = onnx.load(str(model), load_external_data=False).graph
    inits = {i.name: list(i.dims) for i in graph.initializer}
    rows = sorted({inits[n.input[1]][0] for n in graph.node
                   if n.op_type == "MatMul" and len(inits.get(n.input[1], ())) == 2})
    kept = [b for b in sizes if all(-(-k // b) % 2 == 0 for k in rows)]
    if not kept:
        raise StageError(f"compress.int4_algo={algo}: every block size in {sizes} cuts a linear layer's input "
                         f"({', '.join(map(str, rows))}) into an odd number of blocks, which onnxruntime's "
                         f"{algo} cannot pack zero points for", where="compress.block_size",
                         fix="set compress.block_size to one that halves evenly (e.g. 32), or compress.int4_algo=rtn "
                             "or hqq")
    return kept


def gptq_calibration(cfg, run_dir: Path, model: Path, kv_cache: dict) -> list[dict]:
    """compress.int4_algo=gptq: compress.calibration_samples prefill feeds of the training text.

    Training text, not held-out: the held-out perplexity that judges the result must not be
    measured on the text GPTQ fitted its rounding to. Only the start of the file is read and
    tokenized (samples x window tokens, at ~4 bytes a token plus slack).
    """
    import onnx
    from tokenizers import Tokenizer

    from slmc.runtime.session import SHARE_BUFFER_KEY

    seq, samples = _window(cfg), cfg.compress.calibration_samples
    with (run_dir / LAYOUT.train_text).open(encoding="utf-8", errors="replace") as f:
        text = f.read(samples * seq * 16)
    tokens = np.asarray(Tokenizer.from_file(str(run_dir / LAYOUT.tokenizer)).encode(text).ids, dtype=np.int64)
    if len(tokens) < seq:
        raise StageError(f"GPTQ calibration needs at least {seq} tokens of {LAYOUT.train_text}, it has {len(tokens)}",
                         where="compress.int4_algo", fix="give more training text, or use compress.int4_algo=rtn")
    metadata = onnx.load(str(model), load_external_data=False).metadata_props
    shared = any(p.key == SHARE_BUFFER_KEY and p.value == "1" for p in metadata)
    return list(calibration_feeds(cfg, tokens, kv_cache, samples, seq=seq, shared_buffer=shared))


def run_compress(cfg, run_dir: Path, results: Results) -> CompressResult:
    from ..export.quantize import quantize
    from ..rules._facts import int4_block_sizes
    from .registry import EXPORT

    quiet_onnxruntime_tools()
    c = cfg.compress
    tokens = heldout_tokens(run_dir)
    source = results.model_path(run_dir)
    before = results.latest_heldout_ppl()
    out = _output(run_dir, LAYOUT.compressed_model)
    calibration = None
    if cfg.runtime.name == "tensorrt" and c.precision == "int8":
        calibration = list(calibration_feeds(cfg, tokens, results[EXPORT].kv_cache, c.calibration_samples))
    algo = c.int4_algo if c.precision == "int4" else "rtn"
    if algo == "gptq":
        calibration = gptq_calibration(cfg, run_dir, source, results[EXPORT].kv_cache)

    def attempt(block_size: int, path: Path):
        block = f", block {block_size}, {algo}" if c.precision == "int4" else ""
        with step(f"quantizing to {c.precision} for {cfg.runtime.name}{block}"):
            report = quantize(source, path, precision=c.precision, target=cfg.runtime.name, block_size=block_size,
                              symmetric=c.symmetric, accuracy_level=c.accuracy_level, calibration=calibration,
                              algo=algo)
        ppl = _onnx_ppl(path, tokens, cfg) if report.format != "builder-flag" else before
        return report, ppl

    sizes = int4_block_sizes(cfg) if c.precision == "int4" and cfg.runtime.name == "ort" else [32]
    if algo in ZERO_POINT_PACKING_ALGOS:
        sizes = even_block_sizes(source, sizes, algo)
    if len(sizes) == 1:
        report, after = attempt(sizes[0], out)
        trials: list[dict] = []
    else:
        report, after, trials = _tune_block_size(attempt, sizes, c.block_size_tolerance, out)
    increase = after / before - 1.0
    if c.max_ppl_increase is not None and increase > c.max_ppl_increase:
        raise StageError(
            f"held-out perplexity rose {increase:.1%} ({before:.3f} -> {after:.3f}) after {c.precision}, "
            f"over the gate compress.max_ppl_increase={c.max_ppl_increase:g} by {increase - c.max_ppl_increase:.1%}",
            where="compress.max_ppl_increase",
            fix="raise the gate, train longer, or use a gentler precision (int8 before int4)")
    flag = report.format == "builder-flag"
    # a builder flag ships the previous graph, whose own perplexity may not have been measured (TensorRT)
    shipped = _shipped_if_last("compress", cfg, run_dir, out, None if flag else after,
                               note=_BUILDER_FLAG_NOTE.format(precision=c.precision) if flag else None)
    return CompressResult(onnx=LAYOUT.compressed_model, report=_plain(report), heldout_ppl=after,
                          ppl_increase=increase, block_size_trials=trials, shipped=shipped)


_BUILDER_FLAG_NOTE = ("{precision} is a TensorRT builder flag applied when the engine is built on the device: "
                      "these numbers are the shipped ONNX graph's (fp32), the engine's cast is not measured")


def last_model_stage(cfg) -> str:
    """The deploy stage whose graph the bundle ships: the last stage of the plan that writes a model."""
    from .registry import STAGES

    return [s.name for s in STAGES if s.model_out and s.applies(cfg)][-1]


def _shipped_if_last(stage: str, cfg, run_dir: Path, model: Path, ppl: float | None, note: str | None = None):
    """The shipped-graph measurement (`manifest.metrics.parity`) when `stage`'s graph ships, else None."""
    if last_model_stage(cfg) != stage:
        return None
    return measure_shipped_graph(cfg, run_dir, stage, model, ppl, note=note)


def measure_shipped_graph(cfg, run_dir: Path, stage: str, model: Path, ppl: float | None, *,
                          note: str | None = None) -> dict:
    """The graph at `model` (what `stage` wrote) against the fp32 checkpoint: greedy tokens, logits, and
    held-out perplexity (`ppl` when the stage measured it on this graph, else measured here).

    A graph whose logits are not finite is refused: no gate downstream would catch it (NaN passes
    every perplexity comparison).
    """
    from .shipped_parity import measure_shipped

    tokens = heldout_tokens(run_dir)
    if ppl is None:
        ppl = _onnx_ppl(model, tokens, cfg)
    with step(f"the shipped graph ({stage}, {cfg.compress.precision}) vs the fp32 checkpoint: "
              "greedy tokens, logits (slmc.runtime vs PyTorch)"):
        measured = measure_shipped(run_dir / LAYOUT.final_checkpoint, model, tokens, stage=stage,
                                   precision=cfg.compress.precision, max_seq_len=cfg.export.max_seq_len,
                                   heldout_perplexity=ppl, note=note)
    if not measured.finite or not math.isfinite(ppl):
        raise StageError(f"{measured.describe()}; held-out perplexity {ppl}: the graph computes non-finite "
                         "values", where=stage, fix="report this as an slmc bug, with the run folder")
    return measured.to_dict()


def shipped_parity(cfg, run_dir: Path, results: Results) -> dict:
    """`manifest.metrics.parity`: the measurement of the graph the bundle ships.

    The stage that wrote it measured it when it was the plan's last model stage. A stage restored
    from the cache for a config where a later stage followed it (optimize before an int4 compress,
    reused by an fp32 compile) carries none: it is measured now.
    """
    stage, result = next((name, r) for name, r in reversed(results.items()) if isinstance(r, DeployResult))
    if result.shipped is not None:
        return result.shipped
    ppl, note = getattr(result, "heldout_ppl", None), None
    if isinstance(result, CompressResult) and result.builder_flag:
        ppl, note = None, _BUILDER_FLAG_NOTE.format(precision=cfg.compress.precision)  # its ppl: the previous graph's
    return measure_shipped_graph(cfg, run_dir, stage, run_dir / result.onnx, ppl, note=note)


def _tune_block_size(attempt, sizes: list[int], tolerance: float, out: Path):
    """compress.block_size=auto: the largest block (fewest scales, fastest decode) whose held-out
    perplexity is within `tolerance` of the smallest block's; the smallest when none is.

    The smallest block is quantized first as the reference; each candidate is written beside
    `out` and the one kept is copied onto it (the others are deleted).
    """
    from ..export.onnx_files import copy_onnx, data_file

    smallest, larger = sizes[-1], sizes[:-1]
    paths = {b: out.with_name(f"model.block{b}.onnx") for b in sizes}
    reference_report, reference = attempt(smallest, paths[smallest])
    trials = [{"block_size": smallest, "heldout_ppl": reference}]
    chosen = (smallest, reference_report, reference)
    for block in larger:
        report, ppl = attempt(block, paths[block])
        trials.append({"block_size": block, "heldout_ppl": ppl})
        if ppl <= reference * (1.0 + tolerance):
            chosen = (block, report, ppl)
            break
    block, report, ppl = chosen
    copy_onnx(paths[block], out)  # rewrites the external-data file name for the new place
    for path in paths.values():
        for leftover in (path, data_file(path)):
            leftover.unlink(missing_ok=True)
    return _with_path(report, out), ppl, [{**t, "kept": t["block_size"] == block} for t in trials]


def _with_path(report, path: Path):
    """The report of a candidate, with bytes_after measured at the model's final place."""
    from dataclasses import replace

    from ..export.quantize import model_bytes

    return replace(report, bytes_after=model_bytes(path))


def quiet_onnxruntime_tools() -> None:
    """onnxruntime's quantizer calls logging.basicConfig(level=INFO) when imported, and its
    transformer optimizer logs every fusion: keep the compile log to slmc's own lines. The
    quantizer module is imported lazily (after this runs), so its package logger is set too."""
    logging.getLogger().setLevel(logging.WARNING)
    logging.getLogger("onnxruntime").setLevel(logging.WARNING)


def _plain(report) -> dict:
    data = asdict(report)
    return {k: (str(v) if isinstance(v, Path) else v) for k, v in data.items()}
