"""The float function of a tensor as a comparable key: what a float run of the graph computes it from.

Passes after a float run may rewrite the graph or replace weights; a value computed by that run stays valid only
while the key of its tensor is unchanged: the ops it is computed from (by identity), their types, attributes,
inputs and outputs, and the float arrays of the parameters they read (by identity, not kept alive). A parameter
counts by the float array a float run reads (``float_value`` where set, as ONNX Runtime's float run and the
executor read it): baking a weight, or giving a reader a private copy of it, leaves the float function as it was.
"""

from __future__ import annotations

import weakref

import numpy as np

from .graph import Graph, Operation, Variable


class FloatFunctions:
    """The keys of ``graph``'s tensors as the graph is now (op keys cached: make a new one after a change)."""

    def __init__(self, graph: Graph) -> None:
        self.graph = graph
        self._ops: dict[Operation, tuple] = {}
        self._tensors: dict[str, frozenset] = {}

    def key(self, name: str) -> frozenset:
        """The keys of every op the tensor ``name`` is computed from, with the tensor itself."""
        if name not in self._tensors:
            self._tensors[name] = self._cone(name)
        return self._tensors[name]

    def _cone(self, name: str) -> frozenset:
        var = self.graph.variables.get(name)
        found: set = {_var_key(var)}
        stack, seen = [var.producer] if var is not None and var.producer is not None else [], set()
        while stack:
            op = stack.pop()
            if op in seen:
                continue
            seen.add(op)
            if op not in self._ops:
                self._ops[op] = _op_key(op)
            found.add(self._ops[op])
            stack.extend(v.producer for v in op.inputs if v is not None and v.producer is not None)
        return frozenset(found)


class _Same:
    """An array (or None) compared by identity, not kept alive: a new array is a new value, and an array no longer
    alive was replaced (no key holds a weight a pass replaced)."""

    __slots__ = ("ref", "key")

    def __init__(self, array: np.ndarray | None) -> None:
        self.ref, self.key = (None if array is None else weakref.ref(array)), id(array)

    def __eq__(self, other) -> bool:
        if not isinstance(other, _Same) or self.key != other.key or (self.ref is None) != (other.ref is None):
            return False
        return self.ref is None or (self.ref() is not None and self.ref() is other.ref())

    def __hash__(self) -> int:
        return self.key


def _var_key(var: Variable | None) -> tuple | Variable | None:
    """A parameter by the float array a float run reads; any other tensor by its variable."""
    if var is None or not var.is_parameter:
        return var
    return ("parameter", _Same(var.value if var.float_value is None else var.float_value))


def _op_key(op: Operation) -> tuple:
    """What an op's float result depends on besides its inputs' values: type, attributes, inputs, parameters."""
    attributes = tuple((name, _attribute_key(value)) for name, value in sorted(op.attributes.items()))
    return (op, op.op_type, op.domain, attributes, tuple(map(_var_key, op.inputs)), tuple(op.outputs))


def _attribute_key(value) -> object:
    """An attribute's value, comparable: an array by its type, shape and bytes (its repr elides large arrays, and
    took numpy's printing machinery 0.6 ms an array), a list item by item, anything else by its repr."""
    if isinstance(value, np.ndarray):
        return ("array", value.dtype.str, value.shape, value.tobytes())
    if isinstance(value, list | tuple):
        return tuple(_attribute_key(item) for item in value)
    return repr(value)
