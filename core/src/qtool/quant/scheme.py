"""QuantScheme: a frozen, validated description of how one tensor is quantized."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from .policy import QuantizationPolicy as P
from .policy import RoundingPolicy, policy_problems

# eXmY formats that use the all-ones exponent for finite numbers (no infinities):
# e4m3fn keeps one NaN code there; the OCP MX formats keep no special values at all.
_NAN_ONLY_FORMATS = {(4, 3)}
_NO_SPECIAL_FORMATS = {(3, 2), (2, 3), (2, 1)}


def float_format_max(exponent_bits: int, mantissa_bits: int) -> float:
    """Largest finite value of an eXmY floating format (e4m3fn -> 448, e5m2 -> 57344, e2m1 -> 6)."""
    bias = 2 ** (exponent_bits - 1) - 1
    fmt = (exponent_bits, mantissa_bits)
    if fmt in _NO_SPECIAL_FORMATS:
        return (2.0 - 2.0**-mantissa_bits) * 2.0 ** (2**exponent_bits - 1 - bias)
    if fmt in _NAN_ONLY_FORMATS:
        return (2.0 - 2.0 ** -(mantissa_bits - 1)) * 2.0 ** (2**exponent_bits - 1 - bias)
    return (2.0 - 2.0**-mantissa_bits) * 2.0**bias


@dataclass(frozen=True)
class QuantScheme:
    """How a tensor is quantized: policy, width, integer range, axis, rounding, observer.

    For LINEAR schemes ``quant_min``/``quant_max`` are the integer code range and
    may be any range that fits ``num_of_bits`` as signed or unsigned (e.g. int8
    asymmetric with [-128, 127]). For FLOATING schemes they are the largest
    representable values of the eXmY format.
    """

    policy: P
    num_of_bits: int
    quant_min: float
    quant_max: float
    exponent_bits: int = 0
    channel_axis: int | None = None
    block_size: int | None = None
    rounding: RoundingPolicy = RoundingPolicy.HALF_EVEN
    observer: str = "minmax"

    def __post_init__(self) -> None:
        problems = self.problems()
        if problems:
            raise ValueError(f"invalid quantization scheme ({self.short()}): " + "; ".join(problems))

    # -- construction -----------------------------------------------------
    @classmethod
    def integer(
        cls,
        bits: int = 8,
        *,
        signed: bool = True,
        symmetric: bool = True,
        per_channel: bool = False,
        channel_axis: int | None = None,
        block_size: int | None = None,
        power_of_2: bool = False,
        dynamic: bool = False,
        quant_min: int | None = None,
        quant_max: int | None = None,
        rounding: RoundingPolicy = RoundingPolicy.HALF_EVEN,
        observer: str = "minmax",
    ) -> QuantScheme:
        """An integer scheme; the range defaults to the full signed/unsigned range of ``bits``."""
        if quant_min is None:
            quant_min = -(2 ** (bits - 1)) if signed else 0
        if quant_max is None:
            quant_max = 2 ** (bits - 1) - 1 if signed else 2**bits - 1
        policy = P.LINEAR | (P.SYMMETRICAL if symmetric else P.ASYMMETRICAL)
        if block_size is not None:
            policy |= P.PER_BLOCK
        else:
            policy |= P.PER_CHANNEL if per_channel else P.PER_TENSOR
        if power_of_2:
            policy |= P.POWER_OF_2
        if dynamic:
            policy |= P.DYNAMIC
        return cls(policy, bits, quant_min, quant_max, 0, channel_axis, block_size, rounding, observer)

    @classmethod
    def floating(
        cls,
        exponent_bits: int = 4,
        mantissa_bits: int = 3,
        *,
        per_channel: bool = False,
        channel_axis: int | None = None,
        rounding: RoundingPolicy = RoundingPolicy.HALF_EVEN,
        observer: str = "minmax",
    ) -> QuantScheme:
        """An eXmY floating scheme (fp8 e4m3 by default), symmetric by nature."""
        top = float_format_max(exponent_bits, mantissa_bits)
        policy = P.FLOATING | P.SYMMETRICAL | (P.PER_CHANNEL if per_channel else P.PER_TENSOR)
        return cls(
            policy, 1 + exponent_bits + mantissa_bits, -top, top, exponent_bits, channel_axis, None, rounding, observer
        )

    def with_changes(self, **changes) -> QuantScheme:
        return dataclasses.replace(self, **changes)

    # -- derived facts ------------------------------------------------------
    @property
    def is_floating(self) -> bool:
        return bool(self.policy & P.FLOATING)

    @property
    def is_symmetric(self) -> bool:
        return bool(self.policy & P.SYMMETRICAL)

    @property
    def is_per_channel(self) -> bool:
        return bool(self.policy & (P.PER_CHANNEL | P.PER_BLOCK))

    @property
    def mantissa_bits(self) -> int:
        return self.num_of_bits - 1 - self.exponent_bits if self.is_floating else 0

    @property
    def is_signed(self) -> bool:
        """True when the code range needs a signed storage type."""
        return self.quant_min < 0

    def short(self) -> str:
        """Compact description, e.g. 'int8 asym per-tensor [-128, 127]', 'fp8 e4m3', 'fp8 e4m3 per-channel(axis=0)'
        or 'bf16 e8m7' (a floating format per tensor: no granularity said)."""
        if self.policy & P.PER_BLOCK:
            gran = f"per-block(axis={self.channel_axis}, size={self.block_size})"
        elif self.policy & P.PER_CHANNEL:
            gran = f"per-channel(axis={self.channel_axis})"
        else:
            gran = "per-tensor"
        if self.policy & P.FLOATING:
            name = "bf16" if (self.num_of_bits, self.exponent_bits) == (16, 8) else f"fp{self.num_of_bits}"
            return f"{name} e{self.exponent_bits}m{self.mantissa_bits}" + ("" if gran == "per-tensor" else f" {gran}")
        kind = "int" if self.quant_min < 0 else "uint"
        sym = "sym" if self.policy & P.SYMMETRICAL else "asym"
        extra = " pow2" if self.policy & P.POWER_OF_2 else ""
        extra += " dynamic" if self.policy & P.DYNAMIC else ""
        return f"{kind}{self.num_of_bits} {sym} {gran} [{int(self.quant_min)}, {int(self.quant_max)}]{extra}"

    def problems(self) -> list[str]:
        """Every reason this scheme is invalid, each naming the field in conflict."""
        problems = policy_problems(self.policy)
        if self.policy & (P.PER_CHANNEL | P.PER_BLOCK) and self.channel_axis is None:
            problems.append("channel_axis is required for per-channel and per-block schemes")
        if self.policy & P.PER_BLOCK and (self.block_size is None or self.block_size < 1):
            problems.append("block_size >= 1 is required for per-block schemes")
        if self.policy & P.FLOATING:
            problems += self._float_problems()
        else:
            problems += self._integer_problems()
        return problems

    def _integer_problems(self) -> list[str]:
        bits, lo, hi = self.num_of_bits, self.quant_min, self.quant_max
        if not (1 <= bits <= 16 or bits == 32):
            return [f"num_of_bits={bits}: integer schemes take 1 to 16 bits (32 for int32 bias)"]
        if self.exponent_bits:
            return ["exponent_bits applies to FLOATING schemes only"]
        if lo != int(lo) or hi != int(hi):
            return [f"quant_min/quant_max must be integers, got [{lo}, {hi}]"]
        if lo >= hi:
            return [f"quant_min ({lo}) must be below quant_max ({hi})"]
        signed_fits = -(2 ** (bits - 1)) <= lo and hi <= 2 ** (bits - 1) - 1
        unsigned_fits = 0 <= lo and hi <= 2**bits - 1
        if not (signed_fits or unsigned_fits):
            return [
                f"range [{int(lo)}, {int(hi)}] does not fit {bits} bits "
                f"(signed [{-(2 ** (bits - 1))}, {2 ** (bits - 1) - 1}] or unsigned [0, {2**bits - 1}])"
            ]
        if lo > 0:
            return [f"quant_min={int(lo)}: the range must contain 0 so that zero stays exact"]
        return []

    def _float_problems(self) -> list[str]:
        if self.exponent_bits < 1:
            return ["FLOATING schemes need exponent_bits >= 1"]
        if self.mantissa_bits < 0:
            return [f"exponent_bits={self.exponent_bits} leaves no room in {self.num_of_bits} bits"]
        if not self.quant_min < 0 < self.quant_max:
            return ["FLOATING schemes need quant_min < 0 < quant_max"]
        return []
