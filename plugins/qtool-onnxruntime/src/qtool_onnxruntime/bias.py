"""int32 biases as ONNX Runtime's integer kernels read them.

QLinearConv and QGemm take the bias DequantizeLinear's int32 codes and assume
scale = s_in * s_w and zero point 0. ORT checks that for Conv (falling back to
float) but not for Gemm / MatMul + Add, whose results are then wrong (this
plugin's tests show it). A bias quantized any other way is therefore written
as float values on its grid, which every kernel reads right.
"""

from __future__ import annotations

import numpy as np

from .configs import input_config
from .storage import storage_type

BIAS_INPUT = {"Conv": 2, "ConvTranspose": 2, "Gemm": 2}
_RTOL = 1e-6


def is_bias(op, index: int) -> bool:
    return BIAS_INPUT.get(op.op_type) == index


def misread_reason(op, tqc) -> str | None:
    """Why ORT would misread ``op``'s quantized bias written as int32 codes (None: it reads it right).

    Needs settled parameters; call it on calibrated graphs only.
    """
    stype = storage_type(tqc.scheme, stored=True)
    if stype is None or stype.name != "int32":
        return f"it is {tqc.scheme.short()}, not int32"
    x, w = input_config(op, 0, True), input_config(op, 1, True)
    if x is None or w is None or x.scheme.is_per_channel:
        return "its op's input or weight is not quantized per tensor / per channel, so there is no s_in * s_w"
    if np.any(np.asarray(tqc.offset) != 0):
        return "its zero point is not 0"
    expected = np.asarray(x.scale, np.float64) * np.asarray(w.scale, np.float64)
    scale = np.asarray(tqc.scale, np.float64)
    try:
        matches = np.allclose(scale, expected, rtol=_RTOL, atol=0.0)
    except ValueError:  # shapes that do not broadcast
        matches = False
    return None if matches else "its scale is not s_in * s_w"
