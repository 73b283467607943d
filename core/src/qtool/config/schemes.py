"""Scheme tables -> validated QuantScheme, with conflicts named by key."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..quant import QuantizationPolicy as P
from ..quant import QuantScheme, RoundingPolicy, float_format_max
from .schema import FLOAT_FORMATS, SCHEME_KEYS

_GRANULARITY_FLAGS = {"per_tensor": P.PER_TENSOR, "per_channel": P.PER_CHANNEL, "per_block": P.PER_BLOCK}
ROLE_GRANULARITY = {"activation": "per_tensor", "weight": "per_channel"}
ACTIVATION_AXIS = 1
_AXIS_PLACEHOLDER = 99  # stands for "the op's natural axis" in descriptions


class SchemeConflict(ValueError):
    """Keys of one scheme table that cannot go together; ``keys`` names them."""

    def __init__(self, keys: tuple[str, ...], message: str) -> None:
        super().__init__(message)
        self.keys = keys


def build_scheme(table: Mapping[str, Any], role: str, *, axis: int | None = None,
                 default_observer: str = "minmax") -> QuantScheme:
    """The QuantScheme a merged scheme table describes for ``role``.

    ``axis`` is the channel axis to use when the table gives none (the op's
    natural weight axis, or 1 for activations). Raises SchemeConflict.
    """
    granularity = table.get("granularity", ROLE_GRANULARITY[role])
    policy = _GRANULARITY_FLAGS[granularity]
    if table.get("dynamic", SCHEME_KEYS["dynamic"].default):
        policy |= P.DYNAMIC
    elif role == "activation" and granularity == "per_block":  # RuntimeCalibration refused it, after the planning
        raise SchemeConflict(("granularity",), "activations are calibrated per tensor or per channel, not per "
                             "block (per_block is for weights)")
    channel_axis, block_size = _axis_and_block(table, granularity, axis)
    common = {"channel_axis": channel_axis, "block_size": block_size,
              "rounding": RoundingPolicy(table.get("rounding", SCHEME_KEYS["rounding"].default)),
              "observer": table.get("observer") or default_observer}
    fmt = table.get("format", SCHEME_KEYS["format"].default)
    fields = _integer_fields(table, policy) if fmt == "int" else _float_fields(table, fmt, policy)
    try:
        return QuantScheme(**fields, **common)
    except ValueError as exc:
        raise SchemeConflict(tuple(table), str(exc)) from None


def _axis_and_block(table: Mapping[str, Any], granularity: str, axis: int | None) -> tuple[int | None, int | None]:
    if granularity == "per_tensor":
        if "axis" in table:
            raise SchemeConflict(("axis", "granularity"), "axis applies to per_channel and per_block only")
        return None, _block_size(table, granularity)
    channel_axis = table.get("axis", axis)
    if channel_axis is None:
        raise SchemeConflict(("granularity",), f"granularity = {granularity!r} needs an axis: "
                             "set 'axis' (this op has no natural channel axis)")
    return channel_axis, _block_size(table, granularity)


def _block_size(table: Mapping[str, Any], granularity: str) -> int | None:
    if granularity == "per_block":
        if "block_size" not in table:
            raise SchemeConflict(("granularity",), "granularity = 'per_block' needs 'block_size'")
        return table["block_size"]
    if "block_size" in table:
        raise SchemeConflict(("block_size", "granularity"), "block_size applies to granularity = 'per_block' only")
    return None


def _integer_fields(table: Mapping[str, Any], policy: P) -> dict[str, Any]:
    for key in ("exponent_bits", "mantissa_bits"):
        if key in table:
            raise SchemeConflict((key, "format"), f"{key} applies to float formats only (format = 'int')")
    bits = table.get("bits", SCHEME_KEYS["bits"].default)
    lo, hi = table.get("quant_min"), table.get("quant_max")
    signed = table.get("signed")
    if signed is not None and lo is not None and (lo < 0) != signed:
        raise SchemeConflict(("signed", "quant_min"), f"signed = {str(signed).lower()} conflicts with "
                             f"quant_min = {lo}")
    if signed is None:
        signed = lo < 0 if lo is not None else SCHEME_KEYS["signed"].default
    if lo is None:
        lo = -(2 ** (bits - 1)) if signed else 0
    if hi is None:
        hi = 2 ** (bits - 1) - 1 if signed else 2**bits - 1
    policy |= P.LINEAR | (P.SYMMETRICAL if table.get("symmetric", True) else P.ASYMMETRICAL)
    if table.get("power_of_2", False):
        policy |= P.POWER_OF_2
    return {"policy": policy, "num_of_bits": bits, "quant_min": lo, "quant_max": hi}


def _float_fields(table: Mapping[str, Any], fmt: str, policy: P) -> dict[str, Any]:
    for key, allowed in (("signed", True), ("symmetric", True), ("power_of_2", False)):
        if key in table and table[key] != allowed:
            raise SchemeConflict((key, "format"), f"{key} = {str(table[key]).lower()} conflicts with "
                                 f"format = {fmt!r}: float formats are signed and symmetric, with plain scales")
    for key in ("quant_min", "quant_max"):
        if key in table:
            raise SchemeConflict((key, "format"), f"{key} conflicts with format = {fmt!r}: "
                                 "a float format's range is fixed by its exponent and mantissa")
    exponent, mantissa = _float_widths(table, fmt)
    top = float_format_max(exponent, mantissa)
    return {"policy": policy | P.FLOATING | P.SYMMETRICAL, "num_of_bits": 1 + exponent + mantissa,
            "quant_min": -top, "quant_max": top, "exponent_bits": exponent}


def _float_widths(table: Mapping[str, Any], fmt: str) -> tuple[int, int]:
    given = {k: table[k] for k in ("bits", "exponent_bits", "mantissa_bits") if k in table}
    if fmt in FLOAT_FORMATS:
        exponent, mantissa = FLOAT_FORMATS[fmt]
        expected = {"bits": 1 + exponent + mantissa, "exponent_bits": exponent, "mantissa_bits": mantissa}
        for key, value in given.items():
            if value != expected[key]:
                raise SchemeConflict((key, "format"), f"{key} = {value} conflicts with format = {fmt!r} "
                                     f"({key} = {expected[key]})")
        return exponent, mantissa
    if "exponent_bits" not in given:
        raise SchemeConflict(("format",), "format = 'float' needs exponent_bits (and bits or mantissa_bits)")
    exponent = given["exponent_bits"]
    if "mantissa_bits" in given and "bits" in given and given["bits"] != 1 + exponent + given["mantissa_bits"]:
        raise SchemeConflict(("bits", "exponent_bits", "mantissa_bits"),
                             f"bits = {given['bits']} but 1 + exponent_bits + mantissa_bits = "
                             f"{1 + exponent + given['mantissa_bits']}")
    if "mantissa_bits" in given:
        mantissa = given["mantissa_bits"]
    else:
        mantissa = table.get("bits", SCHEME_KEYS["bits"].default) - 1 - exponent
    if mantissa < 0 or 1 + exponent + mantissa > 16:
        raise SchemeConflict(tuple(given), f"1 + exponent_bits + mantissa_bits must be 2 to 16 bits, "
                             f"got e{exponent}m{mantissa}")
    return exponent, mantissa


def describe_scheme(table: Mapping[str, Any] | None, role: str, default_observer: str) -> str:
    """A short line for explain output: 'float' or the scheme with the axis left symbolic."""
    if table is None:
        return "float"
    try:
        axis = ACTIVATION_AXIS if role == "activation" else _AXIS_PLACEHOLDER
        scheme = build_scheme(table, role, axis=axis, default_observer=default_observer)
    except SchemeConflict as exc:
        return f"invalid ({exc})"
    text = scheme.short().replace(f"axis={_AXIS_PLACEHOLDER}", "axis=natural")
    return f"{text}, {scheme.rounding.value}, observer {scheme.observer}"
