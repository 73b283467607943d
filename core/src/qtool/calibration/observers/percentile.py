"""The percentile observer: clip the rarest values on each side."""

from __future__ import annotations

from ..errors import CalibrationError
from .histogram import DEFAULT_BINS, ChannelHistogram, HistogramObserver, bin_quantile


class PercentileObserver(HistogramObserver):
    """Range covering ``percentile`` % of the values.

    Symmetric schemes take that percentile of ``|x|``; asymmetric ones clip
    ``100 - percentile`` % below and above separately.
    """

    name = "percentile"
    option = "percentile"

    def __init__(self, scheme, percentile: float = 99.99, bins: int = DEFAULT_BINS) -> None:
        super().__init__(scheme, bins)
        if not 50.0 < percentile <= 100.0:
            raise CalibrationError(f"observer 'percentile': percentile must be in (50, 100], got {percentile}")
        self.percentile = float(percentile)

    def clip(self, hist: ChannelHistogram) -> tuple[float, float]:
        q = self.percentile / 100.0
        if self.scheme.is_symmetric:
            amax = min(bin_quantile(hist.magnitudes(), q) * hist.width, max(-hist.lo, hist.hi))
            return -amax, amax
        return max(hist.quantile(1.0 - q), hist.lo), min(hist.quantile(q), hist.hi)
