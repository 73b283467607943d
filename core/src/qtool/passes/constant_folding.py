"""A weight that reaches its layer through a Transpose, Reshape, Cast, Flatten, Squeeze or Unsqueeze of constants
(an export without constant folding: torch's ``do_constant_folding=False``, a tied embedding read transposed) as
the constant it is, so that it is quantized as a weight (per channel, codes stored) and not as an activation
(per tensor, a QuantizeLinear at every inference). Only ops that move or convert values exactly are folded."""

from __future__ import annotations

import ml_dtypes
import numpy as np

from ..ir import Graph, Operation

FOLDED_OP_TYPES = frozenset({"Transpose", "Reshape", "Cast", "Flatten", "Squeeze", "Unsqueeze"})


def folded_value(graph: Graph, op: Operation) -> np.ndarray | None:
    """The value of ``op``'s output where it computes it from constants alone, exactly; None where it does not (a
    graph output keeps its producer, so that the model's interface stays)."""
    if op.op_type not in FOLDED_OP_TYPES or op.domain not in ("", "ai.onnx") or len(op.outputs) != 1:
        return None
    present = [var for var in op.inputs if var is not None]
    if not present or not all(var.is_parameter for var in present) or op.outputs[0] in graph.outputs:
        return None
    data = np.asarray(op.inputs[0].value)
    return _COMPUTE[op.op_type](op, data)


def fold(graph: Graph, op: Operation, value: np.ndarray) -> None:
    """Replace ``op`` by its output as a parameter of ``value`` (the output keeps its name and readers)."""
    out = op.outputs[0]
    graph.remove_operation(op)
    out.value, out.dtype, out.shape = value, value.dtype, list(value.shape)


def _operand(op: Operation, index: int, attribute: str):
    """An operand given as input ``index`` (newer opsets) or as ``attribute`` (older ones); None when absent."""
    if len(op.inputs) > index and op.inputs[index] is not None:
        return [int(v) for v in np.asarray(op.inputs[index].value).reshape(-1)]
    value = op.attributes.get(attribute)
    return None if value is None else [int(v) for v in value]


def _transpose(op: Operation, data: np.ndarray) -> np.ndarray:
    perm = op.attributes.get("perm")
    return np.ascontiguousarray(np.transpose(data, None if perm is None else [int(p) for p in perm]))


def _reshape(op: Operation, data: np.ndarray) -> np.ndarray | None:
    shape = _operand(op, 1, "shape")
    if shape is None:
        return None
    if not op.attributes.get("allowzero", 0):  # 0 copies the input's dimension
        shape = [data.shape[i] if d == 0 and i < data.ndim else d for i, d in enumerate(shape)]
    return data.reshape(shape)


def _cast(op: Operation, data: np.ndarray) -> np.ndarray | None:
    """Between numpy's float types (rounding to nearest even, as ONNX Runtime casts), and from bfloat16 or a float 8
    type up to float32 or float64, which holds every value exactly (a bfloat16-stored weight Cast to float32 was
    quantized as an activation); integer casts and casts down to those types (ONNX Runtime's rounding) stay."""
    from onnx import helper

    target = np.dtype(helper.tensor_dtype_to_np_dtype(int(op.attributes["to"])))
    floats = (np.float16, np.float32, np.float64)
    if target in floats and (data.dtype in floats or data.dtype in _WIDENED and target != np.float16):
        return data.astype(target)
    return None


# ml_dtypes' float types whose every value float32 holds (NaN included): a Cast up from them is exact
_WIDENED = frozenset(np.dtype(t) for t in (ml_dtypes.bfloat16, ml_dtypes.float8_e4m3fn, ml_dtypes.float8_e4m3fnuz,
                                           ml_dtypes.float8_e5m2, ml_dtypes.float8_e5m2fnuz))


def _flatten(op: Operation, data: np.ndarray) -> np.ndarray:
    axis = int(op.attributes.get("axis", 1)) % (data.ndim + 1) if data.ndim else 0
    return data.reshape(int(np.prod(data.shape[:axis])), -1)


def _squeeze(op: Operation, data: np.ndarray) -> np.ndarray:
    axes = _operand(op, 1, "axes")
    return np.squeeze(data, axis=None if axes is None else tuple(a % data.ndim for a in axes))


def _unsqueeze(op: Operation, data: np.ndarray) -> np.ndarray | None:
    axes = _operand(op, 1, "axes")
    if axes is None:
        return None
    rank = data.ndim + len(axes)
    return np.expand_dims(data, tuple(sorted(a % rank for a in axes)))


_COMPUTE = {"Transpose": _transpose, "Reshape": _reshape, "Cast": _cast, "Flatten": _flatten, "Squeeze": _squeeze,
            "Unsqueeze": _unsqueeze}
