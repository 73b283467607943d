"""The Observer contract: watch tensors, then give a scale and offset for a scheme."""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import torch

from ...quant import QuantScheme, compute_scale_offset
from ...quant.policy import QuantizationPolicy as P
from ..errors import CalibrationError
from .guard import MagnitudeProfile


class Observer:
    """Collects statistics of one tensor over calibration batches.

    Subclasses implement :meth:`_observe_rows` (called with a float32 ``(C, N)``
    view: one row per channel, a single row for per-tensor schemes; inf and nan
    are ignored) and :meth:`range` (the clipping range, elementwise per channel).
    ``option`` names the constructor argument that a spec such as
    ``"percentile:99.9"`` sets (see :func:`qtool.calibration.make_observer`).
    """

    name: ClassVar[str] = ""
    option: ClassVar[str | None] = None

    def __init__(self, scheme: QuantScheme) -> None:
        if scheme.policy & P.PER_BLOCK:
            raise CalibrationError(f"observer {self.name!r}: per-block schemes ({scheme.short()}) are not calibrated "
                                   "from activations; use per-tensor or per-channel")
        self.scheme = scheme
        self.channels: int | None = None
        self.count = 0  # finite values seen
        self.nonfinite = 0  # inf / nan values seen (and ignored)
        self.profile = MagnitudeProfile()

    # -- collecting ---------------------------------------------------------------
    def observe(self, x: torch.Tensor) -> None:
        """Add one batch of the tensor's values."""
        rows = self._rows(x)
        if rows.shape[1] == 0:
            return
        lo, hi = torch.aminmax(rows, dim=1)
        finite = None
        if not bool(torch.isfinite(lo).all() and torch.isfinite(hi).all()):
            finite = torch.isfinite(rows)
            lo = torch.where(finite, rows, torch.inf).amin(dim=1)
            hi = torch.where(finite, rows, -torch.inf).amax(dim=1)
            seen = int(finite.sum())
            self.nonfinite += rows.numel() - seen
        else:
            seen = rows.numel()
        if seen:
            self.count += seen
            self._observe_rows(rows, lo, hi, finite)
            self.profile.observe(rows)

    def _rows(self, x: torch.Tensor) -> torch.Tensor:
        x = x.detach().float()
        if not self.scheme.is_per_channel:  # order does not matter: flatten in memory order, without a copy
            rows = x.permute(sorted(range(x.ndim), key=lambda d: -x.stride(d))).reshape(1, -1)
        else:
            if x.ndim == 0:
                raise CalibrationError(f"per-channel scheme {self.scheme.short()} on a scalar tensor")
            rows = x.movedim(self.scheme.channel_axis % x.ndim, 0).reshape(x.shape[self.scheme.channel_axis], -1)
        if self.channels is None:
            self.channels = rows.shape[0]
        elif rows.shape[0] != self.channels:
            raise CalibrationError(f"per-channel observer saw {rows.shape[0]} channels after {self.channels} "
                                   f"(axis {self.scheme.channel_axis})")
        return rows

    def _observe_rows(self, rows: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor,
                      finite: torch.Tensor | None) -> None:
        """Take a batch: ``rows`` (C, N); ``lo``/``hi`` its finite bounds per row (+inf/-inf for a
        row without finite values); ``finite`` the mask of finite values, None when all are."""
        raise NotImplementedError

    # -- results -------------------------------------------------------------------
    @property
    def observed(self) -> bool:
        return self.count > 0

    def range(self) -> tuple[np.ndarray, np.ndarray]:
        """The chosen ``(min, max)``: shape () per tensor, (C,) per channel (float64)."""
        raise NotImplementedError

    def compute(self) -> tuple[np.ndarray, np.ndarray]:
        """Scale and offset for the scheme, covering :meth:`range`."""
        if not self.observed:
            raise CalibrationError(f"observer {self.name!r} computed before it saw any finite value")
        return compute_scale_offset(self.scheme, *self.range())

    def diagnose(self, scale: np.ndarray) -> list[str]:
        """Warnings about the data or about ``scale`` zeroing most of the tensor's values."""
        warnings = []
        if self.nonfinite:
            warnings.append(f"{self.nonfinite} inf/nan value(s) were ignored")
        crushed = self.profile.diagnose(self.scheme, scale)
        if crushed:
            warnings.append(crushed)
        return warnings

    def _shaped(self, values: np.ndarray) -> np.ndarray:
        """Per-tensor results as 0-d arrays, per-channel ones as (C,)."""
        values = np.asarray(values, dtype=np.float64)
        return values.reshape(()) if not self.scheme.is_per_channel else values.reshape(-1)
