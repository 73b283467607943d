"""Checking the options of accuracy passes: errors name the pass and the option."""

from __future__ import annotations

from ...errors import QtoolError


class AccuracyError(QtoolError, ValueError):
    """An accuracy option that cannot work, or an accuracy pass that cannot run; names the pass and key."""


def check(condition: bool, where: str, key: str, message: str) -> None:
    """Raise :class:`AccuracyError` ``'<where>.<key>: <message>'`` unless ``condition`` holds."""
    if not condition:
        raise AccuracyError(f"{where}.{key}: {message}")


def positive_int(where: str, key: str, value) -> int:
    check(isinstance(value, int) and not isinstance(value, bool) and value >= 1, where, key,
          f"must be an integer >= 1, got {value!r}")
    return value


def number(where: str, key: str, value, lo: float, hi: float) -> float:
    check(isinstance(value, int | float) and not isinstance(value, bool) and lo <= value <= hi, where, key,
          f"must be a number in [{lo:g}, {hi:g}], got {value!r}")
    return float(value)
