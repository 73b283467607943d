"""The min/max observer: the range is everything seen."""

from __future__ import annotations

import numpy as np

from .base import Observer


class MinMaxObserver(Observer):
    """Running minimum and maximum (per channel for per-channel schemes)."""

    name = "minmax"
    heavy = False

    def __init__(self, scheme) -> None:
        super().__init__(scheme)
        self.lo: np.ndarray | None = None
        self.hi: np.ndarray | None = None

    def _observe_rows(self, rows, lo, hi, finite) -> None:
        self.lo = lo if self.lo is None else np.minimum(self.lo, lo)
        self.hi = hi if self.hi is None else np.maximum(self.hi, hi)

    def range(self) -> tuple[np.ndarray, np.ndarray]:
        lo, hi = self.lo.astype(np.float64), self.hi.astype(np.float64)
        empty = lo > hi  # channels without a finite value
        return self._shaped(np.where(empty, 0.0, lo)), self._shaped(np.where(empty, 0.0, hi))
