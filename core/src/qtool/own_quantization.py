"""The Q/DQ nodes of a model that arrives quantized, removed so that qtool quantizes it with its own configuration.

A QuantizeLinear read only by DequantizeLinear nodes (an activation's, or a float weight's, fake quantization)
is removed with them, its readers reading its float input (through a Relu where the codes' range starts at 0: a
quantizer may have dropped the Relu that range clips as), a DequantizeLinear of constant codes (a weight, an
int32 bias) becomes the float constant it computes, in a model that held such pairs (a weight-only model keeps its
codes). What is left is a float model whose weights are the values
the model dequantized (rounded once already); qtool calibrates and quantizes it as any float model. Q/DQ nodes
around integer ops (QLinearConv, MatMulInteger...) are no fake quantization and stay.
"""

from __future__ import annotations

from collections import Counter

import ml_dtypes
import numpy as np
from onnx import helper

from .ir import Graph, Operation
from .passes.constant_folding import fold

Q_DOMAINS = ("", "ai.onnx", "com.microsoft")
SIGN_KEEPING = frozenset({"MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool", "ReduceMean", "ReduceMax",
                          "Reshape", "Flatten", "Transpose", "Squeeze", "Unsqueeze"})  # of their first input


def remove_fake_quantization(graph: Graph) -> dict[str, int]:
    """Remove ``graph``'s Q->DQ pairs and, where it held some, fold its DequantizeLinear nodes of constants; the nodes
    removed, by type. A weight-only model (no pair) keeps its codes: folding them would lose the weights' format
    wherever the configuration quantizes no weight."""
    removed: Counter[str] = Counter()
    for op in graph.topological_order():
        if _is(op, "QuantizeLinear") and op.name in graph.operations and _pair_removable(graph, op):
            removed.update(_remove_pair(graph, op))
    if not removed:
        return {}
    for op in graph.topological_order():
        if _is(op, "DequantizeLinear") and _constant_codes(graph, op):
            fold(graph, op, dequantized(op))
            removed["DequantizeLinear"] += 1
    graph.remove_unused()
    return dict(sorted(removed.items()))


def _is(op: Operation, op_type: str) -> bool:
    return op.op_type == op_type and op.domain in Q_DOMAINS


def _pair_removable(graph: Graph, q: Operation) -> bool:
    """Only DequantizeLinear nodes read ``q``'s output, ``q``'s scale and zero point are constants, and a graph
    output among theirs can take the float tensor's name (one of them at most, and the float tensor is no graph
    input, output or constant)."""
    codes, source = q.outputs[0], q.inputs[0]
    readers = codes.consumers
    if not readers or codes in graph.outputs or not all(_is(op, "DequantizeLinear") for op in readers):
        return False
    if not all(var.is_parameter for var in q.inputs[1:] if var is not None):
        return False
    outputs = [op.outputs[0] for op in readers if op.outputs[0] in graph.outputs]
    return not outputs or (len(outputs) == 1 and not source.is_parameter and source not in graph.inputs
                           and source not in graph.outputs)


def _remove_pair(graph: Graph, q: Operation) -> list[str]:
    """Remove ``q`` and the DequantizeLinear nodes reading it; their readers read ``q``'s input, through a Relu
    where the codes clip at 0."""
    source, codes = q.inputs[0], q.outputs[0]
    removed = ["QuantizeLinear"]
    if clips_at_zero(q) and not _non_negative(source):
        relu = graph.add_variable(graph.unique_name(f"{source.name}_relu"), shape=source.shape, dtype=source.dtype)
        graph.add_operation("Relu", [source], [relu], name=f"{q.name}_relu")
        source = relu
    renamed = None
    for dq in list(codes.consumers):
        result = dq.outputs[0]
        graph.remove_operation(dq)
        if result in graph.outputs:
            renamed = result.name
        graph.replace_all_uses(result, source)
        graph.remove_variable(result)
        removed.append("DequantizeLinear")
    graph.remove_operation(q)
    graph.remove_variable(codes)
    if renamed is not None:
        graph.rename_variable(source, renamed)
    return removed


def _non_negative(var) -> bool:
    """``var`` is a constant without negative values, a Relu's output, or one that ops keeping values' signs made of
    one (pooling, a mean, a reshape)."""
    if var.is_parameter:
        return bool(np.all(np.asarray(var.value, dtype=np.float64) >= 0))
    while var is not None and var.producer is not None and var.producer.op_type in SIGN_KEEPING:
        var = var.producer.inputs[0]
    return var is not None and var.producer is not None and var.producer.op_type == "Relu"


def clips_at_zero(q: Operation) -> bool:
    """Whether QuantizeLinear ``q``'s lowest code stands for 0 (uint8 with zero point 0, the default without one;
    int8 with zero point -128...): it clips every negative value as a Relu does."""
    zero = q.inputs[2] if len(q.inputs) > 2 else None
    codes = np.zeros((), np.uint8) if zero is None else np.asarray(zero.value)
    dtype = q.attributes.get("output_dtype")
    dtype = helper.tensor_dtype_to_np_dtype(dtype) if dtype else codes.dtype
    try:
        lowest = ml_dtypes.iinfo(dtype).min
    except ValueError:  # float8 codes: signed, no clipping at 0
        return False
    return bool(np.all(codes.astype(np.int64) == lowest))


def _constant_codes(graph: Graph, op: Operation) -> bool:
    """A DequantizeLinear whose codes, scale and zero point are constants (its output is no graph output)."""
    present = [var for var in op.inputs if var is not None]
    return all(var.is_parameter for var in present) and op.outputs[0] not in graph.outputs


def dequantized(op: Operation) -> np.ndarray:
    """What DequantizeLinear ``op`` of constants computes: ``(codes - zero_point) * scale``, per tensor, per axis
    or per block (``block_size``), in the scale's type (or ``output_dtype``'s)."""
    codes = np.asarray(op.inputs[0].value)
    scale = np.asarray(op.inputs[1].value)
    zero = op.inputs[2].value if len(op.inputs) > 2 and op.inputs[2] is not None else np.zeros((), np.int8)
    axis = int(op.attributes.get("axis", 1)) % max(codes.ndim, 1)
    block = int(op.attributes.get("block_size", 0))
    values = ((codes.astype(np.float64) - _spread(np.asarray(zero), codes, axis, block).astype(np.float64))
              * _spread(scale, codes, axis, block).astype(np.float64))
    dtype = op.attributes.get("output_dtype")
    return values.astype(helper.tensor_dtype_to_np_dtype(dtype) if dtype else scale.dtype)


def _spread(param: np.ndarray, codes: np.ndarray, axis: int, block: int) -> np.ndarray:
    """A scale or zero point shaped to broadcast over ``codes``: a scalar as it is, one per block repeated over its
    block, one per channel along ``axis``."""
    if param.ndim == 0 or param.size == 1 and not block:
        return param.reshape(())
    if block:
        return np.take(np.repeat(param, block, axis=axis), np.arange(codes.shape[axis]), axis=axis)
    shape = [1] * codes.ndim
    shape[axis] = -1
    return param.reshape(shape)
