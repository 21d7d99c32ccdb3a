"""Which ONNX operators the ONNX-TensorRT parser supports, per TensorRT release (data only).

Source: the operator support matrix `docs/operators.md` in the onnx-tensorrt
repository (github.com/onnx/onnx-tensorrt), one per release branch; an op is
listed here when its "Supported" column reads Y.

- "10.3" (JetPack 6.1/6.2): branch `10.1-GA` (commit 96e78110, 2024-06-17),
  docs/operators.md, plus docs/Changelog.md for 10.2 ("minor changes to op
  importers for GRU and Squeeze") and 10.3 ("tensor axes inputs for Slice
  nodes"): neither adds or removes an operator, so the 10.1 table holds for
  10.3 with Slice's "axes must be an initializer" lifted.
- "10.15" (newest 10.x found, "TensorRT 10.15 GA Release - 2026-2-2"):
  docs/operators.md on `main`; it adds Attention, BlackmanWindow,
  HammingWindow, HannWindow, RMSNormalization, RotaryEmbedding, STFT and
  TensorScatter to the 10.3 set (10.4: window ops; 10.5: STFT; 10.15:
  RotaryEmbedding, RMSNormalization, TensorScatter per the changelog).

Only the default ONNX domain is covered: ops of any other domain (com.microsoft
contrib ops such as MatMulNBits) are unsupported unless a plugin supplies them.
"""

from __future__ import annotations

_TRT_10_3 = frozenset("""
Abs Acos Acosh Add And ArgMax ArgMin Asin Asinh Atan Atanh AveragePool BatchNormalization
Cast CastLike Ceil Celu Clip Concat Constant ConstantOfShape Conv ConvTranspose Cos Cosh
CumSum DeformConv DepthToSpace DequantizeLinear Div Dropout Einsum Elu Equal Erf Exp Expand
EyeLike Flatten Floor Gather GatherElements GatherND Gelu Gemm GlobalAveragePool GlobalLpPool
GlobalMaxPool Greater GreaterOrEqual GridSample GroupNormalization GRU HardSigmoid HardSwish
Hardmax Identity If ImageScaler InstanceNormalization IsInf IsNaN LayerNormalization LeakyRelu
Less LessOrEqual Log LogSoftmax Loop LRN LSTM LpNormalization LpPool MatMul Max MaxPool Mean
MeanVarianceNormalization Min Mish Mod Mul Neg NonMaxSuppression NonZero Not OneHot Or Pad
ParametricSoftplus Pow PRelu QuantizeLinear RandomNormal RandomNormalLike RandomUniform
RandomUniformLike Range Reciprocal ReduceL1 ReduceL2 ReduceLogSum ReduceLogSumExp ReduceMax
ReduceMean ReduceMin ReduceProd ReduceSum ReduceSumSquare Relu Reshape Resize ReverseSequence
RNN RoiAlign Round ScaledTanh Scan Scatter ScatterElements ScatterND Selu Shape Shrink Sigmoid
Sign Sin Sinh Size Slice Softmax Softplus Softsign SpaceToDepth Split Sqrt Squeeze Sub Sum Tan
Tanh ThresholdedRelu Tile TopK Transpose Trilu Unsqueeze Upsample Where Xor
""".split())

_TRT_10_15 = _TRT_10_3 | frozenset("""
Attention BlackmanWindow HammingWindow HannWindow RMSNormalization RotaryEmbedding STFT TensorScatter
""".split())

#: TensorRT major.minor -> inclusive range of default-domain opset versions the parser reads
#: (the tables' headers: "opset 9 to opset 20" on 10.1-GA, "opset 9 to opset 24" for 10.15).
OPSET_RANGE: dict[str, tuple[int, int]] = {"10.3": (9, 20), "10.15": (9, 24)}

#: TensorRT major.minor -> ONNX ops (default domain) its parser supports.
SUPPORTED_OPS: dict[str, frozenset[str]] = {"10.3": _TRT_10_3, "10.15": _TRT_10_15}

#: Ops listed with N in those tables that an LLM export or a quantizer may emit,
#: with the table's note; used to word the problem report.
KNOWN_UNSUPPORTED: dict[str, str] = {
    "MatMulInteger": "dynamic int8 (ORT) op; TensorRT needs the QDQ form",
    "DynamicQuantizeLinear": "dynamic int8 (ORT) op; TensorRT needs the QDQ form",
    "QLinearMatMul": "QOperator form; TensorRT needs the QDQ form",
    "ConvInteger": "integer op; TensorRT needs the QDQ form",
    "Bernoulli": "random op not implemented", "Multinomial": "random op not implemented",
    "Unique": "not implemented", "Compress": "not implemented",
    "SequenceAt": "sequence ops not implemented", "SequenceConstruct": "sequence ops not implemented",
    "SplitToSequence": "sequence ops not implemented", "ConcatFromSequence": "sequence ops not implemented",
}

_REDUCE = ("ReduceL1", "ReduceL2", "ReduceLogSum", "ReduceLogSumExp", "ReduceMax", "ReduceMean",
           "ReduceMin", "ReduceProd", "ReduceSum", "ReduceSumSquare")

#: op -> input indices the table says must be build-time constants
#: ("must be an initializer" / "must be a constant tensor" / "resolvable to a constant").
_CONSTANT_10_3 = {"Squeeze": (1,), "Unsqueeze": (1,), "CumSum": (1,), "OneHot": (1,),
                  "Pad": (3,), **{op: (1,) for op in _REDUCE}}
_CONSTANT_10_15 = {k: v for k, v in _CONSTANT_10_3.items() if k != "Pad"}  # 10.4: tensor axes for Pad
CONSTANT_INPUTS: dict[str, dict[str, tuple[int, ...]]] = {"10.3": _CONSTANT_10_3, "10.15": _CONSTANT_10_15}

#: Element types allowed on the quantized side of QuantizeLinear/DequantizeLinear
#: ("Supported Types" of DequantizeLinear; UINT8 is only a network I/O type).
QDQ_TYPES: dict[str, frozenset[str]] = {
    "10.3": frozenset({"INT8", "FLOAT8E4M3FN", "INT4"}),
    "10.15": frozenset({"INT8", "FLOAT8E4M3FN", "INT4", "FLOAT4E2M1"}),
}
