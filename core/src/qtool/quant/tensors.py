"""Walk a graph's quantized tensors once each, for exporters and reports.

A tensor read by several ops has one config per reader plus one at its
producer; after simplification they share a dominator. :func:`quantized_tensors`
yields one :class:`QuantizedTensor` per (tensor name, dominator) pair, in
topological order, at the first place the pair appears (the producer's output
before any reader, since producers come first).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np

from .plan import configured, quantizes
from .tqc import TensorQuantizationConfig


@dataclass(frozen=True)
class QuantizedTensor:
    """One quantized tensor at one place: ``op``'s input or output number ``index``."""

    op: object  # qtool.ir.Operation (not imported: the IR imports quant)
    side: str  # "input" or "output"
    index: int
    tensor: str
    config: TensorQuantizationConfig

    @property
    def role(self) -> str:
        return self.config.role

    @property
    def scheme(self):
        return self.config.scheme

    @property
    def scale(self) -> np.ndarray:
        return np.asarray(self.config.scale, dtype=np.float32)

    @property
    def offset(self) -> np.ndarray:
        return np.asarray(self.config.offset)

    @property
    def settled(self) -> bool:
        return self.config.is_settled

    @property
    def range(self) -> tuple[np.ndarray, np.ndarray]:
        """The lowest and highest representable float values (per channel when per-channel)."""
        return representable_range(self.config)


def representable_range(tqc: TensorQuantizationConfig) -> tuple[np.ndarray, np.ndarray]:
    """``((quant_min - zp) * scale, (quant_max - zp) * scale)`` of a settled config, as float64."""
    scheme = tqc.scheme
    scale = np.asarray(tqc.scale, dtype=np.float64)
    if scheme.is_floating:
        return scheme.quant_min * scale, scheme.quant_max * scale
    zero = np.asarray(tqc.offset, dtype=np.float64)
    return (scheme.quant_min - zero) * scale, (scheme.quant_max - zero) * scale


def quantized_tensors(graph, *, roles: Iterable[str] | None = None, settled: bool = True) -> Iterator[QuantizedTensor]:
    """Every quantized tensor of ``graph`` once per dominator.

    ``roles`` keeps only configs of those roles ("activation", "weight", "bias").
    ``settled`` True keeps configs whose parameters are known (the ones that are
    simulated and exported); False also yields configs still waiting for them
    (INITIAL, PASSIVE_INIT), for checks that run before calibration.
    """
    wanted = set(roles) if roles is not None else None
    seen: set[tuple[str, int]] = set()
    for op in graph.topological_order():
        for side, index, var, tqc in configured(op):
            if not quantizes(tqc, settled) or (wanted is not None and tqc.role not in wanted):
                continue
            key = (var.name, id(tqc.dominator))
            if key not in seen:
                seen.add(key)
                yield QuantizedTensor(op, side, index, var.name, tqc)
