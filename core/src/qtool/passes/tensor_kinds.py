"""Which tensors are activations and which are constants or shape/index values, decided by use.

* constant: a parameter, or computed by an op whose inputs are all constants;
* index: an integer or boolean tensor (an input's dtype, an output of
  Shape/ArgMax/comparisons/Cast-to-integer..., or computed from an integer
  tensor through the op's data operand: a Range from integer bounds); a float tensor computed from an
  index (a shape cast to float and scaled) or one that only feeds shape-like
  operands (Reshape's shape, Resize's scales...) is one too, unless it reaches
  the data input of a compute op (Conv, MatMul...): a one-hot tensor made by
  Equal and Cast from int32 tokens is data, whatever its ancestry.

Neither kind is quantized; the ops that only produce them stay float.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from onnx import helper

from ..ir import Graph, Operation, Variable
from ..ops import data_input, is_compute, is_shape_input, is_steering_input

INDEX_PRODUCERS = frozenset({
    "Shape", "Size", "NonZero", "ArgMax", "ArgMin", "Equal", "Less", "Greater", "LessOrEqual", "GreaterOrEqual",
    "Not", "And", "Or", "Xor", "IsNaN", "IsInf", "NonMaxSuppression",
})  # not Range: its output has its operands' type; a float Range (sinusoidal positions) is data
INDEX_OUTPUTS: dict[str, frozenset[int]] = {"TopK": frozenset({1}), "MaxPool": frozenset({1}),
                                            "Unique": frozenset({1, 2, 3})}
FLOAT_MAKERS = frozenset({"Cast", "CastLike", "ConstantOfShape", "EyeLike"})  # their output type is not their input's


@dataclass
class TensorKinds:
    constant: set[int] = field(default_factory=set)
    index: set[int] = field(default_factory=set)

    def is_constant(self, var: Variable | None) -> bool:
        return var is not None and id(var) in self.constant

    def is_index(self, var: Variable | None) -> bool:
        return var is not None and id(var) in self.index

    def is_static(self, var: Variable | None) -> bool:
        """Constant or index: not an activation."""
        return self.is_constant(var) or self.is_index(var)

    def is_shape_op(self, op: Operation) -> bool:
        """True when the op computes only constants or shape/index values."""
        return bool(op.outputs) and all(self.is_static(out) for out in op.outputs)


def classify(graph: Graph) -> TensorKinds:
    order = graph.topological_order()
    kinds = TensorKinds()
    integer = _integers(graph, order)
    derived = _derived_from_index(order, integer)
    reaches = _reaching_compute(graph, order, derived)
    shape_only = _feeding_shapes_only(graph, order, integer)
    for var in (*graph.inputs, *graph.parameters()):
        if var.is_parameter:
            kinds.constant.add(id(var))
        if id(var) in integer or id(var) in shape_only:
            kinds.index.add(id(var))
    for op in order:
        all_constant = all(kinds.is_constant(v) for v in op.inputs if v is not None)
        data = _data(op)
        for out in op.outputs:
            if all_constant:
                kinds.constant.add(id(out))
            key = id(out)
            if key in integer or key in shape_only or kinds.is_index(data) and key in derived and key not in reaches:
                kinds.index.add(key)
    return kinds


def integer_tensors(graph: Graph) -> set[int]:
    """The ids of the tensors known or inferred to hold integers or booleans (ids, shapes, indices, masks)."""
    return _integers(graph, graph.topological_order())


def _data(op: Operation) -> Variable | None:
    """The op's data operand (None for control flow: its outputs come from its bodies)."""
    index = data_input(op)
    return op.inputs[index] if index < len(op.inputs) and not op.has_subgraphs else None


def _integers(graph: Graph, order: list[Operation]) -> set[int]:
    """Tensors known or inferred to hold integers or booleans (dtype, producer, or an integer data operand)."""
    found = {id(v) for v in (*graph.inputs, *graph.parameters()) if _integer_dtype(v.dtype)}
    for op in order:
        data = _data(op)
        from_data = data is not None and id(data) in found and op.op_type not in FLOAT_MAKERS
        for position, out in enumerate(op.outputs):
            known_float = out.dtype is not None and not _integer_dtype(out.dtype)
            if (_integer_dtype(out.dtype) or op.op_type in INDEX_PRODUCERS or _casts_to_integer(op)
                    or position in INDEX_OUTPUTS.get(op.op_type, ()) or from_data and not known_float):
                found.add(id(out))
    return found


def _derived_from_index(order: list[Operation], integer: set[int]) -> set[int]:
    """Float tensors computed from an integer tensor through the data operand (a shape cast to float, scaled)."""
    derived: set[int] = set()
    for op in order:
        data = _data(op)
        if data is not None and (id(data) in integer or id(data) in derived):
            derived.update(id(out) for out in op.outputs if id(out) not in integer)
    return derived


def _reaching_compute(graph: Graph, order: list[Operation], derived: set[int]) -> set[int]:
    """Derived tensors that reach a compute op's data input, directly or through other derived tensors."""
    reaches: set[int] = set()
    for op in reversed(order):
        for out in op.outputs:
            if id(out) in derived and any(_use_reaches(c, i, derived, reaches) for c, i in _uses(out)):
                reaches.add(id(out))
    return reaches


def _use_reaches(op: Operation, index: int, derived: set[int], reaches: set[int]) -> bool:
    if is_compute(op) and not is_steering_input(op, index):
        return True
    return any(id(out) in derived and id(out) in reaches for out in op.outputs)


def _feeding_shapes_only(graph: Graph, order: list[Operation], integer: set[int]) -> set[int]:
    """Float tensors whose every use is a shape-like operand, directly or through float ops that feed only such."""
    found: set[int] = set()
    outputs = {id(v) for v in graph.outputs}

    def shape_use(op: Operation, index: int) -> bool:
        if is_shape_input(op, index):
            return True
        return all(id(out) in found for out in op.outputs) and bool(op.outputs)

    candidates = [out for op in reversed(order) for out in op.outputs] + list(graph.inputs)
    for var in candidates:
        uses = _uses(var)
        if id(var) not in integer and id(var) not in outputs and uses and all(shape_use(c, i) for c, i in uses):
            found.add(id(var))
    return found


def _uses(var: Variable) -> list[tuple[Operation, int]]:
    return [(op, i) for op in dict.fromkeys(var.consumers) for i, v in enumerate(op.inputs) if v is var]


def _integer_dtype(dtype) -> bool:
    return dtype is not None and np.dtype(dtype).kind in "iub"


def _casts_to_integer(op: Operation) -> bool:
    if op.op_type != "Cast" or "to" not in op.attributes:
        return False
    return _integer_dtype(helper.tensor_dtype_to_np_dtype(op.attributes["to"]))
