"""Export: Hugging Face checkpoint -> ONNX decoder with a KV cache, checked and measured."""

from slmc.export.trt_build_script import render_build_engine
from slmc.export.genai_config import genai_config
from slmc.export.io_spec import decoder_io, kv_cache_spec, read_io
from slmc.export.onnx_export import ExportedModel, export_decoder
from slmc.export.parity import ParityReport, check_parity
from slmc.export.optimize import OptimizeReport, optimize_for_ort
from slmc.export.perplexity import onnx_perplexity, torch_perplexity
from slmc.export.quantize import QuantizeReport, quantize
from slmc.export.trt_ops import OpProblem, PrepareReport, check_trt_ops, prepare_for_tensorrt
from slmc.export.trt_profile import trt_profile, trtexec_shape_args

__all__ = [
    "OpProblem",
    "OptimizeReport",
    "PrepareReport",
    "QuantizeReport",
    "check_trt_ops",
    "optimize_for_ort",
    "prepare_for_tensorrt",
    "quantize",
    "render_build_engine",
    "trt_profile",
    "trtexec_shape_args",
    "ExportedModel",
    "ParityReport",
    "check_parity",
    "decoder_io",
    "export_decoder",
    "genai_config",
    "kv_cache_spec",
    "onnx_perplexity",
    "read_io",
    "torch_perplexity",
]
