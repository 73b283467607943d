"""The quantization policy bitmap, the TQC state machine and rounding policies."""

from __future__ import annotations

import enum


class QuantizationPolicy(enum.IntFlag):
    """What a tensor quantization looks like, as a combination of flags.

    Exactly one of SYMMETRICAL/ASYMMETRICAL, one granularity (PER_TENSOR,
    PER_CHANNEL, PER_BLOCK) and one of LINEAR/FLOATING must be set.
    POWER_OF_2 and DYNAMIC are optional modifiers.
    """

    SYMMETRICAL = 1 << 0
    ASYMMETRICAL = 1 << 1
    PER_TENSOR = 1 << 2
    PER_CHANNEL = 1 << 3
    LINEAR = 1 << 4
    FLOATING = 1 << 5
    POWER_OF_2 = 1 << 6
    DYNAMIC = 1 << 7
    PER_BLOCK = 1 << 8

    def has(self, flag: QuantizationPolicy) -> bool:
        return bool(self & flag)

    def describe(self) -> str:
        """Readable form, e.g. 'SYMMETRICAL|PER_CHANNEL|LINEAR'."""
        return "|".join(f.name for f in QuantizationPolicy if f in self and f.name)


_EXCLUSIVE_GROUPS: tuple[tuple[str, tuple[QuantizationPolicy, ...]], ...] = (
    ("symmetry", (QuantizationPolicy.SYMMETRICAL, QuantizationPolicy.ASYMMETRICAL)),
    (
        "granularity",
        (QuantizationPolicy.PER_TENSOR, QuantizationPolicy.PER_CHANNEL, QuantizationPolicy.PER_BLOCK),
    ),
    ("number format", (QuantizationPolicy.LINEAR, QuantizationPolicy.FLOATING)),
)


def policy_problems(policy: QuantizationPolicy) -> list[str]:
    """Every reason why ``policy`` is not a valid combination (empty when valid)."""
    problems = []
    for group, flags in _EXCLUSIVE_GROUPS:
        chosen = [f.name for f in flags if policy & f]
        if len(chosen) != 1:
            names = " / ".join(f.name for f in flags)
            got = ", ".join(chosen) if chosen else "none"
            problems.append(f"exactly one {group} flag ({names}) is required, got {got}")
    if policy & QuantizationPolicy.POWER_OF_2 and policy & QuantizationPolicy.FLOATING:
        problems.append("POWER_OF_2 scales apply to LINEAR formats only, not FLOATING")
    return problems


class QuantizationState(enum.Enum):
    """Life cycle of a tensor quantization config.

    INITIAL -> ACTIVATED (calibrated) -> BAKED (values stored quantized).
    OVERLAPPED: shares another config's parameters (fusion, alignment).
    PASSIVE_INIT -> PASSIVE: parameters derived from other configs (bias).
    FP32: this tensor is not quantized at this place (kept float, or fused:
    e.g. a Conv output that a following Relu quantizes).
    Only the methods of :class:`qtool.quant.plan.PlannedConfig` change a state.
    """

    INITIAL = "initial"
    ACTIVATED = "activated"
    BAKED = "baked"
    OVERLAPPED = "overlapped"
    PASSIVE_INIT = "passive_init"
    PASSIVE = "passive"
    PASSIVE_BAKED = "passive_baked"
    FP32 = "fp32"


class RoundingPolicy(enum.Enum):
    HALF_EVEN = "half_even"
    HALF_UP = "half_up"
    HALF_DOWN = "half_down"
    HALF_TOWARD_ZERO = "half_toward_zero"
    HALF_AWAY_FROM_ZERO = "half_away_from_zero"
    CEIL = "ceil"
    FLOOR = "floor"
