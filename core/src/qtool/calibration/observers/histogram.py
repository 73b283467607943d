"""A fixed-size histogram that widens itself exactly, and the observers built on it.

Bins have a power-of-two width ``2**e`` and sit on the grid anchored at zero:
bin ``a`` (an absolute index) holds ``[a * 2**e, (a + 1) * 2**e)``. When a batch
reaches past the window, the width doubles as often as needed and every old
bin ``a`` falls exactly into new bin ``a >> d``. The width depends only on the
overall range seen, so the counts are those of a histogram of all the data
at that width: the result does not depend on how the data was batched.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..errors import CalibrationError
from .base import Observer

DEFAULT_BINS = 4096
_HISTC_EXACT = 1 << 24  # float32 counts are exact below this many values
_EXP_FLOOR = -126  # narrowest bin width, 2**-126; its inverse is still a float32


@dataclass(frozen=True)
class ChannelHistogram:
    """One channel's counts; bin ``i`` holds ``[(start + i) * width, (start + i + 1) * width)``."""

    counts: np.ndarray  # float64 (bins,)
    start: int
    width: float
    lo: float  # finite data bounds, widened to contain 0
    hi: float

    @property
    def total(self) -> float:
        return float(self.counts.sum())

    def magnitudes(self) -> np.ndarray:
        """Counts of ``|x|`` on bins ``[i * width, (i + 1) * width)``, i = 0 .. last nonzero."""
        index = self.start + np.arange(self.counts.size)
        folded = np.where(index >= 0, index, -index - 1)
        counts = np.bincount(folded, weights=self.counts)
        nonzero = np.flatnonzero(counts)
        return counts[: nonzero[-1] + 1] if nonzero.size else counts[:1]

    def quantile(self, q: float) -> float:
        """The value below which a share ``q`` of the counts lies (linear inside a bin)."""
        return bin_quantile(self.counts, q) * self.width + self.start * self.width


def bin_quantile(counts: np.ndarray, q: float) -> float:
    """Position in bins (0 .. len) below which a share ``q`` of ``counts`` lies."""
    cumulative = np.cumsum(counts)
    target = q * cumulative[-1]
    i = int(np.searchsorted(cumulative, target, side="left"))
    if i >= counts.size:
        return float(counts.size)
    below = cumulative[i - 1] if i else 0.0
    return i + (target - below) / counts[i] if counts[i] else float(i)


class RunningHistogram:
    """Per-channel histograms of fixed size, widened exactly as data arrives."""

    def __init__(self, bins: int = DEFAULT_BINS) -> None:
        if int(bins) < 16:
            raise CalibrationError(f"a histogram needs at least 16 bins, got {bins}")
        self.bins = int(bins)
        self.counts: torch.Tensor | None = None  # (C, bins) int64
        self.exponent: torch.Tensor | None = None  # (C,) bin width is 2**exponent
        self.start: torch.Tensor | None = None  # (C,) absolute index of bin 0
        self.lo: torch.Tensor | None = None  # (C,) data bounds, 0 included
        self.hi: torch.Tensor | None = None

    def add(self, rows: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor, finite: torch.Tensor | None) -> None:
        """Count ``rows`` (C, N) whose finite bounds per row are ``lo``/``hi``; ``finite`` masks inf/nan."""
        channels, device = rows.shape[0], rows.device
        if self.counts is None:
            self.counts = torch.zeros(channels, self.bins, dtype=torch.int64, device=device)
            self.exponent = torch.full((channels,), _EXP_FLOOR, dtype=torch.int64, device=device)
            self.start = torch.zeros(channels, dtype=torch.int64, device=device)
            self.lo = torch.zeros(channels, device=device)
            self.hi = torch.zeros(channels, device=device)
        self.lo = torch.minimum(self.lo, lo)  # a row without finite values has lo=+inf, hi=-inf
        self.hi = torch.maximum(self.hi, hi)
        exponent = torch.maximum(self.exponent, self._fitting_exponent())
        inverse = torch.ldexp(torch.ones(channels, device=device), -exponent)
        start = torch.floor(self.lo * inverse).long()
        if not (torch.equal(exponent, self.exponent) and torch.equal(start, self.start)):
            self._rebin(exponent, start)
        if finite is not None:
            rows = torch.where(finite, rows, 0.0)
        bins = rows.mul(inverse[:, None]).floor_().sub_(start[:, None])  # exact small integers, all in the window
        if channels == 1 and finite is None and rows.shape[1] < _HISTC_EXACT:  # one pass, exact (float32 counts)
            self.counts += torch.histc(bins, self.bins, 0, self.bins).to(torch.int64)
            return
        index = bins.clamp_(0, self.bins - 1).long()
        if channels > 1:
            index += torch.arange(channels, device=device)[:, None] * self.bins
        index = index.reshape(-1) if finite is None else index[finite]
        self.counts += torch.bincount(index, minlength=channels * self.bins).view(channels, self.bins)

    def _fitting_exponent(self) -> torch.Tensor:
        """Smallest width exponent whose window of ``bins`` bins surely holds [lo, hi]; grows with the span."""
        span = self.hi.double() - self.lo.double()
        needed = torch.ceil(torch.log2(span / (self.bins - 2)))
        return torch.nan_to_num(needed, neginf=_EXP_FLOOR).long().clamp_(min=_EXP_FLOOR)

    def _rebin(self, exponent: torch.Tensor, start: torch.Tensor) -> None:
        absolute = self.start[:, None] + torch.arange(self.bins, device=self.counts.device)
        shift = (exponent - self.exponent).clamp_(max=62)[:, None]
        index = ((absolute >> shift) - start[:, None]).clamp_(0, self.bins - 1)  # exact: floor(x / 2**e)
        self.counts = torch.zeros_like(self.counts).scatter_add_(1, index, self.counts)
        self.exponent, self.start = exponent, start

    def channel(self, c: int) -> ChannelHistogram:
        return ChannelHistogram(
            counts=self.counts[c].cpu().numpy().astype(np.float64),
            start=int(self.start[c]),
            width=float(np.ldexp(1.0, int(self.exponent[c]))),
            lo=float(self.lo[c]),
            hi=float(self.hi[c]),
        )


class HistogramObserver(Observer):
    """Base of observers that choose a clipping range from a histogram of the data.

    Subclasses implement :meth:`clip` on one channel's :class:`ChannelHistogram`.
    """

    def __init__(self, scheme, bins: int = DEFAULT_BINS) -> None:
        super().__init__(scheme)
        self.histogram = RunningHistogram(bins)

    def _observe_rows(self, rows, lo, hi, finite) -> None:
        self.histogram.add(rows, lo, hi, finite)

    def clip(self, hist: ChannelHistogram) -> tuple[float, float]:
        raise NotImplementedError

    def range(self) -> tuple[np.ndarray, np.ndarray]:
        bounds = []
        for c in range(self.channels):
            hist = self.histogram.channel(c)
            bounds.append(self.clip(hist) if hist.total else (0.0, 0.0))
        lo, hi = np.array(bounds, dtype=np.float64).T
        return self._shaped(lo), self._shaped(hi)
