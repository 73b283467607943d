"""TensorRT's calibration cache: a ``TRT-<version>-<calibrator>`` line, then ``tensor: <float32 bits in hex>``."""

from __future__ import annotations

import os
import re
import struct
from pathlib import Path

import numpy as np
import qtool

from .errors import TensorRTError
from .scales import activation_scales, apply_scales

DEFAULT_VERSION = "10.14.1"
DEFAULT_CALIBRATOR = "EntropyCalibration2"
CALIBRATORS = ("EntropyCalibration2", "EntropyCalibration", "MinMaxCalibration", "LegacyCalibration")
_HEADER = re.compile(r"^TRT-(\d+)-(\w+)$")
_HEX = re.compile(r"^[0-9a-fA-F]{1,8}$")


def version_number(version: int | str) -> int:
    """The number a cache header carries: 10.14.1 -> 101401 (TensorRT 10+), 8.6.1 -> 8601 (before 10).

    An integer (or a string of digits) is taken as already encoded; one below 1000 (8, 10) cannot be.
    """
    text = str(version).strip()
    if text.isdigit():
        if int(text) < 1000:
            raise TensorRTError(f"tensorrt_version {version!r}: not an encoded TensorRT version (8.6.1 is 8601, "
                                f"10.14.1 is 101401); give the encoded number or a dotted version such as "
                                f"{int(text)}.0")
        return int(text)
    match = re.fullmatch(r"(\d+)\.(\d+)(?:\.(\d+))?", text)
    if not match:
        raise TensorRTError(f"tensorrt_version {version!r}: expected MAJOR.MINOR[.PATCH] (e.g. 10.14.1) or 101401")
    major, minor, patch = (int(g or 0) for g in match.groups())
    if minor > 99 or patch > 99:
        raise TensorRTError(f"tensorrt_version {version!r}: minor and patch must be below 100")
    return major * (10000 if major >= 10 else 1000) + minor * 100 + patch


def scale_hex(scale) -> str:
    """The IEEE-754 bits of ``scale`` as float32: 8 lowercase, zero-padded hex digits."""
    return struct.pack(">f", np.float32(scale)).hex()


def header(version: int | str = DEFAULT_VERSION, calibrator: str = DEFAULT_CALIBRATOR) -> str:
    """The cache's first line, ``TRT-<version number>-<calibrator>``; TensorRTError names a bad option."""
    if calibrator not in CALIBRATORS:
        raise TensorRTError(f"tensorrt_calibrator {calibrator!r}: expected one of {', '.join(CALIBRATORS)}")
    return f"TRT-{version_number(version)}-{calibrator}"


def cache_text(scales: dict[str, np.float32], version: int | str = DEFAULT_VERSION,
               calibrator: str = DEFAULT_CALIBRATOR) -> str:
    lines = [header(version, calibrator)]
    lines += [f"{name}: {scale_hex(scale)}" for name, scale in scales.items()]
    return "\n".join(lines) + "\n"


def write_cache(graph, path: str | os.PathLike, *, version: int | str = DEFAULT_VERSION,
                calibrator: str = DEFAULT_CALIBRATOR) -> Path:
    """Write the calibration cache of ``graph``'s quantized activations to ``path`` (atomically)."""
    return qtool.write_atomic(path, cache_text(activation_scales(graph), version, calibrator))


def parse_cache(text: str, source: str) -> tuple[int, str, dict[str, np.float32]]:
    """The version, calibrator and scales of a cache's text; TensorRTError names the line at fault."""
    lines = text.splitlines()
    header = _HEADER.match(lines[0].strip()) if lines else None
    if header is None:
        raise TensorRTError(f"{source}: line 1: expected a header like TRT-101401-EntropyCalibration2")
    scales: dict[str, np.float32] = {}
    for number, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        name, sep, bits = line.rpartition(":")
        bits = bits.strip()
        if not sep or not name or not _HEX.match(bits):
            raise TensorRTError(f"{source}: line {number}: expected '<tensor>: <8 hex digits>', got {line!r}")
        scale = np.frombuffer(int(bits, 16).to_bytes(4, "big"), dtype=">f4")[0].astype(np.float32)
        if not np.isfinite(scale) or scale <= 0:
            raise TensorRTError(f"{source}: line {number}: tensor {name!r} has scale {scale}, not a positive number")
        scales[name] = scale
    return int(header.group(1)), header.group(2), scales


def read_cache(path: str | os.PathLike, graph) -> dict[str, list[str]]:
    """Calibrate ``graph``'s activation configs from a calibration cache; report as :func:`apply_scales`."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise TensorRTError(f"{path}: not a readable calibration cache ({exc})") from exc
    _, _, scales = parse_cache(text, str(path))
    return apply_scales(graph, scales, str(path))
