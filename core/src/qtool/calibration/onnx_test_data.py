"""Calibration data in ONNX's own test-data layout (the ONNX Model Zoo, ``onnx/backend/test/data``, onnxruntime's
``onnx_test_runner``): a model folder holding ``test_data_set_0/``, ``test_data_set_1/``, ..., each one model call
of ``input_0.pb``, ``input_1.pb``, ... (one serialized ``onnx.TensorProto`` each, its ``name`` the graph input it
feeds, or, where empty, the input at its position in the graph's input order) and ``output_*.pb`` (expected
outputs: not read).

A set is one call with the model's own shapes: the ``feeds`` layout, taken without being asked; the ``samples``
layout is refused. Every file is read and checked at load, one set at a time (a .pb has no header to read alone),
and read again, one set at a time, as calibration goes.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnx
from google.protobuf.message import DecodeError
from onnx import numpy_helper
from onnx.checker import ValidationError

from ..ir import Variable
from .errors import CalibrationError
from .sources import Chunk, FileSource, _data_files, _entries, check_array, check_chunk, check_shared_dims, pick

SET_PREFIX = "test_data_set_"
INPUT_FILE = re.compile(r"input_.*\.pb")


def _natural(path: Path) -> tuple:
    """Sort key of names with numbers in them: ``test_data_set_2`` before ``test_data_set_10``."""
    return tuple((0, int(part), "") if part.isdigit() else (1, 0, part) for part in re.split(r"(\d+)", path.name))


def _is_set(folder: Path) -> bool:
    return folder.name.startswith(SET_PREFIX) or bool(_input_files(folder))


def _input_files(folder: Path) -> list[Path]:
    return sorted(_data_files(folder, lambda p: INPUT_FILE.fullmatch(p.name) is not None, "input_*.pb"),
                  key=_natural)


def test_data_sets(path: Path) -> list[Path] | None:
    """The ``test_data_set_*`` folders of ``path`` in numeric order, ``[path]`` where it is one, None where it is
    no ONNX test-data folder (then it is read as .npy/.npz data). A folder of both kinds of data is refused."""
    if not path.is_dir():
        return None
    entries = _entries(path)
    sets = sorted((p for p in entries if p.name.startswith(SET_PREFIX)), key=_natural)
    if not sets and not _is_set(path):
        return None
    for folder in sets:
        if not folder.is_dir():
            raise CalibrationError(f"{folder}: not a folder (a test_data_set_* entry holds one model call's "
                                   "input_*.pb files)")
    if any(p.suffix in (".npy", ".npz") for p in entries):
        held = "test_data_set_* folders" if sets else "input_*.pb files"
        raise CalibrationError(f"{path}: holds both ONNX test data ({held}) and .npy/.npz files; give a folder of "
                               "one kind")
    return sets or [path]


def check_layout(path: Path, layout: str) -> None:
    """ONNX test data is one model call per set: the feeds layout; the samples layout asked for is refused."""
    if layout != "feeds":
        raise CalibrationError(f"{path}: ONNX test data (each test_data_set_* one model call with the model's own "
                               f"shapes) is read in the feeds layout, not {layout!r}: leave --calib-layout "
                               "(calib_layout=) out")


def read_tensor(file: Path) -> tuple[str, np.ndarray]:
    """The name and the array of one serialized TensorProto (raw or typed data, external data beside it,
    bfloat16 and float8 as ml_dtypes arrays); a file that holds none is a CalibrationError naming it."""
    tensor = onnx.TensorProto()
    try:
        tensor.ParseFromString(file.read_bytes())
    except (OSError, DecodeError) as exc:
        raise CalibrationError(f"{file}: not a serialized onnx TensorProto ({exc})") from None
    if tensor.data_type == onnx.TensorProto.UNDEFINED:
        raise CalibrationError(f"{file}: not a serialized onnx TensorProto (it states no data type)")
    try:
        return tensor.name, numpy_helper.to_array(tensor, base_dir=str(file.parent))
    except (ValueError, KeyError, TypeError, OSError, ValidationError) as exc:
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise CalibrationError(f"{file}: an onnx TensorProto whose data cannot be read "
                               f"({type(exc).__name__}: {message})") from None


class TestDataSource(FileSource):
    """ONNX test_data_set_* folders, one model call each, read one set at a time in numeric order.

    ``plan`` is each set with the file that feeds each input; ``length`` counts the sets. Tensors that feed no
    input (a name the model lacks, an unnamed one past its inputs) are warned of as an .npz's arrays are.
    """

    __test__ = False  # not a pytest class, whatever its name

    def __init__(self, sets: list[Path], inputs: list[Variable]) -> None:
        self.path, self.inputs, self.layout = sets[0].parent, inputs, "feeds"
        self.ignored: dict[str, list[Path]] = {}
        self.plan = [(folder, self._check(folder), 1) for folder in sets]
        self.length = len(self.plan)

    def _check(self, folder: Path) -> dict[str, Path]:
        """The file that feeds each input of the set ``folder``, each checked against its input."""
        files: dict[str, Path] = {}
        shapes: dict[str, tuple] = {}
        by_name = {v.name: v for v in self.inputs}
        for position, file in enumerate(_input_files(folder)):
            name, array = read_tensor(file)
            name = name or (self.inputs[position].name if position < len(self.inputs) else "")
            if name not in by_name:
                what = f"tensor {name!r}" if name else f"unnamed tensor {position} (past the inputs)"
                self.ignored.setdefault(what, []).append(file)
                continue
            if name in files:
                raise CalibrationError(f"{file}: feeds input {name!r}, which {files[name].name} feeds already")
            check_array(by_name[name], array.shape, array.dtype, str(file), "feeds")
            files[name], shapes[name] = file, array.shape
        pick(files, self.inputs, str(folder), "feeds")
        check_shared_dims(self.inputs, shapes, str(folder), "feeds")
        return files

    def chunks(self) -> Iterator[Chunk]:
        for folder, files, _ in self.plan:
            arrays = {name: read_tensor(file)[1] for name, file in files.items()}
            yield str(folder), check_chunk(arrays, self.inputs, str(folder), "feeds")
