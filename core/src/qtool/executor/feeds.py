"""Checking model inputs and turning them into torch tensors on the executor's device.

Ranks, dtypes and static sizes must match the graph's declaration, except the
first axis: a model exported for batch 1 may be fed batches.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import ml_dtypes
import numpy as np
import torch

from ..ir import Variable
from .errors import InputError


def numpy_feeds(inputs: Sequence | Mapping, graph_inputs: list[Variable]) -> dict[str, np.ndarray]:
    """Name the inputs (a list follows the graph's input order) and check them."""
    named = _named(inputs, graph_inputs)
    arrays = {}
    for var in graph_inputs:
        if var.name in named:
            value = named[var.name]
            if isinstance(value, torch.Tensor):
                raise InputError(f"input {var.name!r}: forward() takes numpy arrays; use forward_torch() for tensors")
            array = np.asarray(value)
            if var.dtype is not None and array.dtype == np.dtype(var.dtype):  # an int4 array: in its container
                array = array.astype(_container(array.dtype), copy=False)
            _check(var, array.shape, array.dtype)
            arrays[var.name] = array
    return arrays


def torch_feeds(feeds: Mapping, graph_inputs: list[Variable]) -> dict[str, torch.Tensor]:
    """Check a name -> tensor mapping against the graph's inputs."""
    named = _named(feeds, graph_inputs)
    for name, tensor in named.items():
        var = next(v for v in graph_inputs if v.name == name)
        if not isinstance(tensor, torch.Tensor):
            raise InputError(f"input {name!r}: forward_torch() takes torch tensors, got {type(tensor).__name__}")
        _check(var, tuple(tensor.shape), _numpy_dtype(tensor.dtype))
    return named


def require(feeds: Mapping, needed: Sequence[Variable]) -> None:
    """Every input the requested outputs depend on is fed."""
    for var in needed:
        if var.name not in feeds:
            raise InputError(f"missing input {var.name!r} (expected {expectation(var)})")


# ml_dtypes' types torch has too, carried bit for bit through an unsigned integer view of their width
SAME_BITS = {np.dtype(ml_dtypes.bfloat16): torch.bfloat16, np.dtype(ml_dtypes.float8_e4m3fn): torch.float8_e4m3fn,
             np.dtype(ml_dtypes.float8_e4m3fnuz): torch.float8_e4m3fnuz,
             np.dtype(ml_dtypes.float8_e5m2): torch.float8_e5m2,
             np.dtype(ml_dtypes.float8_e5m2fnuz): torch.float8_e5m2fnuz}
INT_VIEW = {1: torch.uint8, 2: torch.int16}  # the torch integer type a tensor of that many bytes is viewed as


def to_tensor(array: np.ndarray, device: torch.device) -> torch.Tensor:
    """A torch tensor for ``array`` on ``device`` (no copy on CPU when the array allows it; bfloat16 and float8
    keep their bits; int4, uint4, int2, uint2 and float4 E2M1, which torch lacks, come in their container type,
    int8, uint8 or float32, which holds every value exactly: an int4 initializer was a TypeError)."""
    if array.dtype in SAME_BITS:
        bits = np.array(array, order="C").view(f"u{array.dtype.itemsize}")
        return torch.from_numpy(bits).view(SAME_BITS[array.dtype]).to(device)
    if (container := _container(array.dtype)) != array.dtype:
        array = array.astype(container)
    if not (array.flags.c_contiguous and array.flags.writeable):  # torch wants writable, dense memory
        array = np.array(array, order="C")
    return torch.from_numpy(array).to(device)


def to_numpy(tensor: torch.Tensor) -> np.ndarray:
    """``tensor`` as a numpy array on the CPU; bfloat16 and float8 as ml_dtypes' types, bit for bit."""
    tensor = tensor.detach().cpu()
    if tensor.dtype in SAME_BITS.values():
        dtype = next(d for d, t in SAME_BITS.items() if t == tensor.dtype)
        return tensor.view(INT_VIEW[tensor.element_size()]).numpy().view(dtype)
    return tensor.numpy()


def to_value(value, device: torch.device):
    """A value ONNX Runtime returned, as the executor holds it: an array as a tensor (:func:`to_tensor`), a
    sequence as a list of its values, a map (a dict: ai.onnx.ml's ZipMap writes a sequence of them) as it is."""
    if isinstance(value, list):
        return [to_value(v, device) for v in value]
    if isinstance(value, dict):
        return value
    return to_tensor(np.asarray(value), device)


def output_value(value):
    """A value the executor holds, as :meth:`TorchExecutor.forward` returns it: a tensor as a numpy array
    (:func:`to_numpy`), a sequence as a list of its values, a map as it is."""
    if isinstance(value, list):
        return [output_value(v) for v in value]
    if isinstance(value, dict):
        return value
    return to_numpy(value)


def output_tensor(value) -> torch.Tensor:
    """A graph output as one tensor, as the error at an output is measured: a tensor as it is, a sequence or a map
    flattened by :func:`qtool.analysis.metrics.output_array` (on the CPU: a map's values are Python numbers)."""
    if isinstance(value, torch.Tensor):
        return value
    from ..analysis.metrics import output_array

    return torch.from_numpy(np.array(output_array(output_value(value))))


def expectation(var: Variable) -> str:
    """'float32 [batch, 3, 224, 224]' from the graph's declaration."""
    dtype = str(np.dtype(var.dtype)) if var.dtype is not None else "any dtype"
    if var.shape is None:
        return f"{dtype}, any shape"
    return f"{dtype} [{', '.join('?' if d is None else str(d) for d in var.shape)}]"


def _named(inputs: Sequence | Mapping, graph_inputs: list[Variable]) -> dict:
    names = [v.name for v in graph_inputs]
    if isinstance(inputs, Mapping):
        unknown = [k for k in inputs if k not in names]
        if unknown:
            raise InputError(f"unknown input {unknown[0]!r}; the model's inputs are: {', '.join(names) or 'none'}")
        return dict(inputs)
    if isinstance(inputs, (np.ndarray, torch.Tensor)) or not isinstance(inputs, Sequence):
        inputs = [inputs]
    if len(inputs) != len(names):
        raise InputError(f"{len(inputs)} input(s) given, the model takes {len(names)}: {', '.join(names)}")
    return dict(zip(names, inputs, strict=True))


def _check(var: Variable, shape: tuple, dtype: np.dtype | None) -> None:
    if var.dtype is not None and dtype is not None and np.dtype(dtype) != _container(np.dtype(var.dtype)):
        raise InputError(f"input {var.name!r} has dtype {np.dtype(dtype)}, expected {expectation(var)}")
    if var.shape is None:
        return
    if len(shape) != len(var.shape):
        raise InputError(f"input {var.name!r} has rank {len(shape)} {list(shape)}, expected {expectation(var)}")
    for axis, (got, want) in enumerate(zip(shape, var.shape, strict=True)):
        if axis > 0 and isinstance(want, int) and want > 0 and got != want:
            raise InputError(f"input {var.name!r} has shape {list(shape)}, expected {expectation(var)}")


# ml_dtypes' types torch lacks, and the wider numpy type the executor holds them in
NARROW = {np.dtype(n): np.dtype(c) for n, c in ((ml_dtypes.int4, np.int8), (ml_dtypes.uint4, np.uint8),
                                                (ml_dtypes.int2, np.int8), (ml_dtypes.uint2, np.uint8),
                                                (ml_dtypes.float4_e2m1fn, np.float32))}


def _container(dtype: np.dtype) -> np.dtype:
    """The dtype the executor holds ``dtype`` in: int8/uint8 for int4/int2 and their unsigned kinds, float32
    for float 4, itself otherwise."""
    return NARROW.get(np.dtype(dtype), np.dtype(dtype))


def _numpy_dtype(dtype: torch.dtype) -> np.dtype | None:
    try:
        return torch.empty(0, dtype=dtype).numpy().dtype
    except TypeError:  # bfloat16 and other types numpy lacks: not checked
        return None
