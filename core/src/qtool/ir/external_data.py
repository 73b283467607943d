"""A model's external data: checked before it is read (present, inside the model's folder, long enough), then
mapped, not read: an initializer stored outside the model becomes a read-only ``numpy.memmap`` of its bytes,
so a model larger than memory loads, and its weights are read from disk only where they are used."""

from __future__ import annotations

import mmap
from pathlib import Path

import numpy as np
import onnx
from onnx import helper
from onnx.external_data_helper import ExternalDataInfo, load_external_data_for_tensor, uses_external_data

from .graph import GraphError

# element types stored as plain little-endian numbers (the others need onnx's decoding: 4-bit, bfloat16, float8)
_MAPPABLE = {onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE, onnx.TensorProto.FLOAT16, onnx.TensorProto.INT8,
             onnx.TensorProto.UINT8, onnx.TensorProto.INT16, onnx.TensorProto.UINT16, onnx.TensorProto.INT32,
             onnx.TensorProto.UINT32, onnx.TensorProto.INT64, onnx.TensorProto.UINT64, onnx.TensorProto.BOOL}


def check_external_data(model: onnx.ModelProto, model_path: Path) -> list[Path]:
    """The files ``model`` keeps its external data in; GraphError naming the tensor and file where external data
    is absent, outside the folder or short."""
    folder = model_path.parent.resolve()
    files: dict[Path, None] = {}
    for tensor in _tensors(model):
        if not uses_external_data(tensor):
            continue
        info = ExternalDataInfo(tensor)
        where = f"{model_path}: tensor {tensor.name!r} external data {info.location!r}"
        if not info.location or Path(info.location).is_absolute():
            raise GraphError(f"{where}: the location must be a path relative to the model's folder")
        file = (folder / info.location).resolve()
        if not file.is_relative_to(folder):
            raise GraphError(f"{where}: the location leaves the model's folder {folder}")
        if not file.is_file():
            raise GraphError(f"{where}: no such file {file}")
        size = file.stat().st_size
        end = (info.offset or 0) + (info.length if info.length is not None else 0)
        if (info.offset or 0) > size or end > size:
            raise GraphError(f"{where}: the file has {size} bytes, the tensor needs bytes up to {end}")
        files[file] = None
    return list(files)


def map_external_data(model: onnx.ModelProto, folder: Path) -> dict[str, np.ndarray]:
    """Initializer name -> read-only memmap of its external bytes; every other external tensor (attributes,
    types without a plain numpy layout, empty ones) is read into the model as onnx reads it."""
    mapped = {}
    for tensor in model.graph.initializer:
        array = _mapped(tensor, folder) if uses_external_data(tensor) else None
        if array is not None:
            mapped[tensor.name] = array
            _forget_location(tensor)  # its value is the mapping now; the proto keeps only name, type and shape
    for tensor in _tensors(model):
        if uses_external_data(tensor):
            load_external_data_for_tensor(tensor, str(folder))
            _forget_location(tensor)
    return mapped


def _forget_location(tensor: onnx.TensorProto) -> None:
    tensor.data_location = onnx.TensorProto.DEFAULT
    del tensor.external_data[:]


def _mapped(tensor: onnx.TensorProto, folder: Path) -> np.ndarray | None:
    if tensor.data_type not in _MAPPABLE:
        return None
    shape = tuple(tensor.dims)
    dtype = np.dtype(helper.tensor_dtype_to_np_dtype(tensor.data_type)).newbyteorder("<")
    count = int(np.prod(shape, dtype=np.int64))
    info = ExternalDataInfo(tensor)
    if count == 0 or (info.length is not None and info.length != count * dtype.itemsize):
        return None  # nothing to map, or a length onnx will refuse with its own message
    file = folder / info.location
    if (info.offset or 0) + count * dtype.itemsize > file.stat().st_size:
        raise GraphError(f"tensor {tensor.name!r} external data {info.location!r}: the file has "
                         f"{file.stat().st_size} bytes, the tensor needs bytes up to "
                         f"{(info.offset or 0) + count * dtype.itemsize}")
    return np.memmap(file, dtype=dtype, mode="r", offset=info.offset or 0, shape=shape)


def is_mapped(array) -> bool:
    """True for an initializer still mapped from its external file (not read into memory), not a view of one."""
    return isinstance(array, np.memmap) and isinstance(array.base, mmap.mmap) and array.filename is not None


def remapped(array: np.ndarray) -> np.ndarray:
    """A fresh mapping of a mapped array (its pages leave this process's memory when the mapping is dropped);
    any other array as it is."""
    if not is_mapped(array):
        return array
    return np.memmap(array.filename, dtype=array.dtype, mode="r", offset=array.offset, shape=array.shape)


def _tensors(model: onnx.ModelProto):
    """Every TensorProto of the model: initializers and tensor attributes, subgraphs included."""
    yield from onnx.external_data_helper._get_all_tensors(model)
