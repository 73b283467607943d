"""Calibration: observers, calibration data input and the calibration driver."""

from .data import CalibrationData, load_calibration_data
from .driver import calibrate
from .errors import CalibrationError, CalibrationWarning
from .observers import OBSERVERS, Observer, make_observer

__all__ = ["OBSERVERS", "CalibrationData", "CalibrationError", "CalibrationWarning", "Observer", "calibrate",
           "load_calibration_data", "make_observer"]
