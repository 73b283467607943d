"""The error calibration raises for bad data, observers or configs."""

from __future__ import annotations

from ..errors import QtoolError


class CalibrationError(QtoolError, ValueError):
    """Calibration data that does not fit the model, or an observer that cannot serve a scheme."""


class CalibrationWarning(UserWarning):
    """Something about the calibration data the user should see (samples skipped, say)."""
