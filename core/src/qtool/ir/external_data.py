"""A model's external data checked before it is read: present, inside the model's folder, long enough."""

from __future__ import annotations

from pathlib import Path

import onnx
from onnx.external_data_helper import ExternalDataInfo, uses_external_data

from .graph import GraphError


def check_external_data(model: onnx.ModelProto, model_path: Path) -> None:
    """GraphError naming the tensor and file when external data is absent, outside the folder or short."""
    folder = model_path.parent.resolve()
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


def _tensors(model: onnx.ModelProto):
    """Every TensorProto of the model: initializers and tensor attributes, subgraphs included."""
    yield from onnx.external_data_helper._get_all_tensors(model)
