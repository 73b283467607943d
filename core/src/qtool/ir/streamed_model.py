"""A ModelProto whose large initializers are held apart as numpy arrays, written to one file without ever holding
the serialized model in memory.

The initializers named in ``values`` are shape-only in the proto (name, type, dims: see
:func:`.onnx_export.shape_only_tensor`). The file is the ModelProto's protobuf encoding, written piece by piece:
the model's other fields, then its one ``graph`` field, whose initializers follow the graph's other fields, each
array's bytes written from the array itself as the tensor's ``raw_data``. Parsed, the file is the ModelProto with
the values filled in (``fill_values``): the same fields, the initializers in the same order. Serializing the
filled-in proto instead costs a copy of every weight twice over (the proto's bytes, then the serialized string);
on all-MiniLM-L6-v2 that was 130 MB of peak memory.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from typing import BinaryIO

import numpy as np
import onnx
from onnx import helper, numpy_helper

# protobuf field numbers: ModelProto.graph, GraphProto.initializer, TensorProto.raw_data
_GRAPH, _INITIALIZER, _RAW_DATA = 7, 5, 9


def fill_values(model: onnx.ModelProto, values: Mapping[str, np.ndarray]) -> None:
    """Put ``values`` into ``model``'s initializers of those names (``numpy_helper.from_array``), in place."""
    for tensor in model.graph.initializer:
        if tensor.name in values:
            tensor.CopyFrom(numpy_helper.from_array(np.asarray(values[tensor.name]), tensor.name))


def write_streamed(model: onnx.ModelProto, values: Mapping[str, np.ndarray], file: BinaryIO) -> None:
    """Write ``model`` with ``values`` filled in (see the module docstring) to the binary ``file``."""
    rest = onnx.ModelProto()
    rest.CopyFrom(model)
    rest.ClearField("graph")
    graph = onnx.GraphProto()
    graph.CopyFrom(model.graph)
    del graph.initializer[:]
    head = graph.SerializeToString()
    records = [_initializer(tensor, values.get(tensor.name)) for tensor in model.graph.initializer]
    size = len(head) + sum(len(prefix) + (0 if data is None else data.nbytes) for prefix, data in records)
    file.write(rest.SerializeToString())
    file.write(_field(_GRAPH, size))
    file.write(head)
    for prefix, data in records:
        file.write(prefix)
        if data is not None:
            file.write(data)


def _initializer(tensor: onnx.TensorProto, value: np.ndarray | None) -> tuple[bytes, memoryview | None]:
    """One ``GraphProto.initializer`` entry: its encoded bytes up to the array's, and the array's bytes (None: the
    whole entry is in the first part)."""
    if value is not None and not _raw(tensor, np.asarray(value)):
        tensor = numpy_helper.from_array(np.asarray(value), tensor.name)  # as fill_values writes it
        value = None
    if value is None:
        encoded = tensor.SerializeToString()
        return _field(_INITIALIZER, len(encoded)) + encoded, None
    data = memoryview(np.ascontiguousarray(value)).cast("B")
    header = tensor.SerializeToString() + _field(_RAW_DATA, data.nbytes)
    return _field(_INITIALIZER, len(header) + data.nbytes) + header, data


def _raw(tensor: onnx.TensorProto, value: np.ndarray) -> bool:
    """``numpy_helper.from_array`` would store ``value`` as these bytes in ``raw_data`` of ``tensor``'s type."""
    little = value.dtype.byteorder == "<" or (value.dtype.byteorder in "=|" and sys.byteorder == "little")
    return (value.dtype.kind in "biuf" and little and value.size > 0 and not tensor.raw_data
            and helper.np_dtype_to_tensor_dtype(value.dtype) == tensor.data_type)


def _field(number: int, length: int) -> bytes:
    """The key of a length-delimited field ``number`` and the varint ``length`` that follows it."""
    return _varint(number << 3 | 2) + _varint(length)


def _varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)
