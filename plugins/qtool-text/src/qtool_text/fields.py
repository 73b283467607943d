"""How each column of the table spells a scheme's parts and its parameters, both ways."""

from __future__ import annotations

import numpy as np
import qtool

COLUMNS = ("op", "place", "tensor", "role", "policy", "bits", "codes", "axis", "range", "scale", "zero_point")


def place(side: str, index: int) -> str:
    return f"{'in' if side == 'input' else 'out'}:{index}"


def parse_place(text: str) -> tuple[str, int] | None:
    side, _, index = text.partition(":")
    if side not in ("in", "out") or not index.isdigit():
        return None
    return ("input" if side == "in" else "output"), int(index)


def codes(scheme: qtool.QuantScheme) -> str:
    """Integer schemes: ``qmin..qmax``; float formats: ``eXmY:max``."""
    if scheme.is_floating:
        return f"e{scheme.exponent_bits}m{scheme.mantissa_bits}:{scheme.quant_max:g}"
    return f"{int(scheme.quant_min)}..{int(scheme.quant_max)}"


def axis(scheme: qtool.QuantScheme) -> str:
    """``-`` per tensor, the axis per channel, ``axis/block_size`` per block."""
    if not scheme.is_per_channel:
        return "-"
    if scheme.block_size is not None:
        return f"{scheme.channel_axis}/{scheme.block_size}"
    return str(scheme.channel_axis)


def scheme_fields(scheme: qtool.QuantScheme) -> tuple[str, str, str, str]:
    """The policy, bits, codes and axis columns: what a line says of its scheme."""
    return scheme.policy.describe(), str(scheme.num_of_bits), codes(scheme), axis(scheme)


def values(array, integer: bool) -> str:
    """Comma-separated shortest exact spellings (float32 round-trips exactly), after ``AxBxC:`` for N-D arrays."""
    array = np.asarray(array)
    shape = "x".join(map(str, array.shape)) + ":" if array.ndim > 1 else ""
    return shape + ",".join(str(int(v)) if integer else str(np.float32(v)) for v in array.reshape(-1))


def parse_values(text: str, dtype) -> np.ndarray:
    """Inverse of :func:`values`; ValueError when a value or the shape does not parse."""
    shape, _, listed = text.rpartition(":")
    parsed = np.array([dtype(v) for v in listed.split(",")], dtype=dtype)
    if shape:
        return parsed.reshape([int(d) for d in shape.split("x")])
    return parsed.reshape(()) if parsed.size == 1 else parsed


def value_range(entry: qtool.QuantizedTensor) -> str:
    """The representable float range; per channel, lowest..highest over the channels."""
    lo, hi = entry.range
    return f"{float(np.min(lo)):.6g}..{float(np.max(hi)):.6g}"
