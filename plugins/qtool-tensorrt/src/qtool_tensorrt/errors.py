"""The one error this plugin raises for bad input."""

import qtool


class TensorRTError(qtool.QtoolError, ValueError):
    """A ranges JSON, calibration cache or export option that cannot be used; the message names it."""
