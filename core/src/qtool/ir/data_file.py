"""A model's external data file written tensor by tensor: each tensor's bytes at a page-aligned offset (runtimes
can map them), its TensorProto turned into a reference to them. One tensor's bytes in memory at a time."""

from __future__ import annotations

import sys
from typing import BinaryIO

import numpy as np
import onnx
from onnx import helper, numpy_helper

INLINE_BYTES = 1024  # smaller tensors stay in the .onnx file (onnxruntime reads shape constants only from there)
_ALIGN = 4096


def raw_bytes(tensor: onnx.TensorProto, value: np.ndarray | None = None) -> bytes | memoryview:
    """The bytes ``tensor`` holds as ``raw_data``, or those of ``value`` (the array of a tensor held shape-only),
    without a copy where the array already is them (a mapped weight)."""
    if value is not None:
        value = np.asarray(value)
        little = value.dtype.byteorder == "<" or (value.dtype.byteorder in "=|" and sys.byteorder == "little")
        if value.dtype.kind in "biuf" and little and helper.np_dtype_to_tensor_dtype(value.dtype) == tensor.data_type:
            return memoryview(np.ascontiguousarray(value)).cast("B")
        return numpy_helper.from_array(value, tensor.name).raw_data
    if tensor.HasField("raw_data"):
        return tensor.raw_data
    return numpy_helper.from_array(numpy_helper.to_array(tensor)).raw_data


def store(tensor: onnx.TensorProto, raw: bytes | memoryview, file: BinaryIO, location: str) -> onnx.TensorProto | None:
    """The reference to ``raw`` (``tensor``'s bytes) written to ``file`` (named ``location`` beside the model);
    None where the tensor is under ``INLINE_BYTES`` and stays in the model."""
    if len(raw) < INLINE_BYTES:
        return None
    offset = -(-file.tell() // _ALIGN) * _ALIGN
    file.seek(offset)
    file.write(raw)
    stored = onnx.TensorProto(name=tensor.name, data_type=tensor.data_type, dims=tensor.dims,
                              data_location=onnx.TensorProto.EXTERNAL)
    for key, value in (("location", location), ("offset", offset), ("length", len(raw))):
        stored.external_data.add(key=key, value=str(value))
    return stored
