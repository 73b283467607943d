"""Calibration: observers, calibration data input and the calibration driver."""

from .data import CalibrationData, load_calibration_data
from .driver import calibrate
from .errors import CalibrationError, CalibrationWarning
from .kept_outputs import KeptOutputs
from .observers import OBSERVERS, Observer, make_observer

__all__ = ["OBSERVERS", "CalibrationData", "CalibrationError", "CalibrationWarning", "KeptOutputs", "Observer",
           "calibrate",
           "load_calibration_data", "make_observer"]
