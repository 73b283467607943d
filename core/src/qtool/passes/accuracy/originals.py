"""Parameters that accuracy passes replace, and the float values they replaced.

A pass that stores learned quantized values (AdaRound) keeps the float value
in the weight config's ``notes``; :func:`float_values` puts those back for a
while, so that float reference runs see the model as it was.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np

from ...ir import Graph, Operation, Variable
from ...quant import TensorQuantizationConfig

FLOAT_VALUE = "float_value"


def replace_parameter(graph: Graph, op: Operation, index: int, value: np.ndarray) -> Variable:
    """Give ``op``'s input ``index`` the value ``value``: in place, or a private copy when others read it."""
    var = op.inputs[index]
    if len(set(map(id, var.consumers))) > 1 or var in graph.outputs:
        var = graph.add_variable(graph.unique_name(f"{var.name}_{op.name}"), np.asarray(value, dtype=var.dtype))
        graph.set_input(op, index, var)
    else:
        var.value = np.asarray(value, dtype=var.dtype)
    return var


def store_quantized(graph: Graph, op: Operation, index: int, tqc: TensorQuantizationConfig,
                    value: np.ndarray) -> None:
    """Replace a parameter by quantized values, remembering its float value in ``tqc.notes``."""
    tqc.notes.setdefault(FLOAT_VALUE, np.array(op.inputs[index].value))
    replace_parameter(graph, op, index, value)


@contextmanager
def float_values(graph: Graph) -> Iterator[None]:
    """Parameters replaced by :func:`store_quantized` hold their float values inside the block."""
    swapped: list[tuple[Variable, np.ndarray]] = []
    for op in graph.operations.values():
        if op.quant is None:
            continue
        for var, tqc in zip(op.inputs, op.quant.inputs, strict=False):
            if var is not None and tqc is not None and FLOAT_VALUE in tqc.notes:
                swapped.append((var, var.value))
                var.value = tqc.notes[FLOAT_VALUE]
    try:
        yield
    finally:
        for var, value in swapped:
            var.value = value
