"""A mean over every spatial axis, written as the GlobalAveragePool ONNX Runtime has an integer kernel for.

``ReduceMean(x, axes = 2..rank-1, keepdims = 1)`` computes exactly ``GlobalAveragePool(x)``. Between a
DequantizeLinear and a QuantizeLinear (a squeeze-excitation block's pooling: its input and the Conv that reads
it are quantized), ORT fuses only the second into an integer kernel, QLinearGlobalAveragePool, which its NHWC
layout also keeps channels-last; a ReduceMean runs in float between the pair, its input dequantized. Measured on
ORT 1.32 (zoo ``mobilenetv3-mini``, 1 thread, fastest of 900 interleaved runs): 0.170 -> 0.146 ms, float 0.100.

Only where the pooled area is known and at least 16 values: laid out channels-first, ORT's integer kernel pays
about 10 ns a channel, and on a 1280 x 1 x 1 input it took 13.3 us where DequantizeLinear -> ReduceMean ->
QuantizeLinear took 4.2 (320 x 4 x 4: 1.8 against 3.1). A ReduceMean with ``keepdims = 0`` (a classifier's
pooling before its Gemm) stays: GlobalAveragePool keeps the axes, and the Flatten and second pair it then needs
made ``mobilenetv2-w0.25`` slower (0.112 -> 0.121 ms, its 1280-channel pooling laid out channels-first).
"""

from __future__ import annotations

import math

import onnx
from onnx import helper, numpy_helper
from qtool import shape_only_tensor, to_model_proto

EIGHT_BIT = frozenset({onnx.TensorProto.UINT8, onnx.TensorProto.INT8})
SMALLEST_AREA = 16  # pooled values per channel below which ORT's channels-first integer kernel loses


def global_pools(nodes: list[onnx.NodeProto], graph, initializers: dict[str, onnx.TensorProto]) -> list[onnx.NodeProto]:
    """``nodes`` with every ReduceMean that ORT would run in float between an 8-bit DequantizeLinear and
    QuantizeLinear, and that is a GlobalAveragePool, written as one (same name, input and output).

    ``graph``: qtool's graph (the ReduceMean's input shape: the model's, else calibration's, else ONNX shape
    inference's), ``initializers``: the model's, by name."""
    producers = {name: node for node in nodes for name in node.output}
    readers: dict[str, list[onnx.NodeProto]] = {}
    for node in nodes:
        for name in node.input:
            readers.setdefault(name, []).append(node)
    candidates = {node.name: rank for node in nodes if node.op_type == "ReduceMean" and node.domain in ("", "ai.onnx")
                  and _between_pair(node, producers, readers, initializers)
                  and (rank := _pooled_rank(node, initializers)) is not None}
    shapes = _input_shapes(graph, candidates)
    return [helper.make_node("GlobalAveragePool", [node.input[0]], list(node.output), name=node.name)
            if node.name in candidates and _pools_enough(shapes.get(node.name), candidates[node.name]) else node
            for node in nodes]


def _between_pair(node, producers, readers, initializers) -> bool:
    """Read from an 8-bit per-tensor DequantizeLinear, and only by an 8-bit per-tensor QuantizeLinear."""
    source = producers.get(node.input[0])
    after = readers.get(node.output[0], [])
    return source is not None and source.op_type == "DequantizeLinear" and len(after) == 1 \
        and after[0].op_type == "QuantizeLinear" and all(_eight_bit_per_tensor(q, initializers)
                                                         for q in (source, after[0]))


def _eight_bit_per_tensor(node, initializers) -> bool:
    zero_point = initializers.get(node.input[2]) if len(node.input) > 2 else None
    scale = initializers.get(node.input[1])
    return zero_point is not None and scale is not None and zero_point.data_type in EIGHT_BIT \
        and math.prod(scale.dims) == 1


def _pooled_rank(node, initializers) -> int | None:
    """The input rank at which ReduceMean ``node`` is a GlobalAveragePool (dimensions kept, its axes 2, 3, ... to
    the last, or -k ... -1 at rank k + 2), or None."""
    attributes = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    axes = attributes.get("axes")
    if axes is None and len(node.input) > 1 and node.input[1]:
        constant = initializers.get(node.input[1])
        axes = None if constant is None else numpy_helper.to_array(constant).reshape(-1).tolist()
    if attributes.get("keepdims", 1) != 1 or not axes:
        return None
    count = len(axes)
    spatial = sorted(int(a) for a in axes)
    return count + 2 if spatial in (list(range(2, count + 2)), list(range(-count, 0))) else None


def _pools_enough(shape, rank: int) -> bool:
    """An input of that rank whose pooled area is known and at least SMALLEST_AREA values."""
    if shape is None or len(shape) != rank:
        return False
    area = shape[2:]
    return all(isinstance(d, int) and d > 0 for d in area) and math.prod(area) >= SMALLEST_AREA


def _input_shapes(graph, candidates) -> dict[str, list]:
    """The input shape of each candidate ReduceMean by op name: the graph's, else the one calibration saw, else
    ONNX shape inference's (run once, only where some candidate has neither: it took 5 MiB of a small model's
    peak)."""
    ops = {name: graph.operations.get(name) for name in candidates}
    inputs = {name: op.inputs[0] for name, op in ops.items() if op is not None and op.inputs and op.inputs[0]}
    shapes = {name: var.shape if var.shape is not None else graph.observed_shapes.get(var.name)
              for name, var in inputs.items()}
    shapes = {name: list(shape) for name, shape in shapes.items() if shape is not None}
    if len(shapes) < len(inputs):
        inferred = _inferred_shapes(graph)
        shapes.update({name: inferred.get(var.name) for name, var in inputs.items() if name not in shapes})
    return shapes


def _inferred_shapes(graph) -> dict[str, list]:
    """Tensor shapes by ONNX shape inference (unknown dimensions as None), {} where it fails."""
    try:  # inference needs a weight's shape, not its bytes
        model = onnx.shape_inference.infer_shapes(to_model_proto(graph, tensor=shape_only_tensor))
    except Exception:  # an op ONNX does not know, a graph over 2 GB...: the ReduceMean stays
        return {}
    return {info.name: [d.dim_value if d.HasField("dim_value") else None for d in info.type.tensor_type.shape.dim]
            for info in (*model.graph.value_info, *model.graph.output) if info.type.tensor_type.HasField("shape")}
