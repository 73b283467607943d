"""The int8 pairs ONNX Runtime would move past a data-movement op, written there by the export.

ORT's QDQPropagation moves a per-tensor DequantizeLinear past a MaxPool, Reshape, Transpose, Squeeze, Unsqueeze or
Slice whose output no QuantizeLinear alone reads, writing a QuantizeLinear -> DequantizeLinear pair after the op.
From opset 21 on, that QuantizeLinear states its output_dtype, which ORT's QDQS8ToU8Transformer leaves int8 while it
turns the zero point uint8: ORT 1.32 refuses the model in a default session ("output_dtype INT8 does not match
y_zero_point type UINT8"; int8 activations of a jax2onnx or dynamo export, a Reshape before a float Add). The
export writes that pair itself, with the DequantizeLinear's own scale and zero point: the op's values lie on that
grid already, so the model computes the same numbers, and ORT has nothing left to move.
"""

from __future__ import annotations

import math

import onnx
from onnx import helper
from qtool import outer_references

from .bias import PROPAGATES_DEQUANTIZE

FIRST_OPSET = 21  # QuantizeLinear's output_dtype


def pair_after_moves(model: onnx.ModelProto, opset: int, names) -> None:
    """Write the pair ORT's QDQPropagation would write after each data-movement op reading an int8 per-tensor
    DequantizeLinear (chains of them included); the op's output becomes ``<name>_float`` and the new
    DequantizeLinear writes its name, so every reader (a subgraph's too) reads the pair. ``names``: a
    :class:`.qdq.Names` of the model."""
    if opset < FIRST_OPSET:
        return
    graph = model.graph
    constants = {t.name: t for t in graph.initializer}
    readers: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in (*node.input, *outer_references(node)):
            readers.setdefault(name, []).append(node)
    producers = {name: node for node in graph.node for name in node.output}
    nodes = []
    for node in graph.node:
        nodes.append(node)
        dequantize = producers.get(node.input[0]) if node.input else None
        if node.op_type not in PROPAGATES_DEQUANTIZE or node.domain not in ("", "ai.onnx") \
                or not _int8_per_tensor(dequantize, constants) or _quantized_alone(readers.get(node.output[0], [])):
            continue
        out = node.output[0]
        node.output[0] = names.fresh(f"{out}_float")
        scale, zero_point = dequantize.input[1:3]
        codes = names.fresh(f"{out}_q")
        pair = [helper.make_node("QuantizeLinear", [node.output[0], scale, zero_point], [codes],
                                 name=names.fresh(f"{out}_QuantizeLinear")),
                helper.make_node("DequantizeLinear", [codes, scale, zero_point], [out],
                                 name=names.fresh(f"{out}_DequantizeLinear"))]
        nodes += pair
        producers[out] = pair[1]
    graph.ClearField("node")
    graph.node.extend(nodes)


def _int8_per_tensor(node: onnx.NodeProto | None, constants: dict[str, onnx.TensorProto]) -> bool:
    """An ONNX DequantizeLinear of int8 codes with one scale and zero point, both initializers."""
    if node is None or node.op_type != "DequantizeLinear" or node.domain not in ("", "ai.onnx") or len(node.input) < 3:
        return False
    scale, zero_point = constants.get(node.input[1]), constants.get(node.input[2])
    return scale is not None and zero_point is not None and zero_point.data_type == onnx.TensorProto.INT8 \
        and math.prod(scale.dims) == 1


def _quantized_alone(readers: list[onnx.NodeProto]) -> bool:
    """Read by QuantizeLinear nodes only (ORT moves no pair there)."""
    return bool(readers) and all(node.op_type == "QuantizeLinear" for node in readers)
