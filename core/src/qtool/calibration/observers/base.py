"""The Observer contract: watch tensors, then give a scale and offset for a scheme."""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from ...quant import QuantScheme, compute_scale_offset
from ...quant.maths import namespace
from ...quant.policy import QuantizationPolicy as P
from ..errors import CalibrationError
from .guard import MagnitudeProfile


class Observer:
    """Collects statistics of one tensor over calibration batches.

    Observers compute in numpy: :meth:`observe` takes a numpy array or a torch tensor (read once into a float32
    array). Subclasses implement :meth:`_observe_rows` (called with a float32 ``(C, N)`` array, a view where the
    layout allows: one row per channel, a single row for per-tensor schemes; inf and nan are ignored) and
    :meth:`range` (the clipping range, elementwise per channel).
    ``option`` names the constructor argument that a spec such as
    ``"percentile:99.9"`` sets (see :func:`qtool.calibration.make_observer`).
    """

    name: ClassVar[str] = ""
    option: ClassVar[str | None] = None
    heavy: ClassVar[bool] = True  # its work a value is of the order of the model's own (a histogram's count): the
    # float model then runs on one core fewer while the observers take the last run in

    def __init__(self, scheme: QuantScheme) -> None:
        if scheme.policy & P.PER_BLOCK:
            raise CalibrationError(f"observer {self.name!r}: per-block schemes ({scheme.short()}) are not calibrated "
                                   "from activations; use per-tensor or per-channel")
        self.scheme = scheme
        self._per_channel = scheme.is_per_channel  # the scheme is frozen; its flag test costs 7 us a batch
        self.channels: int | None = None
        self.count = 0  # finite values seen
        self.nonfinite = 0  # inf / nan values seen (and ignored)
        self.infinite = 0  # of them, +-inf
        self.peak = 0.0  # the largest finite magnitude seen
        self.shape: tuple[int | None, ...] | None = None  # the batches' shape, a dimension that varied None
        self.profile = MagnitudeProfile()

    # -- collecting ---------------------------------------------------------------
    def observe(self, x) -> None:
        """Add one batch of the tensor's values (a numpy array or a torch tensor)."""
        self.shape = merged_shape(self.shape, tuple(np.shape(x)))
        rows = self._rows(float_array(x))
        if rows.shape[1] == 0:
            return
        lo, hi = row_bounds(rows)  # nan propagates: any nan or inf takes the masked path
        finite = None
        if not (np.isfinite(lo).all() and np.isfinite(hi).all()):
            finite = np.isfinite(rows)
            lo = np.where(finite, rows, np.inf).min(axis=1)
            hi = np.where(finite, rows, -np.inf).max(axis=1)
            seen = int(np.count_nonzero(finite))
            self.nonfinite += rows.size - seen
            self.infinite += int(np.count_nonzero(np.isinf(rows)))
        else:
            seen = rows.size
        if seen:
            bounds = np.abs(np.concatenate([lo, hi]))
            self.peak = max(self.peak, float(bounds[np.isfinite(bounds)].max(initial=0.0)))
            self.count += seen
            self._observe_rows(rows, lo, hi, finite)
            self.profile.observe(rows)

    def _rows(self, x: np.ndarray) -> np.ndarray:
        if not self._per_channel:  # order does not matter: flatten in memory order, without a copy
            rows = x.ravel(order="K").reshape(1, -1)
        else:
            if x.ndim == 0:
                raise CalibrationError(f"per-channel scheme {self.scheme.short()} on a scalar tensor")
            axis = self.scheme.channel_axis % x.ndim
            rows = np.moveaxis(x, axis, 0).reshape(x.shape[axis], -1)
        if self.channels is None:
            self.channels = rows.shape[0]
        elif rows.shape[0] != self.channels:
            raise CalibrationError(f"per-channel observer saw {rows.shape[0]} channels after {self.channels} "
                                   f"(axis {self.scheme.channel_axis})")
        return rows

    def _observe_rows(self, rows: np.ndarray, lo: np.ndarray, hi: np.ndarray, finite: np.ndarray | None) -> None:
        """Take a batch: ``rows`` (C, N); ``lo``/``hi`` its finite bounds per row (+inf/-inf for a
        row without finite values); ``finite`` the mask of finite values, None when all are."""
        raise NotImplementedError

    # -- results -------------------------------------------------------------------
    def mask(self) -> str | None:
        """Why the tensor holds a mask no integer grid holds (+-inf, or magnitudes of MASK_MAGNITUDE and more, as
        an additive attention mask of float32's lowest value does), else None."""
        if self.infinite:
            return f"it holds {self.infinite} infinite value(s)"
        if self.peak >= MASK_MAGNITUDE:
            return f"it holds values of magnitude {self.peak:.3g}"
        return None

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


def merged_shape(seen: tuple[int | None, ...] | None, shape: tuple[int, ...]) -> tuple[int | None, ...]:
    """``shape`` where nothing was ``seen``, else the dimensions both agree on (None where they differ, every one
    where the ranks do)."""
    if seen is None:
        return shape
    if len(seen) != len(shape):
        return (None,) * len(seen)
    return tuple(a if a == b else None for a, b in zip(seen, shape, strict=True))


MASK_MAGNITUDE = 1e30  # values this large are a mask's (float32's lowest, -3.4e38), not data
BOUNDS_BLOCK = 1 << 15  # values one step of row_bounds reduces: min's pass leaves them in the cache for max's


def row_bounds(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each row's minimum and maximum, block by block: one read of a large batch from memory, not two."""
    step = max(1, BOUNDS_BLOCK // rows.shape[0])
    if rows.shape[1] <= 2 * step:
        return rows.min(axis=1), rows.max(axis=1)
    lo, hi = rows[:, :step].min(axis=1), rows[:, :step].max(axis=1)
    for begin in range(step, rows.shape[1], step):
        block = rows[:, begin:begin + step]
        np.minimum(lo, block.min(axis=1), out=lo)
        np.maximum(hi, block.max(axis=1), out=hi)
    return lo, hi


def float_array(x) -> np.ndarray:
    """``x`` as a float32 numpy array: a torch tensor (found without importing torch) is read once, on the CPU."""
    if namespace(x) is not np:
        x = x.detach().float().cpu().numpy()
    return np.asarray(x, dtype=np.float32)
