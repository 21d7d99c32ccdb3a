"""A tied embedding stored once: the output layer reads the embedding table itself.

The export computes a tied lm_head as `MatMul(hidden, Transpose(table))`, the table being
the initializer the token Gather reads. ONNX Runtime's graph optimizer folds that Transpose
into a second, transposed copy of the table, and saving an optimized graph writes both (for
a 128k-vocabulary 1B model about 1 GB more at fp32). These passes keep one copy:

- `ShareTiedEmbedding` (ONNX Runtime graphs, before ORT's optimizer runs): the lm_head
  becomes com.microsoft `FusedMatMul(hidden, table, transB=1)`, which reads the table as it
  is, so there is nothing left to fold.
- `UntieLmHead` (before quantization): the lm_head gets its own transposed constant again,
  the form ONNX Runtime's quantizers turn into MatMulNBits / MatMulInteger; returns which
  table it came from.
- `share_quantized_embedding` (after int4 quantization): the token lookup becomes
  `GatherBlockQuantized` over the lm_head's MatMulNBits weights (the same blocks along the
  hidden axis, ORT's 4-bit symmetric encoding), so the int4 table is stored once too.
  int8 cannot share: MatMulInteger keeps its weight as [hidden, vocab], and a row of the
  table is a column there. GatherBlockQuantized reads 4-bit uint8 data from onnxruntime 1.23
  on (export.quantize decides where a graph may need that).

TensorRT graphs keep the standard MatMul(Transpose) form.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx_ir as ir

MS_DOMAIN = "com.microsoft"


@dataclass(frozen=True)
class TiedHead:
    """The lm_head node and the embedding table it shares (names, for the graph after a pass)."""

    head: str
    table: str


def _logits_producer(graph: ir.Graph) -> ir.Node | None:
    """The MatMul / FusedMatMul producing `logits` (directly or through Cast/Add/soft-capping ops)."""
    value = next((v for v in graph.outputs if v.name == "logits"), None)
    for _ in range(6):
        node = value.producer() if value is not None else None
        if node is None:
            return None
        if node.op_type in ("MatMul", "FusedMatMul"):
            return node
        if node.op_type not in ("Cast", "Add", "Mul", "Div", "Tanh", "Reshape"):
            return None
        value = next((v for v in node.inputs if v is not None and v.const_value is None), None)
    return None


def _gathered_table(graph: ir.Graph, table: ir.Value) -> bool:
    """Whether a Gather over axis 0 reads `table` (the token embedding)."""
    return any(use.node.op_type == "Gather" and use.idx == 0 and use.node.attributes.get_int("axis", 0) == 0
               for use in table.uses())


def _transposed_table(value: ir.Value | None) -> ir.Value | None:
    """W when `value` = Transpose(W, perm=[1, 0]) of a 2-D initializer W."""
    node = value.producer() if value is not None else None
    if node is None or node.op_type != "Transpose" or node.domain != "":
        return None
    perm = node.attributes.get_ints("perm", None)
    table = node.inputs[0]
    if table.const_value is None or len(table.const_value.shape) != 2 or (perm is not None and list(perm) != [1, 0]):
        return None
    return table


def tied_head(graph: ir.Graph) -> tuple[ir.Node, ir.Value] | None:
    """(lm_head node, embedding table) when the output layer reads the token embedding table."""
    head = _logits_producer(graph)
    if head is None:
        return None
    if head.op_type == "MatMul" and head.domain == "":
        table = _transposed_table(head.inputs[1])
    elif head.op_type == "FusedMatMul" and head.domain == MS_DOMAIN and head.attributes.get_int("transB", 0) == 1 \
            and head.attributes.get_int("transA", 0) == 0 and head.attributes.get_float("alpha", 1.0) == 1.0:
        table = head.inputs[1] if head.inputs[1].const_value is not None else None
    else:
        table = None
    if table is None or not _gathered_table(graph, table):
        return None
    return head, table


class ShareTiedEmbedding(ir.passes.InPlacePass):
    """MatMul(hidden, Transpose(table)) -> FusedMatMul(hidden, table, transB=1); `shared` says if it did."""

    def __init__(self):
        self.shared = False

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        found = tied_head(model.graph)
        self.shared = found is not None and found[0].op_type == "MatMul"
        if self.shared:
            head, table = found
            fused = ir.node("FusedMatMul", [head.inputs[0], table], attributes={"transB": 1, "alpha": 1.0},
                            domain=MS_DOMAIN, name=(head.name or "lm_head") + "_tied")
            _replace_node(model.graph, head, fused)
            if MS_DOMAIN not in model.opset_imports:
                model.opset_imports[MS_DOMAIN] = 1
        return ir.passes.PassResult(model, modified=self.shared)


def _replace_node(graph: ir.Graph, old: ir.Node, new: ir.Node) -> None:
    """Put `new` (one output) in place of `old`: same output name, shape and type, same consumers;
    `old` and a Transpose feeding only it are removed."""
    graph.insert_before(old, new)
    before, after = old.outputs[0], new.outputs[0]
    ir.convenience.replace_all_uses_with(before, after, replace_graph_outputs=True)
    transpose = old.inputs[1].producer() if len(old.inputs) > 1 and old.inputs[1] is not None else None
    graph.remove(old, safe=True)
    if transpose is not None and transpose.op_type == "Transpose" and not transpose.outputs[0].uses():
        graph.remove(transpose, safe=True)
    after.name, after.shape, after.dtype = before.name, before.shape, before.dtype


class UntieLmHead(ir.passes.InPlacePass):
    """A tied lm_head gets its own transposed constant (`MatMul(hidden, table^T)`), which ONNX
    Runtime's quantizers can quantize; `tied` names the head and its table afterwards."""

    def __init__(self):
        self.tied: TiedHead | None = None

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        found = tied_head(model.graph)
        self.tied = None
        if found is None:
            return ir.passes.PassResult(model, modified=False)
        head, table = found
        name = f"{table.name}.transposed_for_lm_head"
        transposed = np.ascontiguousarray(table.const_value.numpy().T)
        weight = ir.Value(name=name, const_value=ir.tensor(transposed, name=name))
        model.graph.register_initializer(weight)
        matmul = ir.node("MatMul", [head.inputs[0], weight], name=(head.name or "lm_head").removesuffix("_tied"))
        _replace_node(model.graph, head, matmul)
        self.tied = TiedHead(head=matmul.name, table=table.name)
        return ir.passes.PassResult(model, modified=True)


def _reshaped(value: ir.Value, shape: list[int], name: str) -> tuple[list[ir.Node], ir.Value]:
    """([Reshape node], its output) viewing `value` as `shape`; ([], value) when it already is."""
    if list(value.const_value.shape) == shape:
        return [], value
    target = ir.Value(name=f"{name}_shape", const_value=ir.tensor(np.asarray(shape, np.int64), name=f"{name}_shape"))
    node = ir.node("Constant", [], attributes={"value": target.const_value}, name=f"{name}_shape")
    reshape = ir.node("Reshape", [value, node.outputs[0]], name=name)
    reshape.outputs[0].name = name
    return [node, reshape], reshape.outputs[0]


def share_quantized_embedding(graph: ir.Graph, tied: TiedHead) -> bool:
    """Token Gather over the float table -> GatherBlockQuantized over the lm_head's MatMulNBits
    weights, when the lm_head was quantized to 4 bits without zero points; returns whether it did.

    MatMulNBits keeps W^T as [vocab, blocks, block / 2] bytes, two 4-bit values per byte (low
    nibble first) with an implied zero point of 8, and scales [vocab * blocks]: row v of the
    table, quantized in blocks along the hidden axis. That is GatherBlockQuantized's uint8 form
    (bits=4, default zero point 8) read as [vocab, bytes] with scales [vocab, blocks].
    """
    nbits = next((n for n in graph if n.op_type == "MatMulNBits" and n.domain == MS_DOMAIN
                  and (n.name or "").startswith(tied.head)), None)
    table = graph.initializers.get(tied.table)
    if nbits is None or table is None:
        return False
    attrs = nbits.attributes
    bits, block, rows, hidden = (attrs.get_int(k, 0) for k in ("bits", "block_size", "N", "K"))
    weights, scales = nbits.inputs[1], nbits.inputs[2]
    zero_points = nbits.inputs[3] if len(nbits.inputs) > 3 else None
    gathers = [u.node for u in table.uses() if u.node.op_type == "Gather" and u.idx == 0]
    if bits != 4 or zero_points is not None or weights.const_value is None or scales.const_value is None \
            or hidden % block or not gathers or len(gathers) != len(table.uses()):
        return False
    blocks = hidden // block
    # MatMulNBits validates its own shapes, so GatherBlockQuantized reads 2-D views of the same
    # initializers through Reshape (folded by ONNX Runtime when the session loads: on disk once)
    nodes, data = _reshaped(weights, [rows, blocks * block // 2], "slmc_tied_table_q4")
    scale_nodes, scales2d = _reshaped(scales, [rows, blocks], "slmc_tied_table_scales")
    for gather in gathers:
        node = ir.node("GatherBlockQuantized", [data, gather.inputs[1], scales2d],
                       attributes={"bits": 4, "block_size": block, "gather_axis": 0, "quantize_axis": 1},
                       domain=MS_DOMAIN, name=(gather.name or "embedding") + "_tied_q4")
        graph.insert_before(gather, [*nodes, *scale_nodes])
        nodes, scale_nodes = [], []
        _replace_node(graph, gather, node)
    graph.initializers.pop(tied.table)
    return True
