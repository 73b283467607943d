"""Which tensors are activations and which are constants or shape/index values.

* constant: a parameter, or computed by an op whose inputs are all constants;
* index: an integer or boolean tensor, an output of Shape/ArgMax/comparisons...,
  or anything computed from an index through the op's data operand (a shape
  cast to float and scaled is still a shape computation).

Neither kind is quantized; the ops that only produce them stay float.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from onnx import helper

from ..ir import Graph, Operation, Variable
from .op_roles import data_input

INDEX_PRODUCERS = frozenset({
    "Shape", "Size", "NonZero", "ArgMax", "ArgMin", "Equal", "Less", "Greater", "LessOrEqual", "GreaterOrEqual",
    "Not", "And", "Or", "Xor", "IsNaN", "IsInf", "Range", "NonMaxSuppression",
})
INDEX_OUTPUTS: dict[str, frozenset[int]] = {"TopK": frozenset({1}), "MaxPool": frozenset({1}),
                                            "Unique": frozenset({1, 2, 3})}


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
    kinds = TensorKinds()
    for var in (*graph.inputs, *graph.parameters()):
        if var.is_parameter:
            kinds.constant.add(id(var))
        if _integer_dtype(var.dtype):
            kinds.index.add(id(var))
    for op in graph.topological_order():
        present = [v for v in op.inputs if v is not None]
        all_constant = all(kinds.is_constant(v) for v in present)
        data = op.inputs[data_input(op)] if len(op.inputs) > data_input(op) and not op.has_subgraphs else None
        for position, out in enumerate(op.outputs):
            if all_constant:
                kinds.constant.add(id(out))
            if (_integer_dtype(out.dtype) or op.op_type in INDEX_PRODUCERS or _casts_to_index(op)
                    or position in INDEX_OUTPUTS.get(op.op_type, ()) or kinds.is_index(data)):
                kinds.index.add(id(out))
    return kinds


def _integer_dtype(dtype) -> bool:
    return dtype is not None and np.dtype(dtype).kind in "iub"


def _casts_to_index(op: Operation) -> bool:
    if op.op_type != "Cast" or "to" not in op.attributes:
        return False
    return _integer_dtype(helper.tensor_dtype_to_np_dtype(op.attributes["to"]))
