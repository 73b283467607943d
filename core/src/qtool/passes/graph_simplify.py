"""GraphSimplify: drop inference no-ops (Identity, Dropout), fold constant Transposes, Reshapes and Casts of weights,
BatchNormalization into the layer before it and a Gemm's alpha and beta into its constant operands, write a dense
Einsum as a MatMul and a Resize with ``axes`` over every axis."""

from __future__ import annotations

import numpy as np

from ..ir import Graph, Operation, Variable
from ..ops import BIASED_OP_TYPES, op_roles, out_channels, weight_axis
from .base import Pass, PassResult
from .constant_folding import fold, folded_value
from .einsum_matmul import as_matmul, dense_einsum
from .pad_axes import has_pad_axes, pads_without_axes
from .resize_axes import has_axes, input_dims, without_axes


class GraphSimplify(Pass):
    """Remove Identity and inference Dropout; fold an op that moves or converts constants alone into the constant it
    computes (:mod:`.constant_folding`); fold a BatchNormalization into its Conv/ConvTranspose/Gemm; fold a
    Gemm's alpha into its weight and beta into its bias where both are parameters (ONNX Runtime fuses a quantized
    Gemm with a bias into QGemm only with alpha and beta 1) and write its bias of one row as the (N,) vector it
    stands for (an int32 bias holds that); an Einsum of an activation and a 2-D weight that is a
    MatMul becomes one (:mod:`.einsum_matmul`); a Resize with ``axes`` becomes the same Resize over every axis
    (:mod:`.resize_axes`: ONNX Runtime's default session cannot run it quantized), and so does a Pad with ``axes``
    (:mod:`.pad_axes`, for the same reason).

    A BN is folded only when it is the sole reader of the layer's output, the
    layer's weight and bias and the BN statistics are parameters, and BN is in
    inference mode. The folded layer takes the BN's name-bearing output.
    """

    name = "GraphSimplify"

    def call(self, graph: Graph) -> PassResult:
        removed, folded, scaled, einsums, constants, resizes, pads, inferred = [], [], [], [], [], [], [], {}
        for op in graph.topological_order():
            if op.op_type in ("Identity", "Dropout") and _removable(graph, op):
                graph.bypass_operation(op)
                removed.append(op.name)
            elif (value := folded_value(graph, op)) is not None:
                fold(graph, op, value)
                constants.append(op.name)
            elif op.op_type == "BatchNormalization" and _foldable(graph, op):
                folded.append(f"{op.name} -> {_fold(graph, op)}")
            elif (transposed := dense_einsum(op)) is not None:
                as_matmul(graph, op, transposed)
                einsums.append(op.name)
            elif has_axes(op) and without_axes(graph, op, *_rank_and_dims(input_dims(graph, op, inferred))):
                resizes.append(op.name)
            elif has_pad_axes(op) and pads_without_axes(graph, op, input_dims(graph, op, inferred)):
                pads.append(op.name)
        for op in graph.topological_order():  # after BN folding, which takes beta into the bias
            if op.op_type == "Gemm" and _scales_foldable(op):
                _fold_scales(graph, op)
                scaled.append(op.name)
            if op.op_type == "Gemm" and _row_bias(op):
                _flatten_bias(graph, op)
        graph.remove_unused()
        return PassResult(graph, bool(removed or folded or scaled or einsums or constants or resizes or pads),
                          {"removed": removed, "folded": folded, "gemm_scales_folded": scaled,
                           "einsums_as_matmul": einsums, "constants_folded": constants,
                           "resize_axes_written_out": resizes, "pad_axes_written_out": pads})


def _rank_and_dims(dims: list | None) -> tuple[int | None, list | None]:
    return (None, None) if dims is None else (len(dims), dims)


def _removable(graph: Graph, op: Operation) -> bool:
    if op.domain not in ("", "ai.onnx") or not op.inputs or op.inputs[0] is None:
        return False
    if op.op_type == "Dropout" and not _inference_dropout(op):
        return False
    source, result = op.inputs[0], op.outputs[0]
    keeps_names = result not in graph.outputs or not (source.is_parameter or source in graph.inputs)
    return keeps_names and source not in graph.outputs


def _inference_dropout(op: Operation) -> bool:
    """True when the Dropout is an identity: no training mode and no mask read by anyone."""
    if any(out.consumers for out in op.outputs[1:]):
        return False
    training = op.inputs[2] if len(op.inputs) > 2 else None
    if training is not None and not (training.is_parameter and not bool(np.asarray(training.value).any())):
        return False
    return op.attributes.get("is_test", 1) != 0  # opset < 7 spelled inference mode as is_test=1


def _foldable(graph: Graph, bn: Operation) -> bool:
    source = bn.inputs[0]
    layer = source.producer if source is not None else None
    if layer is None or layer.op_type not in BIASED_OP_TYPES or layer.domain not in ("", "ai.onnx"):
        return False
    if len(source.consumers) != 1 or source in graph.outputs or bn.attributes.get("training_mode", 0):
        return False
    if any(out.consumers or out in graph.outputs for out in bn.outputs[1:]):
        return False
    stats = bn.inputs[1:5]
    if len(stats) != 4 or not all(v is not None and v.is_parameter for v in stats):
        return False
    weight = layer.inputs[1] if len(layer.inputs) > 1 else None
    bias = layer.inputs[2] if len(layer.inputs) > 2 else None
    if weight is None or not weight.is_parameter or (bias is not None and not bias.is_parameter):
        return False
    if layer.op_type == "Gemm":
        return _gemm_foldable(layer, weight, bias, len(stats[0].value.reshape(-1)))
    return True


def _gemm_foldable(gemm: Operation, weight: Variable, bias: Variable | None, channels: int) -> bool:
    out_features = weight.value.shape[weight_axis(gemm, weight.name)]
    if weight.value.ndim != 2 or out_features != channels:
        return False
    return bias is None or bias.value.size in (1, channels)


def _fold(graph: Graph, bn: Operation) -> str:
    """Replace layer + BN by one layer with scaled weights and shifted bias; return the layer's name."""
    layer = bn.inputs[0].producer
    gamma, beta, mean, var = (np.asarray(v.value, dtype=np.float64).reshape(-1) for v in bn.inputs[1:5])
    factor = gamma / np.sqrt(var + bn.attributes.get("epsilon", 1e-5))
    weight, bias = layer.inputs[1], layer.inputs[2] if len(layer.inputs) > 2 else None
    w = np.asarray(weight.value, dtype=np.float64)
    b = np.zeros_like(factor) if bias is None else np.asarray(bias.value, dtype=np.float64).reshape(-1)
    attributes = dict(layer.attributes)
    if layer.op_type == "Gemm":
        b = b * attributes.get("beta", 1.0)
        attributes["beta"] = 1.0
    new_w = _scale_weight(layer, w, factor)
    new_b = (b - mean) * factor + beta
    dtype = weight.value.dtype
    weight_var = _parameter(graph, weight, new_w.astype(dtype), layer)
    bias_var = _parameter(graph, bias, new_b.astype(dtype), layer) if bias is not None else \
        graph.add_variable(graph.unique_name(f"{layer.name}_bias"), new_b.astype(dtype))
    name, op_type, doc, types = layer.name, layer.op_type, layer.doc_string, layer.attribute_types
    x, result = layer.inputs[0], bn.outputs[0]
    graph.remove_operation(bn)
    graph.remove_operation(layer)
    folded = graph.add_operation(op_type, [x, weight_var, bias_var], [result], name=name,
                                 attributes=attributes, domain=layer.domain)
    folded.doc_string, folded.attribute_types = doc, types
    return folded.name


def _scales_foldable(gemm: Operation) -> bool:
    """A default-domain Gemm with alpha != 1 (or beta != 1 and a bias) whose weight and bias are parameters."""
    alpha, beta = gemm.attributes.get("alpha", 1.0), gemm.attributes.get("beta", 1.0)
    weight = gemm.inputs[1] if len(gemm.inputs) > 1 else None
    bias = gemm.inputs[2] if len(gemm.inputs) > 2 else None
    if gemm.domain not in ("", "ai.onnx") or weight is None or not weight.is_parameter:
        return False
    return (alpha != 1.0 or bias is not None and beta != 1.0) and (bias is None or bias.is_parameter)


def _fold_scales(graph: Graph, gemm: Operation) -> None:
    """alpha * A @ B + beta * C as A @ (alpha * B) + (beta * C), computed in float64 and stored in B's and C's types."""
    for index, key in ((1, "alpha"), (2, "beta")):
        factor = gemm.attributes.pop(key, 1.0)
        if index < len(gemm.inputs) and gemm.inputs[index] is not None and factor != 1.0:
            value = gemm.inputs[index].value
            graph.set_parameter_value(gemm, index, (np.asarray(value, dtype=np.float64) * factor).astype(value.dtype))


def _row_bias(gemm: Operation) -> bool:
    """A Gemm's constant bias of one row broadcast over the output ((1, N) or (1,)): the (N,) vector it stands for
    is what an int32 bias at the weight's per-channel scales can hold."""
    bias = gemm.inputs[2] if len(gemm.inputs) > 2 else None
    channels = out_channels(gemm) if gemm.domain in ("", "ai.onnx") else None
    if bias is None or not bias.is_parameter or channels is None:
        return False
    return np.shape(bias.value) in ((1, channels), (1,)) and (channels > 1 or np.ndim(bias.value) == 2)


def _flatten_bias(graph: Graph, gemm: Operation) -> None:
    """The bias as its (N,) vector, a parameter of its own (the shape changes)."""
    bias = gemm.inputs[2]
    value = np.broadcast_to(np.asarray(bias.value).reshape(-1), (out_channels(gemm),)).copy()
    graph.set_input(gemm, 2, graph.add_variable(graph.unique_name(f"{bias.name}_vector"), value))


def _scale_weight(layer: Operation, w: np.ndarray, factor: np.ndarray) -> np.ndarray:
    """Multiply every output channel of the layer's weight by its factor."""
    if op_roles(layer).grouped_out:  # ConvTranspose (C_in, C_out/group, k...): output channel = g * C_out/g + j
        groups = layer.attributes.get("group", 1)
        grouped = w.reshape((groups, w.shape[0] // groups) + w.shape[1:])
        f = factor.reshape((groups, 1, w.shape[1]) + (1,) * (w.ndim - 2))
        return (grouped * f).reshape(w.shape)
    shape = [1] * w.ndim
    shape[weight_axis(layer, layer.inputs[1].name)] = -1
    return w * factor.reshape(shape)


def _parameter(graph: Graph, var: Variable, value: np.ndarray, owner: Operation) -> Variable:
    """``var`` updated to ``value`` when only ``owner`` reads it, else a new parameter."""
    if all(c is owner for c in var.consumers) and var not in graph.outputs:
        var.value = value
        return var
    return graph.add_variable(graph.unique_name(f"{var.name}_folded"), value)
