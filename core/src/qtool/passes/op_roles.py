"""What each input of an op is for: data, weight, bias, or a shape-like operand."""

from __future__ import annotations

from ..ir import Operation

# Inputs that steer the op rather than carry data; they are never quantized.
SHAPE_INPUTS: dict[str, frozenset[int]] = {
    "Reshape": frozenset({1}), "Slice": frozenset({1, 2, 3, 4}), "Resize": frozenset({1, 2, 3}),
    "Upsample": frozenset({1}), "Expand": frozenset({1}), "Tile": frozenset({1}), "Squeeze": frozenset({1}),
    "Unsqueeze": frozenset({1}), "TopK": frozenset({1}), "Split": frozenset({1}), "Pad": frozenset({1, 3}),
    "Gather": frozenset({1}), "GatherElements": frozenset({1}), "GatherND": frozenset({1}),
    "ScatterElements": frozenset({1}), "ScatterND": frozenset({1}), "Dropout": frozenset({1, 2}),
    "BatchNormalization": frozenset({1, 2, 3, 4}), "InstanceNormalization": frozenset({1, 2}),
    "LayerNormalization": frozenset({1, 2}), "ConstantOfShape": frozenset({0}), "CumSum": frozenset({1}),
    "OneHot": frozenset({0, 1}), "ReduceSum": frozenset({1}), "ReduceMean": frozenset({1}),
    "ReduceMax": frozenset({1}), "ReduceMin": frozenset({1}), "ReduceProd": frozenset({1}),
}

# Parameter operands whose values follow their data input's grid (rounded by PassiveParameterQuantize).
FOLLOWER_INPUTS: dict[str, frozenset[int]] = {"Clip": frozenset({1, 2}), "Pad": frozenset({2})}

# Ops whose data operand is not input 0.
DATA_INPUT: dict[str, int] = {"Where": 1}

BIAS_INPUT: dict[str, int] = {"Conv": 2, "ConvTranspose": 2, "Gemm": 2}


def weight_index(op: Operation) -> int | None:
    """Index of the parameter weight of a Conv, ConvTranspose, Gemm or MatMul, or None."""
    if op.op_type in ("Conv", "ConvTranspose", "Gemm"):
        candidates = (1,)
    elif op.op_type == "MatMul":
        candidates = (1, 0)
    else:
        return None
    for index in candidates:
        if index < len(op.inputs) and op.inputs[index] is not None and op.inputs[index].is_parameter:
            return index
    return None


def bias_position(op: Operation) -> int | None:
    """Index of the op's parameter bias, or None when it has none."""
    index = BIAS_INPUT.get(op.op_type)
    if index is None or len(op.inputs) <= index or op.inputs[index] is None:
        return None
    return index if op.inputs[index].is_parameter else None


def is_steering_input(op: Operation, index: int) -> bool:
    """True for shape-like operands and follower parameters (never given their own config)."""
    return index in SHAPE_INPUTS.get(op.op_type, ()) or index in FOLLOWER_INPUTS.get(op.op_type, ())


def data_input(op: Operation) -> int:
    return DATA_INPUT.get(op.op_type, 0)
