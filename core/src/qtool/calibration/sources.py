"""Reading calibration data: .npz files, directories of .npy/.npz, Python iterables, ONNX Runtime readers.

Two layouts say what an array is. ``samples``: the first axis holds samples
(an array may also be one sample without it), and samples are batched freely.
``feeds``: each file or item is one model call with exactly the shapes the
model takes (recurrent state inputs, sequence-first inputs, fixed batches).

Each source yields *chunks*: ``(where, {input name: array})``; :func:`check_chunk`
turns raw items into chunks and rejects what does not fit the graph's inputs,
naming the input and the place. File sources look at array headers first, so a
bad file is reported before calibration starts. Python streams are read lazily;
a one-shot stream (a generator, an ONNX Runtime ``CalibrationDataReader``) is
kept on disk as it is read, so later passes can read it again.
"""

from __future__ import annotations

import errno
import itertools
import mmap
import shutil
import stat
import struct
import tempfile
import warnings
import weakref
import zipfile
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path

import ml_dtypes
import numpy as np

from ..files import file_kind
from ..ir import Variable
from .errors import CalibrationError, CalibrationWarning
from .observers.base import MASK_MAGNITUDE

Chunk = tuple[str, dict[str, np.ndarray]]
LAYOUTS = ("samples", "feeds")
NO_SAMPLES = "the calibration data holds no samples"
FEEDS_HINT = ("; if each file or item is one model call with the model's own shapes, use --calib-layout feeds "
              "(calib_layout='feeds')")


# -- matching arrays to graph inputs -----------------------------------------------------
def describe(var: Variable, layout: str = "samples") -> str:
    """'float32 [N, 3, 64, 64]': the expected array (N the sample axis; in feeds layout the model's own dims)."""
    dtype = str(np.dtype(var.dtype)) if var.dtype is not None else "any dtype"
    if var.shape is None:
        return f"{dtype}, any shape"
    dims = [str(d) if isinstance(d, int) and d > 0 else (d if isinstance(d, str) and d else "?") for d in var.shape]
    if layout == "samples":
        dims[:1] = ["N"] if dims else []
    return f"{dtype} [{', '.join(dims)}]"


def check_array(var: Variable, shape: tuple, dtype: np.dtype, where: str, layout: str = "samples") -> int:
    """Samples in an array of this shape for ``var``: one per feed, or the first axis (one sample without it)."""
    if var.dtype is not None and np.dtype(var.dtype).kind in "OSU":  # before reading an object array (a pickle)
        raise CalibrationError(f"{where}: input {var.name!r} is a string tensor, and qtool calibrates and simulates "
                               "on numbers only (its executor holds no strings); quantize the part of the model "
                               "after the string ops (onnx.utils.extract_model from their numeric outputs)")
    if var.dtype is not None and np.dtype(dtype) != np.dtype(var.dtype) and not _widened(var.dtype, dtype):
        raw = (" (raw bytes: np.save keeps no bfloat16 nor float 8; give float32 arrays, cast as they are read)"
               if np.dtype(dtype).kind == "V" else "")
        raise CalibrationError(f"{where}: input {var.name!r} has dtype {np.dtype(dtype)}, "
                               f"expected {describe(var, layout)}{raw}")
    if var.shape is None:
        return 1 if layout == "feeds" or not shape else shape[0]
    rank = len(var.shape)
    if layout == "feeds":
        if len(shape) != rank or any(_fixed(want) and got != want for got, want in zip(shape, var.shape, strict=True)):
            raise CalibrationError(f"{where}: input {var.name!r} has shape {list(shape)}, expected "
                                   f"{describe(var, layout)} (one model call, calibration layout 'feeds')")
        return 1
    if rank == 0:
        raise CalibrationError(f"{where}: input {var.name!r} is a scalar (rank 0), with no axis to batch samples "
                               f"over" + FEEDS_HINT)
    if len(shape) not in (rank, rank - 1):
        raise CalibrationError(f"{where}: input {var.name!r} has shape {list(shape)}, expected {describe(var)} "
                               f"(or one sample without the first axis)")
    sample = shape[1:] if len(shape) == rank else shape
    for got, want in zip(sample, var.shape[1:], strict=True):
        if _fixed(want) and got != want:
            raise CalibrationError(f"{where}: input {var.name!r} has shape {list(shape)}, expected {describe(var)}")
    return shape[0] if len(shape) == rank else 1


def half_float(dtype) -> bool:
    """float16 or bfloat16 (ml_dtypes': numpy's kind 'V', of two bytes like no other of its types)."""
    return dtype is not None and np.dtype(dtype).itemsize == 2 and np.dtype(dtype).kind in "fV"


def _widened(wanted: np.dtype, given: np.dtype) -> bool:
    """float32 data for a float16 or bfloat16 input: cast as it is read (numpy cannot save bfloat16, and a float16
    model's data is often kept in float32)."""
    return np.dtype(given) == np.float32 and half_float(wanted)


def as_input_type(var: Variable, array: np.ndarray, where: str, layout: str = "samples") -> np.ndarray:
    """``array`` in ``var``'s own type (float32 data of a float16 or bfloat16 input, :func:`_widened`). A value
    beyond that type's range is refused, naming ``where`` and its sample: cast, it would read as an infinity, a
    mask's value; a mask's own (``MASK_MAGNITUDE`` and more: float32's lowest) becomes one."""
    if var.dtype is None or array.dtype == var.dtype:
        return array
    with np.errstate(over="ignore"):
        cast = array.astype(var.dtype)
    lost = np.isinf(cast) & np.isfinite(array) & (np.abs(array) < MASK_MAGNITUDE)
    if lost.any():
        at = np.unravel_index(np.flatnonzero(lost)[0], array.shape)
        sample = f" sample {at[0]}" if layout == "samples" and array.ndim == len(var.shape or ()) else ""
        dtype = np.dtype(var.dtype)
        raise CalibrationError(f"{where}: input {var.name!r}{sample} holds {array[at]:g}, beyond {dtype}'s largest "
                               f"{ml_dtypes.finfo(dtype).max:g}: cast to the input's type it would be infinite; "
                               "scale the data into its range (a mask may hold -inf)")
    return cast


def check_shared_dims(inputs: list[Variable], shapes: Mapping[str, tuple], where: str, layout: str = "samples"
                      ) -> None:
    """Inputs whose dimensions the model names alike (``sequence`` of ``input_ids`` and ``attention_mask``) hold
    arrays of one size there: a feed that broke this failed in the first float run with ONNX Runtime's broadcast
    error. In the samples layout the first axis is the samples' (counted apart)."""
    seen: dict[str, tuple[str, int]] = {}
    for var in inputs:
        shape = shapes.get(var.name)
        if var.shape is None or shape is None:
            continue
        offset = len(var.shape) - len(shape)  # 1: one sample without the first axis
        if offset not in (0, 1):
            continue
        for position, name in enumerate(var.shape[offset:], start=offset):
            if not isinstance(name, str) or not name or (layout == "samples" and position == 0):
                continue
            size = shape[position - offset]
            first = seen.setdefault(name, (var.name, size))
            if first[1] != size:
                raise CalibrationError(f"{where}: inputs {first[0]!r} and {var.name!r} disagree on the dimension "
                                       f"the model names {name!r} ({first[1]} and {size})")


def _fixed(dim) -> bool:
    return isinstance(dim, int) and dim > 0


def fixed_batch(inputs: list[Variable], graph=None) -> int | None:
    """The batch size the model's inputs fix on their first axis (a static batch), if any; 1 where ``graph``
    reshapes a tensor that depends on an input to a constant shape ``[1, ...]`` with neither -1 nor 0 in it
    (a batch of 1 baked in, as in an exported channel shuffle), though its inputs leave the batch open."""
    sizes = {v.shape[0] for v in inputs if v.shape and _fixed(v.shape[0])}
    if not sizes and graph is not None and _baked_batch_of_one(graph):
        return 1
    if len(sizes) > 1:
        shown = ", ".join(f"{v.name}: {v.shape[0]}" for v in inputs if v.shape and _fixed(v.shape[0]))
        raise CalibrationError(f"the model's inputs fix different first dimensions ({shown}), so samples cannot "
                               "be batched over them" + FEEDS_HINT)
    return sizes.pop() if sizes else None


def _baked_batch_of_one(graph) -> bool:
    """Does a Reshape of an input-dependent tensor go to a constant shape of fixed size that starts with 1?"""
    for op in graph.operations.values():
        if op.op_type != "Reshape" or len(op.inputs) < 2 or op.inputs[1] is None or not op.inputs[1].is_parameter:
            continue
        shape = [int(d) for d in np.asarray(op.inputs[1].value).reshape(-1)]
        if len(shape) >= 3 and shape[0] == 1 and all(d > 0 for d in shape) and not op.inputs[0].is_parameter:
            return True
    return False


UNNAMED = "arr_0"  # the key np.savez gives an array passed without a name


def pick(keys: Iterable[str], inputs: list[Variable], where: str, layout: str = "samples") -> dict[str, str]:
    """Which key feeds each input: its name, or for a single-input model an only key left unnamed (``arr_0``, as
    ``np.savez(path, array)`` names it). An only key of another name is an error: it was taken without a word, and
    data saved for another model (``img`` for ``image``) calibrated this one."""
    keys = list(keys)
    if len(inputs) == 1 and keys == [UNNAMED]:
        return {inputs[0].name: UNNAMED}
    missing = [v for v in inputs if v.name not in keys]
    if missing:
        raise CalibrationError(f"{where}: no array for input {missing[0].name!r} (found: {', '.join(keys) or 'none'}; "
                               f"expected {describe(missing[0], layout)})")
    return {v.name: v.name for v in inputs}


def as_array(value) -> np.ndarray:
    """A numpy array from an array, a torch tensor (any device, with or without grad) or a nested list."""
    if hasattr(value, "detach") and hasattr(value, "cpu"):
        value = value.detach().cpu().numpy()
    return np.asarray(value)


def _tensor(value, where: str, var: Variable) -> np.ndarray:
    """:func:`as_array` of input ``var``'s value; one that is no tensor (a list of arrays of several shapes, a torch
    tensor without data or of a type numpy lacks) a CalibrationError naming it. A nested list or a Python number
    has no type of its own (numpy reads 2.0 as float64): it takes the input's where that keeps its kind and its
    values (for floats, their finiteness: 1.5 or 70000 for an int16 input, 1e5 for a float16 one keep numpy's type,
    refused naming it)."""
    try:
        array = as_array(value)
    except (TypeError, ValueError, RuntimeError, NotImplementedError) as exc:
        raise CalibrationError(f"{where}: input {var.name!r} is no tensor qtool can calibrate with "
                               f"({type(exc).__name__}: {str(exc).splitlines()[0][:120]})") from None
    if hasattr(value, "dtype") or var.dtype is None or not np.can_cast(array.dtype, var.dtype, "same_kind"):
        return array
    with np.errstate(over="ignore", invalid="ignore"):
        cast = array.astype(var.dtype)
        kept = np.array_equal(np.isfinite(cast), np.isfinite(array)) if cast.dtype.kind == "f" else \
            np.array_equal(cast, array)
    return cast if kept else array


def check_chunk(raw, inputs: list[Variable], where: str, layout: str = "samples") -> dict[str, np.ndarray]:
    """Arrays by input name from a mapping or (single input) an array; in samples layout each gets the sample axis."""
    if isinstance(raw, Mapping):
        chosen = pick(raw.keys(), inputs, where, layout)
        by_name = {var.name: var for var in inputs}
        arrays = {name: _tensor(raw[key], where, by_name[name]) for name, key in chosen.items()}
    elif isinstance(raw, (tuple, list)) and any(isinstance(v, Mapping) or hasattr(v, "shape") for v in raw):
        raise CalibrationError(f"{where}: a {type(raw).__name__} of {len(raw)} values; give transform= a function "
                               "that returns the model inputs from it (e.g. transform=lambda item: item[0] for "
                               "(inputs, labels) pairs)")
    elif len(inputs) == 1:
        arrays = {inputs[0].name: _tensor(raw, where, inputs[0])}
    else:
        names = ", ".join(v.name for v in inputs)
        raise CalibrationError(f"{where}: the model has inputs {names}; give a dict of arrays by input name")
    counts = {}
    for var in inputs:
        array = arrays[var.name]
        counts[var.name] = check_array(var, array.shape, array.dtype, where, layout)
        arrays[var.name] = array = as_input_type(var, array, where, layout)
        if layout == "samples" and var.shape is not None and array.ndim == len(var.shape) - 1:
            arrays[var.name] = array[None]
    if len(set(counts.values())) > 1:
        raise CalibrationError(f"{where}: inputs hold different numbers of samples ("
                               + ", ".join(f"{k}: {n}" for k, n in counts.items()) + ")" + FEEDS_HINT)
    check_shared_dims(inputs, {name: array.shape for name, array in arrays.items()}, where, layout)
    return arrays


# -- array headers ---------------------------------------------------------------------------
_HEADER_READERS = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}


def _npz_headers(path: Path) -> dict[str, tuple[tuple, np.dtype]]:
    """Shape and dtype of every array in an .npz, read from the headers only."""
    headers = {}
    with zipfile.ZipFile(path) as archive:
        for member in archive.namelist():
            if not member.endswith(".npy"):
                continue
            with archive.open(member) as stream:
                reader = _HEADER_READERS.get(np.lib.format.read_magic(stream))
                if reader is None:
                    break
                shape, _, dtype = reader(stream)
            headers[member[: -len(".npy")]] = (shape, dtype)
        else:
            return headers
    with np.load(path) as data:  # an unusual format version: read the arrays themselves
        return {key: (data[key].shape, data[key].dtype) for key in data.files}


def _headers(path: Path) -> dict[str, tuple[tuple, np.dtype]]:
    try:
        if path.suffix == ".npy":
            array = np.load(path, mmap_mode="r")
            return {"": (array.shape, array.dtype)}
        return _npz_headers(path)
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise CalibrationError(f"{path}: not a readable numpy file ({exc})") from exc


def _load(path: Path, keys: dict[str, str]) -> dict[str, np.ndarray]:
    """The arrays ``keys`` names, mapped where they are stored as they are (a .npy; an .npz's members that
    ``np.savez`` wrote, not compressed), so that a pass reads only the samples it uses (``np.load`` read a 2.4 GB
    .npz whole for 100 samples, each pass); compressed members are read whole."""
    if path.suffix == ".npy":
        return {name: np.load(path, mmap_mode="r") for name in keys}
    with zipfile.ZipFile(path) as archive:
        arrays = {name: _mapped(path, archive, key) for name, key in keys.items()}
    if any(array is None for array in arrays.values()):
        with np.load(path) as data:
            arrays = {name: data[keys[name]] if array is None else array for name, array in arrays.items()}
    return arrays


def _mapped(path: Path, archive: zipfile.ZipFile, key: str) -> np.ndarray | None:
    """The member ``key`` of the .npz ``path`` mapped from the file where it is stored as it is, else None (compressed,
    empty, of objects, or of a format version numpy has no header reader for)."""
    info = archive.getinfo(key + ".npy")
    if info.compress_type != zipfile.ZIP_STORED or info.flag_bits & 0x1:  # compressed or encrypted
        return None
    with open(path, "rb") as stream:
        stream.seek(info.header_offset)
        local = stream.read(30)  # the member's local header: its name and extra field come before its bytes
        if len(local) < 30 or local[:4] != b"PK\x03\x04":
            return None
        name_length, extra_length = struct.unpack("<HH", local[26:30])
        stream.seek(info.header_offset + 30 + name_length + extra_length)
        reader = _HEADER_READERS.get(np.lib.format.read_magic(stream))
        if reader is None:
            return None
        shape, fortran_order, dtype = reader(stream)
        offset = stream.tell()
    if dtype.hasobject or not all(shape):
        return None
    try:
        return np.memmap(path, dtype=dtype, mode="r", shape=shape, order="F" if fortran_order else "C", offset=offset)
    except (OSError, ValueError):  # shorter than its header says: np.load names what is wrong
        return None


def rows_of(array: np.ndarray, first: int, count: int) -> np.ndarray:
    """Samples ``first .. first + count - 1`` of ``array``; of a file mapped whole (a .npy, an .npz's member), a
    mapping of their own, so that they leave the resident size once a pass is done with them (one mapping of a 3 GB
    .npy kept every page read: 2.9 GB resident at the end of calibration)."""
    mapped = _whole_mapping(array)
    if mapped is None:
        return array[first:first + count]
    count = min(count, len(array) - first)
    return np.memmap(mapped.filename, dtype=array.dtype, mode="r", shape=(count, *array.shape[1:]),
                     offset=mapped.offset + first * array[:1].nbytes)


def _whole_mapping(array: np.ndarray) -> np.memmap | None:
    """The np.memmap of a whole file's array that ``array`` is (or views as it is: ``np.asarray`` of it), else
    None."""
    mapped = array if isinstance(array, np.memmap) else array.base
    if (not isinstance(mapped, np.memmap) or not isinstance(mapped.base, mmap.mmap) or mapped.shape != array.shape
            or mapped.dtype != array.dtype or not array.flags.c_contiguous
            or mapped.__array_interface__["data"][0] != array.__array_interface__["data"][0]):
        return None
    return mapped


# -- sources -----------------------------------------------------------------------------------
class FileSource:
    """One .npz/.npy file, or a directory of them read one at a time in name order.

    ``length`` counts samples (samples layout) or files (feeds layout: each file is one model call).
    """

    empty = NO_SAMPLES  # what to say where it holds none

    def __init__(self, path: Path, inputs: list[Variable], layout: str = "samples") -> None:
        self.path, self.inputs, self.layout = path, inputs, layout
        if path.is_dir():
            files = _data_files(path)
            if not files:
                raise CalibrationError(f"{path}: the directory holds no .npy or .npz files")
        elif path.suffix in (".npy", ".npz") and path.is_file():
            files = [path]
        elif path.suffix in (".npy", ".npz") and file_kind(path):  # a FIFO, /dev/zero: refused unread
            raise CalibrationError(f"{path}: is {file_kind(path)}, not a calibration file")
        elif path.exists():
            raise CalibrationError(f"{path}: calibration data must be an .npz or .npy file, a directory of them, or "
                                   "ONNX test data (test_data_set_* folders of input_*.pb, or one of them)")
        else:
            raise CalibrationError(f"{path}: no such calibration file or directory")
        self.ignored: dict[str, list[Path]] = {}  # arrays of an .npz that feed no input ("array 'junk'"): the files
        self.plan = [(file, *self._check(file)) for file in files]
        self.length = sum(count for _, _, count in self.plan)

    def _check(self, file: Path) -> tuple[dict[str, str], int]:
        headers = _headers(file)
        if file.suffix == ".npy" and len(self.inputs) > 1:
            names = ", ".join(v.name for v in self.inputs)
            raise CalibrationError(f"{file}: a .npy file holds one array but the model has inputs {names}; "
                                   "use .npz files keyed by input name")
        keys = (pick(headers, self.inputs, str(file), self.layout) if file.suffix == ".npz"
                else {self.inputs[0].name: ""})
        for name in headers.keys() - set(keys.values()) if file.suffix == ".npz" else ():
            self.ignored.setdefault(f"array {name!r}", []).append(file)
        counts = {v.name: check_array(v, *headers[keys[v.name]], str(file), self.layout) for v in self.inputs}
        if len(set(counts.values())) > 1:
            raise CalibrationError(f"{file}: inputs hold different numbers of samples ("
                                   + ", ".join(f"{k}: {n}" for k, n in counts.items()) + ")" + FEEDS_HINT)
        check_shared_dims(self.inputs, {v.name: headers[keys[v.name]][0] for v in self.inputs}, str(file),
                          self.layout)
        return keys, next(iter(counts.values()))

    def warn_ignored(self) -> None:
        """A CalibrationWarning for each array of the .npz files that feeds no input (``junk`` beside ``image``)."""
        inputs = ", ".join(repr(v.name) for v in self.inputs)
        for what, files in sorted(self.ignored.items()):
            where = str(files[0]) + (f" and {len(files) - 1} more file(s)" if len(files) > 1 else "")
            warnings.warn(f"{where}: {what} feeds no input of the model ({inputs}): ignored",
                          CalibrationWarning, stacklevel=2)

    def chunks(self) -> Iterator[Chunk]:
        for file, keys, _ in self.plan:
            yield str(file), check_chunk(_load(file, keys), self.inputs, str(file), self.layout)


def _data_files(folder: Path, wanted: Callable[[Path], bool] = lambda p: p.suffix in (".npy", ".npz"),
                kind: str = ".npy or .npz") -> list[Path]:
    """The ``wanted`` files of ``folder`` (by default .npy and .npz) in name order; one that cannot be listed, or a
    wanted entry that is no readable file (a symbolic link to nothing, a link loop, a folder), is an error naming it:
    it was skipped without a word."""
    entries = sorted(p for p in _entries(folder) if wanted(p))
    for entry in entries:
        try:
            mode = entry.stat().st_mode
        except OSError as exc:
            what = "a symbolic link to nothing" if exc.errno == errno.ENOENT else \
                "a symbolic link loop" if exc.errno == errno.ELOOP else exc.strerror or str(exc)
            raise CalibrationError(f"{entry}: {what} in the calibration folder; remove it or make it a file") \
                from None
        if not stat.S_ISREG(mode):
            raise CalibrationError(f"{entry}: not a file ({'a folder' if stat.S_ISDIR(mode) else 'a special file'})"
                                   f" in the calibration folder; calibration files are {kind} files")
    return entries


def _entries(folder: Path) -> list[Path]:
    """What ``folder`` holds; one that cannot be listed is a CalibrationError naming it."""
    try:
        return list(folder.iterdir())
    except OSError as exc:
        raise CalibrationError(f"{folder}: cannot list the calibration folder ({exc.strerror or exc})") from None


class PythonSource:
    """Arrays or a dict of arrays; a list of items; a re-iterable (a torch DataLoader); a one-shot stream
    (a generator, an iterator, an ONNX Runtime ``CalibrationDataReader``, whose ``get_next()`` returns feeds).

    Items go through ``transform`` first (``nncf.Dataset(data, transform_fn)`` style). Whole arrays and lists
    are checked up front; streams have their first item checked up front and the rest as they are read.
    ``length`` is the number of samples (or feeds) when known without reading a stream, else None.
    """

    def __init__(self, source, inputs: list[Variable], layout: str = "samples",
                 transform: Callable | None = None) -> None:
        self.inputs, self.layout, self.transform = inputs, layout, transform
        self._items, self._named, self._spilled = source, True, None
        self.empty = NO_SAMPLES  # what to say where it holds none (a stream says why below)
        if isinstance(source, Mapping) or hasattr(source, "shape"):
            self._items, self._named = [source], False
        elif callable(getattr(source, "get_next", None)):
            self._spilled = _Spilled(self._checked(_reader_items(source)))
            self.empty = (f"the reader's first get_next() returned None: a {type(source).__name__} is read once, "
                          "so an earlier call may have used it up (call its rewind() or make a new one, or pass an "
                          "earlier result's .calibration)")
        elif not isinstance(source, Sequence) or isinstance(source, (str, bytes)):
            try:
                one_shot = iter(source) is source
            except TypeError:
                raise CalibrationError(f"calibration data of type {type(source).__name__} is not a file, a "
                                       "directory or an iterable of dicts/arrays, nor a CalibrationDataReader"
                                       ) from None
            if one_shot:
                self._spilled = _Spilled(self._checked(source))
                self.empty = (f"the {type(source).__name__} gave no item: it is read once, so an earlier call may "
                              "have used it up (pass a list, or an earlier result's .calibration)")
        if isinstance(self._items, list | tuple) and self._spilled is None:
            self.length = sum(self.count(arrays) for _, arrays in self.chunks())
        else:
            first = next(iter(self.chunks()), None)  # the first item is read and checked now
            self.length = 0 if first is None else None

    def count(self, arrays: dict[str, np.ndarray]) -> int:
        return 1 if self.layout == "feeds" else len(next(iter(arrays.values())))

    def chunks(self) -> Iterator[Chunk]:
        return iter(self._spilled) if self._spilled is not None else self._checked(self._items)

    def _checked(self, items: Iterable) -> Iterator[Chunk]:
        stream = iter(items)
        for i in itertools.count():
            where = f"calibration item {i}" if self._named else "calibration arrays"
            try:
                raw = next(stream)
            except StopIteration:
                return
            except Exception as exc:  # the user's generator or reader: its error, not onnxruntime's nor qtool's
                raise CalibrationError(f"{where}: reading it raised {type(exc).__name__}: {exc}") from exc
            if self.transform is not None:
                try:
                    raw = self.transform(raw)
                except Exception as exc:
                    raise CalibrationError(f"{where}: transform failed: {type(exc).__name__}: {exc}") from exc
            yield where, check_chunk(raw, self.inputs, where, self.layout)


def _reader_items(reader) -> Iterator:
    while (feed := reader.get_next()) is not None:
        yield feed


class _Spilled:
    """Checked chunks of a one-shot stream, readable again: each is written to a temporary folder when read.

    The stream is read only as far as a pass asks (lazily); the folder goes when this object does.
    """

    def __init__(self, stream: Iterator[Chunk]) -> None:
        self._stream, self._done, self._folder = stream, False, None
        self._index: list[tuple[str, dict[str, np.dtype]]] = []  # where each chunk came from, its arrays' dtypes

    def __iter__(self) -> Iterator[Chunk]:
        position = 0
        while True:
            if position < len(self._index):
                yield self._read(position)
            elif self._done:
                return
            else:
                chunk = next(self._stream, None)
                if chunk is None:
                    self._done = True
                    return
                self._write(chunk)
                yield chunk
            position += 1

    def _path(self, position: int) -> Path:
        if self._folder is None:
            self._folder = tempfile.mkdtemp(prefix="qtool-calibration-")
            weakref.finalize(self, shutil.rmtree, self._folder, True)
        return Path(self._folder) / f"{position}.npz"

    def _write(self, chunk: Chunk) -> None:
        where, arrays = chunk
        np.savez(self._path(len(self._index)), *map(_storable, arrays.values()))
        self._index.append((where, {name: array.dtype for name, array in arrays.items()}))

    def _read(self, position: int) -> Chunk:
        where, dtypes = self._index[position]
        with np.load(self._path(position)) as data:
            return where, {name: data[f"arr_{i}"].view(dtype) for i, (name, dtype) in enumerate(dtypes.items())}


def _storable(array: np.ndarray) -> np.ndarray:
    """``array`` as ``np.save`` keeps it: ml_dtypes' types (bfloat16, float 8, int4) as unsigned integers of their
    size (saved as they are, they came back as raw bytes, 'V2', and failed a pass with 'numpy.void')."""
    return array.view(f"u{array.dtype.itemsize}") if array.dtype.kind == "V" else array
