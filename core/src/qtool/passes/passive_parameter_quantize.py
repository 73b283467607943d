"""PassiveParameterQuantize: parameters whose quantization follows other tensors'.

* int32 bias: scale = s_in * s_w (per channel when the weight is), zero point 0.
  Bias values beyond the int32 range are reported (details and a warning
  naming the op); weight scales are never changed to make room.
* Clip min/max and Pad constant values are rounded onto their input's grid,
  so that clipping or padding quantized data stays exact.
"""

from __future__ import annotations

import warnings

import numpy as np

from ..ir import Graph, Operation
from ..ops import bias_index, follower_inputs, weight_axis, weight_index
from ..quant import QuantizationState, TensorQuantizationConfig, fake_quantize
from ..quant.maths import round_array
from ..quant.policy import QuantizationPolicy as P
from .base import Pass, PassResult, PassWarning

INT32_MAX = 2**31 - 1
FOLLOWER_ATTRIBUTES = {"Clip": ("min", "max"), "Pad": ("value",)}


class PassiveParameterQuantize(Pass):
    name = "PassiveParameterQuantize"

    def call(self, graph: Graph) -> PassResult:
        details: dict[str, list] = {"biases": [], "float_biases": [], "saturated": [], "rounded": []}
        for op in graph.topological_order():
            if op.quant is None or not op.quant.quantized:
                continue
            bias = bias_index(op)
            if bias is not None and op.quant.inputs[bias] is not None:
                self._bias(op, bias, details)
            if follower_inputs(op):
                details["rounded"] += _round_followers(graph, op)
        modified = any(details.values())
        return PassResult(graph, modified, details)

    def _bias(self, op: Operation, index: int, details: dict) -> None:
        tqc = op.quant.inputs[index]
        if tqc.state is not QuantizationState.PASSIVE_INIT:
            return
        activation, weight = op.quant.inputs[0], op.quant.inputs[weight_index(op)]
        problem = _bias_problem(activation, weight, weight_axis(op, op.inputs[weight_index(op)].name))
        if problem:
            tqc.keep_float(problem)
            details["float_biases"].append({"op": op.name, "reason": problem})
            return
        tqc.make_passive(_bias_rule(activation, weight))
        details["biases"].append(op.inputs[index].name)
        saturated = _saturation(op, index, tqc)
        if saturated:
            details["saturated"].append(saturated)
            warnings.warn(PassWarning(
                f"op {op.name!r}: int32 bias {saturated['tensor']!r} saturates in {saturated['channels']} "
                f"channel(s) (largest code {saturated['largest_code']:.3g}); the weight or input scale is too small",
                code="bias-saturation", op=op.name, tensor=saturated["tensor"]), stacklevel=2)


def _bias_problem(activation, weight, output_axis: int | None) -> str | None:
    for role, tqc in (("input", activation), ("weight", weight)):
        if tqc is None or not tqc.is_settled:
            return f"bias kept float: the {role} is not quantized"
    return bias_scheme_problem(activation.scheme, weight.scheme, output_axis)


def bias_scheme_problem(activation, weight, output_axis: int | None) -> str | None:
    """Why no int32 bias at s_in * s_w can follow an input and a weight of these schemes, or None (Dispatch asks
    too, so that explain shows the float bias the run writes)."""
    for role, scheme in (("input", activation), ("weight", weight)):
        if scheme.is_floating:
            return f"bias kept float: the {role} is {scheme.short()}, not an integer format"
    if activation.is_per_channel:
        return "bias kept float: the input is quantized per channel"
    if weight.policy & P.PER_BLOCK:
        return "bias kept float: the weight is quantized per block"
    if weight.is_per_channel and output_axis is not None and weight.channel_axis != output_axis:
        return (f"bias kept float: the weight is per channel on axis {weight.channel_axis}, not on its "
                f"output axis {output_axis}, so s_in * s_w does not give one scale per output channel")
    return None


def _bias_rule(activation: TensorQuantizationConfig, weight: TensorQuantizationConfig):
    def rule() -> tuple[np.ndarray, np.ndarray]:
        scale = np.asarray(activation.scale, dtype=np.float64) * np.asarray(weight.scale, dtype=np.float64)
        return scale.astype(np.float32), np.zeros(scale.shape, dtype=np.int32)

    return rule


def _saturation(op: Operation, index: int, tqc: TensorQuantizationConfig) -> dict | None:
    var = op.inputs[index]
    value = np.asarray(var.value, dtype=np.float64).reshape(-1)
    scale = np.broadcast_to(np.asarray(tqc.scale, dtype=np.float64).reshape(-1), value.shape)
    codes = np.abs(round_array(value / scale, tqc.scheme.rounding))
    over = codes > INT32_MAX
    if not over.any():
        return None
    return {"op": op.name, "tensor": var.name, "channels": int(over.sum()), "largest_code": float(codes.max())}


def _grid(op: Operation) -> TensorQuantizationConfig | None:
    """The quantization of the op's data, from its input or (fused) its output."""
    for tqc in (op.quant.inputs[0], op.quant.outputs[0]):
        if tqc is not None and tqc.is_settled and not tqc.scheme.is_per_channel:
            return tqc
    return None


def _round_followers(graph: Graph, op: Operation) -> list[str]:
    grid = _grid(op)
    if grid is None or (op.op_type == "Pad" and op.attributes.get("mode", "constant") != "constant"):
        return []
    rounded = []
    for i in sorted(follower_inputs(op)):
        var = op.inputs[i] if i < len(op.inputs) else None
        if var is None or not var.is_parameter:
            continue
        var = graph.set_parameter_value(op, i, _on_grid(var.value, grid))
        rounded.append(var.name)
    for key in FOLLOWER_ATTRIBUTES[op.op_type]:
        if key in op.attributes:
            op.attributes[key] = float(_on_grid(np.float32(op.attributes[key]), grid))
            rounded.append(f"{op.name}.{key}")
    return rounded


def _on_grid(value, grid: TensorQuantizationConfig) -> np.ndarray:
    array = np.asarray(value)
    snapped = fake_quantize(array.astype(np.float32), grid.scheme, grid.scale, grid.offset)
    return snapped.astype(array.dtype)
