"""ONNX Runtime sessions as this platform runs its models: CPU, exact numerics, quiet; run() runs the exported files."""

from __future__ import annotations

import ctypes
import math
import os
from collections.abc import Callable

import ml_dtypes
import numpy as np
import onnxruntime as ort
from onnx import TensorProto
from onnxruntime.capi import onnxruntime_pybind11_state as _state

# What ORT raises when it cannot load or run a model (its classes derive from Exception directly).
ORT_ERRORS = (_state.Fail, _state.InvalidArgument, _state.InvalidGraph, _state.NotImplemented,
              _state.RuntimeException, RuntimeError)


def session_options(optimized_model: str | os.PathLike | None = None,
                    level: ort.GraphOptimizationLevel = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
                    exact: bool = True):
    """Options that keep ORT's weight-only MatMulNBits exact (``exact``; else the accuracy level ORT gives a
    blocked DequantizeLinear -> MatMul it rewrites by default, as a user's session runs it) and, if asked, save
    the optimized graph."""
    options = ort.SessionOptions()
    options.log_severity_level = 4  # fatal only: qtool reports a failure with its own error, ORT's message in it
    options.graph_optimization_level = level
    if exact:
        options.add_session_config_entry("session.qdq_matmulnbits_accuracy_level", "0")
    if optimized_model is not None:
        options.optimized_model_filepath = str(optimized_model)
    return options


def load_only_options() -> ort.SessionOptions:
    """Options to load a model and create its kernels, without graph optimizations nor a thread pool (export's load
    check)."""
    options = session_options(level=ort.GraphOptimizationLevel.ORT_DISABLE_ALL)
    options.intra_op_num_threads = 1
    return options


def cpu_session(model: str | os.PathLike | bytes, options: ort.SessionOptions | None = None) -> ort.InferenceSession:
    source = model if isinstance(model, bytes) else str(model)
    return ort.InferenceSession(source, options or session_options(), providers=["CPUExecutionProvider"])


RUNTIME = f"onnxruntime {ort.__version__} (CPUExecutionProvider)"


def run(paths, samples: list[dict], names: list[str], exact: bool = True) -> list[list]:
    """The outputs ``names`` of the exported model (``paths[0]``) in an ORT CPU session, per sample: ``exact`` (the
    agreement check) as :func:`session_options` sets it, else as a user's default session runs it, every graph
    optimization included (at the extended level a Resize-19 with axes ran where the default session stopped, and
    an fp16 blocked weight read zeros where the default read it right)."""
    return runner(paths, exact)(samples, names)


def runner(paths, exact: bool = True) -> Callable[[list[dict], list[str]], list[list]]:
    """:func:`run` of one session, opened now, for any number of calls."""
    level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED if exact else ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    session = cpu_session(paths[0], session_options(level=level, exact=exact))
    feeds_names = [i.name for i in session.get_inputs()]
    typed = {o.name: o.type for o in session.get_outputs()}

    def run_samples(samples: list[dict], names: list[str]) -> list[list]:
        if any(typed.get(name) == _BFLOAT16_TYPE for name in names) or any(
                np.asarray(sample[k]).dtype == _BFLOAT16 for sample in samples for k in feeds_names):
            return [[_array(v) for v in session.run_with_ort_values(names, {k: _value(sample[k])
                                                                            for k in feeds_names})]
                    for sample in samples]
        return [session.run(names, {k: sample[k] for k in feeds_names}) for sample in samples]

    return run_samples


# ORT's Python API takes and returns no bfloat16 numpy array ('No corresponding Numpy type for Tensor Type.
# bfloat16'): a bfloat16 model's inputs and outputs (the written model keeps them) go through OrtValues.
_BFLOAT16, _BFLOAT16_TYPE = np.dtype(ml_dtypes.bfloat16), "tensor(bfloat16)"


def _value(array) -> ort.OrtValue:
    array = np.ascontiguousarray(array)
    if array.dtype == _BFLOAT16:
        return ort.OrtValue.ortvalue_from_numpy_with_onnx_type(array.view(np.uint16), TensorProto.BFLOAT16)
    return ort.OrtValue.ortvalue_from_numpy(array)


def _array(value: ort.OrtValue) -> np.ndarray:
    if value.data_type() != _BFLOAT16_TYPE:
        return value.numpy()
    shape = value.shape()
    if not math.prod(shape):
        return np.empty(shape, _BFLOAT16)
    raw = (ctypes.c_uint16 * math.prod(shape)).from_address(value.data_ptr())
    return np.frombuffer(raw, np.uint16).copy().view(_BFLOAT16).reshape(shape)
