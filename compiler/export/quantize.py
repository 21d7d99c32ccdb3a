"""Post-training quantization of an exported decoder, in the format its runtime reads.

Every path uses onnxruntime's maintained quantization tools; slmc only picks the
tool and its settings per (precision, target) and checks the result (the bundle's
I/O contract, as a post-condition of the `Quantize` pass, export.passes):

| target   | precision | format          | tool                                                   |
|----------|-----------|-----------------|--------------------------------------------------------|
| ort      | int8      | MatMulInteger   | quantize_dynamic, per-channel symmetric int8 weights   |
|          |           |                 | (embedding: 8-bit Gather + DequantizeLinear)           |
| ort      | int4      | MatMulNBits     | MatMulNBitsQuantizer, block-wise weight-only, one of   |
|          |           |                 | its algorithms (INT4_ALGOS); embedding: RTN            |
|          |           |                 | GatherBlockQuantized, ORT >= 1.20                      |
| ort      | fp16      | fp16-cast       | transformers.float16.convert_float_to_float16          |
| tensorrt | int8      | QDQ             | quantize_static, QDQ, symmetric int8 (zero points 0)   |
| tensorrt | fp16/bf16 | builder-flag    | none: the engine builder casts (trtexec --fp16/--bf16) |

Not supported, with a reason: ort + bf16 (the CPU execution provider has no
bf16 MatMul kernel: a bf16 MatMul graph fails to load with NOT_IMPLEMENTED) and
tensorrt + int4 (TensorRT needs int4 as QDQ weight-only, which is not built
here; MatMulNBits is a com.microsoft op TensorRT cannot parse).
"""

from __future__ import annotations

import contextlib
import io
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import onnx
import onnx_ir as ir
from onnxruntime.quantization import CalibrationDataReader

from slmc.errors import StageError
from slmc.runtime.session import SHARE_BUFFER_KEY

from .io_spec import KV_NAME_PREFIXES
from .onnx_files import copy_onnx, data_file, load_model, model_bytes, needs_external_data, op_histogram, save_model
from .passes import IO, DecoderPipeline
from .tie import UntieLmHead, share_quantized_embedding

#: GatherBlockQuantized over uint8 4-bit data (`bits`), which a tied int4 table stored once needs
#: (1.22 refuses the attribute); graphs fused to share their KV buffer need 1.32 anyway
TIED_INT4_MIN_ONNXRUNTIME = "1.23"

Precision = Literal["int8", "int4", "fp16", "bf16"]
Target = Literal["ort", "tensorrt"]
Int4Algo = Literal["rtn", "hqq", "gptq", "kquant"]

#: compress.int4_algo -> what onnxruntime's MatMulNBitsQuantizer runs for it. Only rtn (its
#: DefaultWeightOnlyQuantConfig) quantizes a Gather, and only rtn honours is_symmetric here:
#: hqq and kquant always write zero points (hqq's are float), and gptq is run asymmetric because
#: onnxruntime 1.32's symmetric GPTQ re-quantizes its result with a scale of its own (absmax of the
#: GPTQ grid values / 7.5, not GPTQ's scale), moving weights off the grid GPTQ compensated for
#: (measured: mean re-rounding error 0.0025 against a quantization error of 0.0038 on a trained
#: layer; asymmetric: exact). See bench/results/int4-algos-*.md.
INT4_ALGOS = {
    "rtn": "DefaultWeightOnlyQuantConfig: round to nearest per block (min/max, or absmax when symmetric)",
    "hqq": "HQQWeightOnlyQuantConfig: half-quadratic optimisation of scale and zero point, no data",
    "gptq": "GPTQWeightOnlyQuantConfig: rounding that compensates the error on calibration activations",
    "kquant": "KQuantWeightOnlyQuantConfig: llama.cpp's k-quant search for each block's scale and minimum",
}
ASYMMETRIC_INT4_ALGOS = ("hqq", "kquant", "gptq")


@dataclass(frozen=True)
class QuantizeReport:
    """What quantize did: the format chosen, sizes on disk and the ops of the result."""

    precision: str
    target: str
    format: str
    bytes_before: int
    bytes_after: int
    ops_after: dict[str, int]
    external_data: bool
    excluded_nodes: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    block_size: int | None = None
    """int4: weights per quantization block; None for other formats."""
    algo: str | None = None
    """int4: compress.int4_algo, the MatMulNBitsQuantizer algorithm the weights went through."""


def quantization_format(precision: str, target: str, *, calibrated: bool = True) -> str:
    """The module table's format for (precision, target); StageError, with a reason, where there is none."""
    where = f"compress (precision={precision}, target={target})"
    if target not in ("ort", "tensorrt"):
        raise StageError(f"unknown quantization target {target!r}", where=where,
                         fix="use target 'ort' or 'tensorrt'")
    if target == "ort":
        if precision == "bf16":
            raise StageError("bf16 is not supported for ONNX Runtime export here: the CPU execution "
                             "provider has no bf16 MatMul kernels", where=where,
                             fix="use fp16 (GPU) or int8/int4 (CPU) for ORT, or target tensorrt for bf16")
        formats = {"int8": "MatMulInteger", "int4": "MatMulNBits", "fp16": "fp16-cast"}
        if precision not in formats:
            raise StageError(f"unknown precision {precision!r}", where=where, fix="use one of int8, int4, fp16, bf16")
        return formats[precision]
    if precision in ("fp16", "bf16"):
        return "builder-flag"
    if precision == "int4":
        raise StageError("int4 for TensorRT needs QDQ int4 weight-only quantization, which slmc "
                         "does not build; MatMulNBits (ORT's int4) is not a TensorRT op",
                         where=where, fix="use int8 or fp16 for TensorRT targets, or target ort for int4")
    if precision != "int8":
        raise StageError(f"unknown precision {precision!r}", where=where,
                         fix="use one of int8, fp16, bf16 for TensorRT")
    if not calibrated:
        raise StageError("TensorRT int8 (QDQ) needs calibration data to set activation scales",
                         where=where, fix="configure a calibration set for the compress stage")
    return "QDQ"


def lm_head_node(model: onnx.ModelProto) -> str | None:
    """Name of the MatMul that produces `logits` (directly or through one Cast/Add), if any."""
    producers = {out: node for node in model.graph.node for out in node.output}
    node = producers.get("logits")
    for _ in range(3):
        if node is None or node.op_type == "MatMul":
            break
        node = producers.get(node.input[0])
    return node.name if node is not None and node.op_type == "MatMul" else None


def weight_matmuls(model: onnx.ModelProto) -> list[str]:
    """MatMul nodes whose B operand is a weight (initializer): the linear layers, not attention."""
    weights = {init.name for init in model.graph.initializer}
    return [n.name for n in model.graph.node if n.op_type == "MatMul" and n.input[1] in weights]


def _ensure_node_names(model: onnx.ModelProto) -> None:
    """Quantizers select nodes by name; give unnamed nodes stable names."""
    for index, node in enumerate(model.graph.node):
        if not node.name:
            node.name = f"{node.op_type}_{index}"


class _FeedReader(CalibrationDataReader):
    """onnxruntime CalibrationDataReader over an iterable of input dicts (one pass)."""

    def __init__(self, batches: Iterable[dict[str, np.ndarray]], input_names: list[str]):
        self._iter: Iterator[dict[str, np.ndarray]] = iter(batches)
        self._names = input_names

    def get_next(self) -> dict[str, np.ndarray] | None:
        batch = next(self._iter, None)
        if batch is None:
            return None
        missing = [n for n in self._names if n not in batch]
        if missing:
            raise StageError(f"a calibration batch lacks the inputs {missing}",
                             where="compress.calibration",
                             fix="give every decoder input, past_key_values.* included")
        return {n: batch[n] for n in self._names}


def _consume_every_input(model: onnx.ModelProto) -> list[str]:
    """An Identity node on each graph input no node reads (position_ids of a graph fused to
    GroupQueryAttention); returns their names, to be removed after quantizing.

    Hand-written because onnxruntime's k-quant and GPTQ paths (its copy of Intel Neural
    Compressor's ONNXModel.topological_sort) raise KeyError on an input without a consumer.
    """
    read = {name for node in model.graph.node for name in node.input}
    holders = []
    for value in model.graph.input:
        if value.name not in read:
            name = f"slmc_unused_input_{value.name}"
            model.graph.node.append(onnx.helper.make_node("Identity", [value.name], [name + "_out"], name=name))
            holders.append(name)
    return holders


class _ListReader(CalibrationDataReader):
    """The GPTQ quantizer deep-copies its reader and iterates it: a reader over a list, rewound on copy."""

    def __init__(self, feeds: Iterable[dict[str, np.ndarray]]):
        self._feeds = list(feeds)
        self._index = 0

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self._index >= len(self._feeds):
            return None
        self._index += 1
        return self._feeds[self._index - 1]

    def __deepcopy__(self, memo) -> _ListReader:  # the feeds are read-only: no need to copy the arrays
        return _ListReader(self._feeds)


class Quantize(ir.passes.FunctionalPass):
    """onnxruntime's quantization tool for `fmt` (the module table), as a pass.

    The tools read and write ModelProto, not onnx_ir: the model crosses over as a proto in
    memory. MatMulNBitsQuantizer and the fp16 cast hand their result back in memory;
    quantize_dynamic and quantize_static write only to a path, so theirs is read back from
    a temporary folder. `excluded_nodes` holds the nodes left in float after a run.
    """

    def __init__(self, fmt: str, *, block_size: int = 32, symmetric: bool = True, accuracy_level: int = 4,
                 calibration: Iterable[dict[str, np.ndarray]] | None = None, keep_lm_head_float: bool = False,
                 quantize_embedding: bool = True, external: bool = False, where: str = "compress",
                 share_tied_embedding: bool | None = None, algo: Int4Algo = "rtn"):
        self.where, self.fmt, self.block_size, self.symmetric, self.accuracy_level = (
            where, fmt, block_size, symmetric, accuracy_level)
        self.algo = algo
        self.calibration, self.keep_lm_head_float = calibration, keep_lm_head_float
        self.embedding, self.external = quantize_embedding, external
        self.share_tied = share_tied_embedding
        self.excluded_nodes: list[str] = []
        self.notes: list[str] = []

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        tied = None
        if self.fmt in ("MatMulNBits", "MatMulInteger") and not self.keep_lm_head_float:
            untie = UntieLmHead()  # a tied lm_head reads the table through a Transpose, which no quantizer takes
            untie(model)
            tied = untie.tied
        symmetric = self.symmetric and self.algo not in ASYMMETRIC_INT4_ALGOS
        share = tied is not None and self.fmt == "MatMulNBits" and self.embedding and symmetric and (
            self.share_tied if self.share_tied is not None else model.metadata_props.get(SHARE_BUFFER_KEY) == "1")
        proto = ir.to_proto(model)
        _ensure_node_names(proto)
        head = lm_head_node(proto)
        self.excluded_nodes = [head] if self.keep_lm_head_float and head else []
        embedding = [n.name for n in proto.graph.node if n.op_type == "Gather" and n.input[0] == tied.table] \
            if share else []
        if self.fmt == "MatMulNBits":
            if self.algo in ASYMMETRIC_INT4_ALGOS:
                self.notes.append(f"int4_algo={self.algo} writes zero points (asymmetric blocks) whatever "
                                  "compress.symmetric says")
            result = ir.from_proto(self._int4_nbits(proto, exclude=embedding))
            if share and share_quantized_embedding(result.graph, tied):
                self.notes.append("tied embedding stored once: the token lookup reads the lm_head's 4-bit weights "
                                  "(GatherBlockQuantized)")
            elif share:  # the lm_head did not quantize in a shareable form: quantize the table on its own
                result = ir.from_proto(self._int4_nbits(ir.to_proto(result), matmuls=self.algo == "rtn"))
            elif tied is not None and self.embedding and not symmetric:
                self.notes.append("tied embedding stored twice at int4: sharing it needs symmetric lm_head blocks")
            elif tied is not None and self.embedding and self.share_tied is None:
                self.notes.append(f"tied embedding stored twice at int4: sharing it needs onnxruntime >= "
                                  f"{TIED_INT4_MIN_ONNXRUNTIME}, above what this unfused graph requires")
        elif self.fmt == "fp16-cast":
            result = ir.from_proto(self._fp16_cast(proto))
        else:
            with tempfile.TemporaryDirectory(prefix="slmc-quantize-") as tmp:
                path = Path(tmp) / "model.onnx"
                if self.fmt == "MatMulInteger":
                    self._int8_dynamic(proto, path)
                else:
                    self._int8_qdq(proto, path)
                result = load_model(path)
        if tied is not None and self.fmt == "MatMulInteger":
            self.notes.append("tied embedding stored twice at int8: MatMulInteger keeps the lm_head as "
                              "[hidden, vocab], whose columns are the table's rows")
        return ir.passes.PassResult(result, modified=True)

    def ensures(self, model: ir.Model) -> None:
        contrib = sorted(op for op in op_histogram(model) if "::" in op)
        if self.fmt == "QDQ" and contrib:
            raise StageError(f"QDQ quantization produced non-standard ops {contrib}", where=self.where,
                             fix="report this: TensorRT can parse only default-domain ONNX ops")

    def _int8_dynamic(self, model: onnx.ModelProto, out_path: Path) -> None:
        from onnxruntime.quantization import QuantType, quantize_dynamic

        # MatMulConstBOnly (ORT's default here) leaves the attention products
        # (activation x activation) in float. Gather quantizes only an initializer table
        # (the embedding): 8-bit rows (ORT picks uint8, per tensor) and a DequantizeLinear
        # after the Gather, so a step dequantizes the rows it reads, not the table.
        quantize_dynamic(model, out_path, op_types_to_quantize=["MatMul", "Gather"] if self.embedding else ["MatMul"],
                         per_channel=True, weight_type=QuantType.QInt8, nodes_to_exclude=self.excluded_nodes,
                         use_external_data_format=self.external, extra_options={"MatMulConstBOnly": True})

    def _int4_nbits(self, model: onnx.ModelProto, exclude: list[str] = (), matmuls: bool = True) -> onnx.ModelProto:
        from onnxruntime.quantization.matmul_nbits_quantizer import DefaultWeightOnlyQuantConfig

        # Embedding: com.microsoft GatherBlockQuantized (ORT >= 1.20), blocks along the hidden axis.
        # Only the default (RTN) config quantizes a Gather: another algorithm does the MatMuls, RTN the table.
        gather = ("Gather",) if self.embedding else ()
        if self.algo != "rtn" and matmuls:
            model = self._run_nbits(model, self._algo_config(), exclude)
            if not gather:
                return model
        ops = ("MatMul", *gather) if self.algo == "rtn" and matmuls else gather
        config = DefaultWeightOnlyQuantConfig(block_size=self.block_size, is_symmetric=self.symmetric,
                                              accuracy_level=self.accuracy_level, op_types_to_quantize=ops,
                                              quant_axes=(("MatMul", 0), ("Gather", 1)))
        return self._run_nbits(model, config, exclude)

    def _algo_config(self):
        """onnxruntime's config for compress.int4_algo (MatMul only); INT4_ALGOS says what each does."""
        from onnxruntime.quantization import matmul_nbits_quantizer as nbits

        if self.algo == "hqq":
            return nbits.HQQWeightOnlyQuantConfig(block_size=self.block_size, bits=4, op_types_to_quantize=("MatMul",))
        if self.algo == "kquant":
            return nbits.KQuantWeightOnlyQuantConfig(op_types_to_quantize=("MatMul",))
        if self.algo == "gptq":
            if not self.calibration:
                raise StageError("GPTQ needs calibration activations, and none were given", where=self.where,
                                 fix="set compress.calibration_samples > 0 (or compress.int4_algo=rtn|hqq|kquant)")
            # its block_size is how many columns one GPTQ step updates, not the quantization block
            return nbits.GPTQWeightOnlyQuantConfig(calibration_data_reader=_ListReader(self.calibration),
                                                   op_types_to_quantize=("MatMul",))
        raise StageError(f"unknown int4 algorithm {self.algo!r}", where="compress.int4_algo",
                         fix=f"use one of {', '.join(INT4_ALGOS)}")

    def _run_nbits(self, model: onnx.ModelProto, config, exclude: list[str]) -> onnx.ModelProto:
        from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

        # RTN (INC), k-quant and GPTQ read the block, symmetry and accuracy level from the quantizer,
        # not from their config; the default config and HQQ from theirs.
        holders = _consume_every_input(model) if config.algorithm in ("k_quant", "GPTQ") else []
        symmetric = self.symmetric and self.algo not in ASYMMETRIC_INT4_ALGOS
        quantizer = MatMulNBitsQuantizer(model, block_size=self.block_size, is_symmetric=symmetric,
                                         accuracy_level=self.accuracy_level,
                                         nodes_to_exclude=[*self.excluded_nodes, *exclude], algo_config=config)
        with contextlib.redirect_stdout(io.StringIO()):  # RTN/k-quant/GPTQ print a progress bar per MatMul
            quantizer.process()
        quantizer.model.topological_sort()  # what its save_model_to_file does before writing
        result = quantizer.model.model
        kept = [n for n in result.graph.node if n.name not in holders]
        del result.graph.node[:]
        result.graph.node.extend(kept)
        return result

    @staticmethod
    def _fp16_cast(model: onnx.ModelProto) -> onnx.ModelProto:
        from onnxruntime.transformers.float16 import convert_float_to_float16

        # KV cache in fp16 (halves its memory and traffic, per the bundle format's fp16 bundles);
        # logits stay fp32 so sampling and perplexity read the same dtype at every precision.
        return convert_float_to_float16(model, keep_io_types=["logits"], disable_shape_infer=False)

    def _int8_qdq(self, model: onnx.ModelProto, out_path: Path) -> None:
        from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

        weights = {i.name for i in model.graph.initializer}
        names = [i.name for i in model.graph.input if i.name not in weights]
        targets = [n for n in weight_matmuls(model) if n not in self.excluded_nodes]
        # Symmetric int8 on both sides gives zero points of 0, which TensorRT requires;
        # int8 (not uint8) activations because TensorRT's DequantizeLinear reads INT8.
        quantize_static(model, out_path, _FeedReader(self.calibration, names), quant_format=QuantFormat.QDQ,
                        op_types_to_quantize=["MatMul"], nodes_to_quantize=targets, per_channel=True,
                        activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
                        use_external_data_format=self.external,
                        extra_options={"ActivationSymmetric": True, "WeightSymmetric": True,
                                       "UseQDQContribOps": False, "DedicatedQDQPair": False,
                                       "OpTypesToExcludeOutputQuantization": ["MatMul"]})


def _with_kv_dtype(dtype: str):
    """The I/O an fp16 cast must leave: the input's, with the KV cache in `dtype` (logits unchanged)."""

    def expected(io: IO) -> IO:
        return {side: [{**e, "dtype": dtype} if e["name"].startswith(KV_NAME_PREFIXES) else e for e in entries]
                for side, entries in io.items()}

    return expected


def quantize(onnx_in: Path, out_path: Path, *, precision: Precision, target: Target,
             block_size: int = 32, symmetric: bool = True, accuracy_level: int = 4,
             calibration: Iterable[dict[str, np.ndarray]] | None = None,
             keep_lm_head_float: bool = False, quantize_embedding: bool = True,
             external_data: bool | None = None, share_tied_embedding: bool | None = None,
             algo: Int4Algo = "rtn") -> QuantizeReport:
    """Quantize `onnx_in` into `out_path` for `target` (see the module table).

    `keep_lm_head_float` leaves the MatMul producing `logits` unquantized;
    `quantize_embedding` (ORT int8/int4) also quantizes the token embedding table;
    `share_tied_embedding` (int4) stores a tied table once, as the lm_head's MatMulNBits
    weights that the token lookup reads too (export.tie); None does so where the graph already
    needs onnxruntime >= TIED_INT4_MIN_ONNXRUNTIME (a graph fused to share its KV buffer).
    `external_data=None` saves with model.onnx.data when the weights exceed ~100 MB.
    `algo` (int4) is the MatMulNBitsQuantizer algorithm for the linear layers (INT4_ALGOS);
    gptq runs the graph on `calibration` (prefill feeds) to weigh the rounding.
    """
    onnx_in, out_path = Path(onnx_in), Path(out_path)
    where = f"compress (precision={precision}, target={target})"
    fmt = quantization_format(precision, target, calibrated=calibration is not None)
    notes: list[str] = []
    excluded: list[str] = []
    if fmt == "builder-flag":  # nothing to rewrite: the file itself goes on
        copy_onnx(onnx_in, out_path)
        notes.append(f"graph unchanged: {precision} is a TensorRT builder flag "
                     f"(trtexec --{precision}), applied when the engine is built on the device")
        ops = op_histogram(onnx.load(str(out_path), load_external_data=False))
    else:
        model = load_model(onnx_in)
        external = needs_external_data(model) if external_data is None else external_data
        step = Quantize(fmt, block_size=block_size, symmetric=symmetric, accuracy_level=accuracy_level,
                        calibration=calibration, keep_lm_head_float=keep_lm_head_float,
                        quantize_embedding=quantize_embedding, external=external, where=where,
                        share_tied_embedding=share_tied_embedding, algo=algo)
        pipeline = DecoderPipeline([step], where=where,
                                   fix="report this with the model's config.json",
                                   expected_io=_with_kv_dtype("float16") if fmt == "fp16-cast" else None)
        model = pipeline.run(model)
        save_model(model, out_path, external=external)
        ops, excluded = op_histogram(model), step.excluded_nodes
        notes += step.notes
        if fmt == "QDQ":
            notes.append("QDQ on the weight MatMuls only (per-channel weights, per-tensor activations, "
                         "zero points 0); attention products stay in float")
    return QuantizeReport(
        precision=precision, target=target, format=fmt, bytes_before=model_bytes(onnx_in),
        bytes_after=model_bytes(out_path), ops_after=ops, external_data=data_file(out_path).exists(),
        excluded_nodes=excluded, notes=notes, block_size=block_size if fmt == "MatMulNBits" else None,
        algo=algo if fmt == "MatMulNBits" else None)
