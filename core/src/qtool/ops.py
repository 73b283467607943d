"""The op-role table: what each input of an op type is for, and along which axis its weight has channels.

One entry per op type that is not plain "every input is data". Every part of
qtool (dispatch, the passes, the executor's users, the platforms, contrib)
reads op knowledge from here; adding an op type is one entry here plus its
executor kernel. Roles of an input:

* data: carries the values the op computes on (quantized as an activation);
  ``data`` is the index of the main one (for ops whose data is not input 0).
* weight: a constant operand of a compute op, quantized per output channel
  (``weight`` lists the positions that may hold it, in order of preference).
* bias: added after the compute; quantized from s_in * s_w (int32) or float.
* shape: a shape/index operand (Reshape's shape, Slice's starts...): never
  quantized, and a tensor that only feeds such operands is shape/index data.
* params: fixed operands the op applies in float (normalization statistics).
* followers: constants whose values follow the data's grid (Clip bounds,
  Pad's constant value), rounded onto it by PassiveParameterQuantize.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType

ChannelAxis = Callable[[object, int], "int | None"]


def _conv_axis(op, index: int) -> int:
    return 0  # weight (C_out, C_in/group, k...)


def _conv_transpose_axis(op, index: int) -> int:
    return 1  # weight (C_in, C_out/group, k...)


def _gemm_axis(op, index: int) -> int:
    return 0 if op.attributes.get("transB", 0) else 1  # B is (N, K) with transB, else (K, N)


def _matmul_axis(op, index: int) -> int | None:
    """x @ W: the columns of W (its last axis); W @ x: the rows of W (its second-to-last axis)."""
    shape = op.inputs[index].shape
    if shape is None or len(shape) < 2:
        return None
    return len(shape) - 1 if index == 1 else len(shape) - 2


def _conv_reduction(op, index: int) -> int:
    return 1  # weight (C_out, C_in/group, k...)


def _conv_transpose_reduction(op, index: int) -> int:
    return 0  # weight (C_in, C_out/group, k...)


def _gemm_reduction(op, index: int) -> int:
    return 1 if op.attributes.get("transB", 0) else 0  # B is (N, K) with transB, else (K, N)


def _matmul_reduction(op, index: int) -> int | None:
    """x @ W: the rows of W (its second-to-last axis); W @ x: the columns of W (its last axis)."""
    shape = op.inputs[index].shape
    if shape is None or len(shape) < 2:
        return None
    return len(shape) - 2 if index == 1 else len(shape) - 1


def _gemm_input_axis(op) -> int:
    return 0 if op.attributes.get("transA", 0) else 1  # A is (K, M) with transA, else (M, K)


@dataclass(frozen=True)
class OpRoles:
    """The roles of one op type's inputs (positions not named here are data)."""

    data: int = 0
    weight: tuple[int, ...] = ()
    bias: int | None = None
    shape: frozenset[int] = frozenset()
    params: frozenset[int] = frozenset()
    followers: frozenset[int] = frozenset()
    channel_axis: ChannelAxis | None = None
    #: the weight's reduction (input-channel) axis, the one the op sums over
    reduction_axis: ChannelAxis | None = None
    #: the channel axis of the first data input (an int, or a function of the op for attribute-dependent layouts)
    input_channel_axis: int | Callable[[object], int] | None = None
    #: the channel axis of the output (negative: counted from the end)
    output_channel_axis: int | None = None
    #: the weight's channel axis holds one group's output channels (ConvTranspose), not all of them
    grouped_out: bool = False
    #: a compute op (matrix product / convolution): what quantization coverage counts
    compute: bool = False
    #: inputs whose shape alone the op reads, never their values (Shape, Size)
    shape_of: frozenset[int] = frozenset()
    #: inputs where a 0 makes the output infinite (Log's argument, a Div's divisor)
    poles: frozenset[int] = frozenset()

    def steering(self) -> frozenset[int]:
        """Inputs that never get their own quantization config: shape operands, params and followers."""
        return self.shape | self.params | self.followers


def _shape(*positions: int) -> OpRoles:
    return OpRoles(shape=frozenset(positions))


OP_ROLES: Mapping[str, OpRoles] = MappingProxyType({
    "Conv": OpRoles(weight=(1,), bias=2, channel_axis=_conv_axis, reduction_axis=_conv_reduction,
                    input_channel_axis=1, output_channel_axis=1, compute=True),
    "ConvTranspose": OpRoles(weight=(1,), bias=2, channel_axis=_conv_transpose_axis,
                             reduction_axis=_conv_transpose_reduction, input_channel_axis=1, output_channel_axis=1,
                             grouped_out=True, compute=True),
    "Gemm": OpRoles(weight=(1,), bias=2, channel_axis=_gemm_axis, reduction_axis=_gemm_reduction,
                    input_channel_axis=_gemm_input_axis, output_channel_axis=1, compute=True),
    "MatMul": OpRoles(weight=(1, 0), channel_axis=_matmul_axis, reduction_axis=_matmul_reduction,
                      input_channel_axis=-1, output_channel_axis=-1, compute=True),
    "Reshape": _shape(1), "Slice": _shape(1, 2, 3, 4), "Resize": _shape(1, 2, 3), "Upsample": _shape(1),
    "Expand": _shape(1), "Tile": _shape(1), "Squeeze": _shape(1), "Unsqueeze": _shape(1), "TopK": _shape(1),
    "Split": _shape(1), "Gather": _shape(1), "GatherElements": _shape(1), "GatherND": _shape(1),
    "ScatterElements": _shape(1), "ScatterND": _shape(1), "Dropout": _shape(1, 2), "ConstantOfShape": _shape(0),
    "Range": _shape(0, 1, 2), "CumSum": _shape(1), "OneHot": _shape(0, 1), "ReduceSum": _shape(1),
    "ReduceMean": _shape(1), "ReduceMax": _shape(1), "ReduceMin": _shape(1), "ReduceProd": _shape(1),
    "Pad": OpRoles(shape=frozenset({1, 3}), followers=frozenset({2})),
    "Clip": OpRoles(followers=frozenset({1, 2})),
    "BatchNormalization": OpRoles(params=frozenset({1, 2, 3, 4})),
    "InstanceNormalization": OpRoles(params=frozenset({1, 2})),
    "LayerNormalization": OpRoles(params=frozenset({1, 2})),
    "Where": OpRoles(data=1),
    "Shape": OpRoles(shape_of=frozenset({0})), "Size": OpRoles(shape_of=frozenset({0})),
    "Log": OpRoles(poles=frozenset({0})), "Reciprocal": OpRoles(poles=frozenset({0})),
    "Div": OpRoles(poles=frozenset({1})),
})

_PLAIN = OpRoles()

#: op types whose quantization coverage counts (matrix products and convolutions)
COMPUTE_OP_TYPES: frozenset[str] = frozenset(t for t, r in OP_ROLES.items() if r.compute)
#: compute ops with a bias input and their weight at input 1: what a BatchNormalization folds into
BIASED_OP_TYPES: frozenset[str] = frozenset(t for t, r in OP_ROLES.items() if r.bias is not None)


def op_roles(op_or_type) -> OpRoles:
    """The roles of an op (or op type); an op type without an entry has only data inputs."""
    op_type = op_or_type if isinstance(op_or_type, str) else op_or_type.op_type
    return OP_ROLES.get(op_type, _PLAIN)


def is_compute(op) -> bool:
    return op_roles(op).compute


def data_input(op) -> int:
    """Index of the op's main data input."""
    return op_roles(op).data


def is_shape_input(op, index: int) -> bool:
    """True for a shape/index operand (Reshape's shape, Gather's indices...)."""
    return index in op_roles(op).shape


def reads_shape_only(op, index: int) -> bool:
    """True for an input whose shape alone the op reads (Shape's, Size's): any tensor of that shape serves."""
    return index in op_roles(op).shape_of


def is_steering_input(op, index: int) -> bool:
    """True for shape operands, params and follower parameters (never given their own config)."""
    return index in op_roles(op).steering()


def foreign_ops(graph) -> dict[tuple[str, str], list[str]]:
    """The ops from outside ONNX's own domain (a runtime's contrib ops: ONNX Runtime's com.microsoft Attention of a
    transformer-optimized model), their names by (domain, op type), in graph order: what a target's ONNX parser may
    read only through a plugin of its own."""
    found: dict[tuple[str, str], list[str]] = {}
    for op in graph.topological_order():
        if op.domain not in ("", "ai.onnx"):
            found.setdefault((op.domain, op.op_type), []).append(op.name)
    return found


def is_pole_input(op, index: int) -> bool:
    """A 0 at input ``index`` makes the op's output infinite."""
    return index in op_roles(op).poles


def follower_inputs(op) -> frozenset[int]:
    return op_roles(op).followers


def weight_index(op) -> int | None:
    """Index of the op's parameter weight (the first candidate position holding a parameter), or None."""
    for index in op_roles(op).weight:
        if index < len(op.inputs) and op.inputs[index] is not None and op.inputs[index].is_parameter:
            return index
    return None


def bias_input(op) -> int | None:
    """Index of the op type's bias input, present or not (None: the op type has none)."""
    return op_roles(op).bias


def is_bias(op, index: int) -> bool:
    return index == op_roles(op).bias


def bias_index(op) -> int | None:
    """Index of the op's parameter bias, or None when it has none."""
    index = op_roles(op).bias
    if index is None or len(op.inputs) <= index or op.inputs[index] is None:
        return None
    return index if op.inputs[index].is_parameter else None


def has_bias(op) -> bool:
    """True when the op's bias input is present (a parameter or computed)."""
    index = op_roles(op).bias
    return index is not None and index < len(op.inputs) and op.inputs[index] is not None


def weight_axis(op, tensor: str | None = None) -> int | None:
    """The output-channel axis of the op's weight, or None (not a weight, or no channel axis).

    ``tensor`` names the weight when the op has several candidate inputs; by
    default the parameter found by :func:`weight_index`. Conv 0, ConvTranspose 1,
    Gemm 0 with transB else 1, MatMul: x @ W the last axis of W, W @ x its
    second-to-last (each the axis of the output's channels; ONNX Runtime runs
    per-channel DequantizeLinear weights on exactly these axes).
    """
    return _weight_rule(op, tensor, op_roles(op).channel_axis)


def reduction_axis(op, tensor: str | None = None) -> int | None:
    """The axis of the op's weight that the op sums over (its input channels), or None.

    ``tensor`` as for :func:`weight_axis`. Conv 1, ConvTranspose 0, Gemm 1 with
    transB else 0, MatMul: x @ W the second-to-last axis of W, W @ x its last
    (K of the product): the axis weight-only blocks run along.
    """
    return _weight_rule(op, tensor, op_roles(op).reduction_axis)


def _weight_rule(op, tensor: str | None, rule: ChannelAxis | None) -> int | None:
    if rule is None:
        return None
    if tensor is None:
        index = weight_index(op)
    else:
        index = next((i for i in op_roles(op).weight if i < len(op.inputs) and op.inputs[i] is not None
                      and op.inputs[i].name == tensor), None)
    return None if index is None else rule(op, index)


def input_channel_axis(op) -> int | None:
    """The channel axis of the op's first input (the one its weight contracts), or None.

    Conv and ConvTranspose 1, Gemm 1 (0 with transA), MatMul -1 (the last).
    """
    axis = op_roles(op).input_channel_axis
    return axis(op) if callable(axis) else axis


def output_channel_axis(op) -> int | None:
    """The channel axis of the op's output, or None: 1 for Conv, ConvTranspose and Gemm, -1 (the last) for MatMul."""
    return op_roles(op).output_channel_axis


def out_channels(op) -> int | None:
    """The number of output channels of the op's weight (read along :func:`weight_axis`), or None."""
    index, axis = weight_index(op), weight_axis(op)
    if index is None or axis is None:
        return None
    channels = op.inputs[index].value.shape[axis]
    return channels * op.attributes.get("group", 1) if op_roles(op).grouped_out else channels


def folds_into_gemm(op, inferred: Mapping[str, list] | None = None) -> bool:
    """Whether a runtime may fold MatMul ``op`` and the lone Add reading its output into a float Gemm (ONNX
    Runtime's MatMulAddFusion: a 2-D weight, a data input that is 2-D or of fully known shape, and a 1-D other
    Add operand, or a 2-D one with a 2-D data input). Unknown shapes count as foldable: the runtime may infer them.
    ``inferred`` gives shapes (by tensor name) for tensors the graph has none for (e.g. from shape inference)."""
    out = op.outputs[0]
    if op.op_type != "MatMul" or [c.op_type for c in out.consumers] != ["Add"]:
        return False
    add = out.consumers[0]
    other = next((v for v in add.inputs if v is not out), None)

    def shape(var):
        return var.shape if var.shape is not None or inferred is None else inferred.get(var.name)

    shapes = [shape(op.inputs[0]), shape(op.inputs[1]), shape(other) if other is not None else None]
    if any(shape is None for shape in shapes):
        return True
    data, weight, bias = shapes
    return len(weight) == 2 and (len(data) == 2 and len(bias) <= 2 or
                                 len(bias) == 1 and all(isinstance(d, int) for d in data))


def quantized_in_model(var) -> bool:
    """A tensor the model quantizes itself (a model that arrives partly or wholly quantized): written by a
    DequantizeLinear, or read by QuantizeLinear nodes only. qtool adds no second quantization to it."""
    if var is None:
        return False
    if var.producer is not None and var.producer.op_type == "DequantizeLinear":
        return True
    return bool(var.consumers) and all(op.op_type == "QuantizeLinear" for op in var.consumers)
