"""Replacing parameter values, keeping the float ones for float simulation.

A pass that stores learned quantized values (AdaRound) leaves the float value
in ``Variable.float_value``, as Baking does: the executor's float runs read
it, quantized runs and export read ``value``.
"""

from __future__ import annotations

import numpy as np

from ...ir import Graph, Operation, Variable


def replace_parameter(graph: Graph, op: Operation, index: int, value: np.ndarray) -> Variable:
    """Give ``op``'s input ``index`` the value ``value``: in place, or a private copy when others read it."""
    var = op.inputs[index]
    if len(set(map(id, var.consumers))) > 1 or var in graph.outputs:
        copy = graph.add_variable(graph.unique_name(f"{var.name}_{op.name}"), np.asarray(value, dtype=var.dtype))
        copy.float_value = var.float_value
        graph.set_input(op, index, copy)
        return copy
    var.value = np.asarray(value, dtype=var.dtype)
    return var


def store_quantized(graph: Graph, op: Operation, index: int, value: np.ndarray) -> Variable:
    """Replace a parameter by quantized values, keeping its float value in ``float_value``."""
    original = op.inputs[index]
    float_value = original.float_value if original.float_value is not None else np.array(original.value)
    var = replace_parameter(graph, op, index, value)
    var.float_value = float_value
    return var
