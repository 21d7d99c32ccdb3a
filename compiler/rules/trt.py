"""TensorRT rules known at config time: the ops a compress choice puts into the graph, the pinned version.

The graph-level check over the real nodes of an exported model runs later, in
the export stage; this rule sees only what the config already implies.
"""

from __future__ import annotations

from ._engine import rule
from ._facts import TRT_REJECTED_OPS, quant_format


def rejected_ops(cfg) -> tuple[str, ...]:
    """Ops that compress.precision / int8_mode would write and TensorRT's ONNX parser rejects."""
    return TRT_REJECTED_OPS.get(quant_format(cfg), ())


def _parser(version: str | None) -> str:
    return f"TensorRT {version}'s ONNX parser" if version else "TensorRT's ONNX parser"


def _int4_fix(d) -> str:
    options = [opt for p, opt in (("int8", "compress=int8 compress.int8_mode=static"), ("fp16", "compress=fp16"))
               if p in d.precisions]
    return "use " + ", or ".join(options) if options else "use compress=none"


@rule("trt.ops_supported")
def ops_supported(rule, cfg, ctx):
    """A TensorRT-bound graph holds only ops the device's onnx-tensorrt parser supports: no MatMulNBits or other com.microsoft ops, no MatMulInteger/DynamicQuantizeLinear, Q/DQ with zero points of 0; device.tensorrt_version is known."""
    if cfg.runtime.name != "tensorrt":
        return
    d, c = cfg.device, cfg.compress
    version = d.tensorrt_version
    if version is None and "tensorrt" in d.runtimes:
        yield rule.violation(
            ("device.tensorrt_version",),
            f"device {d.name} lists tensorrt but does not pin a TensorRT version; engines and the supported-op "
            "matrix depend on it",
            "set device.tensorrt_version (e.g. 10.3 for JetPack 6.1/6.2)",
        )
    ops = rejected_ops(cfg)
    if ops:
        fix = "set compress.int8_mode=static" if c.precision == "int8" else _int4_fix(d)
        yield rule.violation(
            ("compress.precision", "compress.int8_mode", "runtime.name"),
            f"compress={c.name} ({quant_format(cfg)}) would put {', '.join(ops)} into the graph; "
            f"{_parser(version)} rejects {'it' if len(ops) == 1 else 'them'}",
            f"{fix}, or runtime=ort" if "ort" in d.runtimes else fix,
        )
    if quant_format(cfg) == "int8-static" and not c.symmetric:
        yield rule.violation(
            ("compress.symmetric",),
            "TensorRT's QuantizeLinear/DequantizeLinear need zero points of 0, but compress.symmetric=false "
            "gives asymmetric int8 with non-zero zero points",
            "set compress.symmetric=true",
        )
