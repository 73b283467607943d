"""Float statistics through ONNX Runtime: the graph's float run, with the tensors observers watch as extra outputs.

Calibration needs the float value of every observed tensor for every batch. ONNX Runtime computes them several
times faster than the torch executor on CPU; the graph is written as an ONNX model whose outputs also list those
tensors (as onnxruntime's own calibrators augment a model). What one run returns is bounded: a first run on one
sample measures the bytes the requested tensors take; a batch of samples then runs in runs of as many samples as
fit in ``RUN_BYTES`` (the runtime's own memory grows with the samples of a run), a feed whole; and where one
sample's tensors exceed ``budget`` they are requested in groups that fit (each group one more run of the part of
the graph it needs). The arrays
are handed on as they come, to observers that compute in numpy (no copy, no torch). Weights reach onnxruntime as arrays
beside the model (its external initializers), not as bytes copied into it and serialised.

The torch executor stays the engine where ONNX Runtime cannot stand in for it exactly: a device other than the
CPU, ops only a plugin's kernels run. Control flow is no reason: the executor runs If, Loop and Scan through
onnxruntime too, and the tensors observed are the main graph's (each body is calibrated as a model of its own,
:mod:`qtool.control_flow`). Baked parameters run with
their float values (``float_value``), as the executor runs them in float.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence

import numpy as np
import onnx
from onnx import helper, numpy_helper
from onnxruntime.capi import onnxruntime_pybind11_state as _state

from ..ir import PROTO_LIMIT, Graph, to_model_proto
from ..ort_schemas import ort_can_run

DEFAULT_BUDGET = 128 << 20  # bytes of requested tensors one run may return (peak memory against speed: on
# all-MiniLM-L6-v2 and PP-OCRv4 det, 256 MiB cost 170 MiB more peak memory than 128, and 64 MiB more time)
RUN_BYTES = 8 << 20  # bytes of requested tensors a run of several samples returns at most: onnxruntime's arena
# grows with the samples a run computes (the Magika file-type model, 32 samples in one run: 274 MB peak; in runs
# within 16 MiB: 171 MB, and faster; within 8 MiB: 143 -> 118 MiB, ORT's quantize_static 117, no slower;
# all-MiniLM-L6-v2 457 -> 355 MB at 16 MiB, the same time; PP-OCRv4 rec and det, whose samples each run alone,
# the same at 16 and 8)
EXTERNAL_BYTES = 1024  # initializers this large reach onnxruntime as arrays, not bytes in the model (no proto
# copy nor serialisation: all-MiniLM-L6-v2's 90 MB made each session cost about a second); smaller ones, such as
# the shapes it reads while loading the model, stay in it
_ORT_VALUE_TYPES = frozenset(np.dtype(t) for t in ("bool", "float16", "float32", "float64", "int8", "int16", "int32",
                                                    "int64", "uint8", "uint16", "uint32", "uint64"))
ORT_ERRORS = (_state.Fail, _state.InvalidArgument, _state.InvalidGraph, _state.NotImplemented,
              _state.RuntimeException, RuntimeError)


def failure(exc: BaseException) -> str:
    """ONNX Runtime's error in a float run of the model, in one line: the node and the reason, without its C++
    source location."""
    text = " ".join(str(exc).split())
    node = re.search(r"running (\S+) node\. Name:'([^']*)'", text)
    reason = text.split("Status Message: ", 1)[-1]
    reason = reason.rsplit(" was false. ", 1)[-1] if " was false. " in reason else reason
    where = f" at node {node.group(2)!r} ({node.group(1)})" if node else ""
    return f"the float model fails in ONNX Runtime{where}: {reason}"


def refusal(graph: Graph, device: str) -> str | None:
    """Why ONNX Runtime cannot compute ``graph``'s float statistics in place of the torch executor (None: it can)."""
    if str(device) != "cpu":
        return f"device {device!r} (onnxruntime statistics run on the CPU)"
    for op in graph.operations.values():
        if not ort_can_run(op, graph):
            return f"op {op.name!r} ({op.domain}::{op.op_type}) runs only through a qtool kernel"
    inline = sum(v.value.nbytes for v in graph.parameters() if _inline(np.asarray(v.value)))
    if inline > PROTO_LIMIT:  # the others reach onnxruntime as arrays beside the model (_augmented)
        return (f"{inline / 2**30:.1f} GiB of parameters of types onnxruntime takes only inside the model exceed one "
                "ModelProto")
    return None


class OrtFloatRun:
    """An onnxruntime session of ``graph`` in float that returns ``tensors`` (any of its tensors) for each batch.

    ``threads`` sets the intra-op threads (None: onnxruntime's default); ``budget`` the bytes one run may return
    (None: ``DEFAULT_BUDGET``).
    """

    def __init__(self, graph: Graph, tensors: Sequence[str], *, threads: int | None = None,
                 budget: int | None = None) -> None:
        import onnxruntime as ort

        inputs = {v.name for v in graph.inputs}
        self.fed = [name for name in dict.fromkeys(tensors) if name in inputs]
        self.computed = [name for name in dict.fromkeys(tensors) if name not in inputs]
        options = ort.SessionOptions()
        options.log_severity_level = 4  # fatal only: qtool reports a failure with its own error, ORT's message in it
        if threads is not None:
            options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        # its workers wait asleep between ops, not spinning on the cores the observers take the last run in on
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        model, arrays = _augmented(graph, self.computed)
        options.add_external_initializers(list(arrays), [ort.OrtValue.ortvalue_from_numpy(a) for a in arrays.values()])
        self.session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
        self.budget = DEFAULT_BUDGET if budget is None else budget
        self.rows: int | None = None  # samples per run, once measured
        self.groups: list[list[str]] | None = None

    def run(self, batch: Mapping[str, np.ndarray], *, splittable: bool) -> Iterator[dict[str, np.ndarray]]:
        """``{tensor: array}`` for pieces of ``batch`` (the whole batch, or runs of samples, or groups of tensors);
        ``splittable``: the batch holds samples along its first axis (the ``samples`` layout), so it may be cut."""
        size = len(next(iter(batch.values()))) if splittable and batch else 1
        if self.groups is None:  # measure on one sample what the tensors take (a feed: all of it)
            first = _rows(batch, 0, 1) if splittable else batch
            measured = self._run(first, self.computed)
            self._size(measured, splittable)
            if size == 1:  # that was the whole batch
                yield {**{n: first[n] for n in self.fed}, **measured}
                return
            del measured  # the runs below compute the batch in the runs' own sizes (held, it stayed alive beside
            # them: PP-OCRv4 det's 95 MiB a page, 508-516 -> 427-431 MiB peak on 32 pages, ORT's 429)
        step = self.rows if splittable else size
        for begin in range(0, size, step):
            piece = _rows(batch, begin, begin + step) if splittable else batch
            if self.fed:
                yield {n: piece[n] for n in self.fed}
            for group in self.groups:
                yield self._run(piece, group)

    def drop(self, names: set[str]) -> None:
        """Return ``names`` no more from the next run on (runs keep the number of samples they were sized for)."""
        self.fed = [name for name in self.fed if name not in names]
        self.computed = [name for name in self.computed if name not in names]
        if self.groups is not None:
            self.groups = [kept for group in self.groups if (kept := [name for name in group if name not in names])]

    def _run(self, feeds: Mapping[str, np.ndarray], names: list[str]) -> dict[str, np.ndarray]:
        if not names:
            return {}
        return dict(zip(names, self.session.run(names, dict(feeds)), strict=True))

    def _size(self, results: dict[str, np.ndarray], splittable: bool) -> None:
        """Runs of as many samples as fit in the budget; groups of tensors where one sample does not fit."""
        total = sum(map(value_nbytes, results.values()))
        self.rows = max(1, min(self.budget, RUN_BYTES) // total) if splittable and total else 1
        self.groups, group, held = [], [], 0
        for name in self.computed:
            if group and held + value_nbytes(results[name]) > self.budget:
                self.groups.append(group)
                group, held = [], 0
            group.append(name)
            held += value_nbytes(results[name])
        if group:
            self.groups.append(group)


def float_outputs(graph: Graph, samples: Sequence[Mapping[str, np.ndarray]], names: Sequence[str], device: str,
                  *, threads: int | None = None) -> list[dict[str, np.ndarray]] | None:
    """``{name: float value}`` of ``names`` for each of ``samples`` (whole feeds, never cut), or None where
    onnxruntime cannot stand in for the executor (:func:`refusal`, or it refuses the session or a run)."""
    if refusal(graph, device) is not None:
        return None
    try:
        run = OrtFloatRun(graph, names, threads=threads)
        return [{k: v for piece in run.run(sample, splittable=False) for k, v in piece.items()} for sample in samples]
    except ORT_ERRORS:
        return None


def value_nbytes(value) -> int:
    """Bytes of a run's value: an array, a sequence of values (a SequenceConstruct's output is a list), a map (a
    dict: ai.onnx.ml's ZipMap writes a sequence of them) or a number (a map's key or value)."""
    if isinstance(value, np.ndarray):
        return value.nbytes
    if isinstance(value, Mapping):
        return sum(value_nbytes(k) + value_nbytes(v) for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return sum(map(value_nbytes, value))
    return np.asarray(value).nbytes


def _rows(batch: Mapping[str, np.ndarray], begin: int, end: int) -> dict[str, np.ndarray]:
    return {name: array[begin:end] for name, array in batch.items()}


def _augmented(graph: Graph, tensors: list[str]) -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    """``graph`` as a model whose outputs also list ``tensors``; first axes left free (the executor takes batches
    of any size along them) and no intermediate shapes (they may name the batch the model was exported with).
    Initializers of ``EXTERNAL_BYTES`` or more come apart, as arrays by name (for onnxruntime's external
    initializers): the model refers to them without holding a copy of their bytes."""
    arrays: dict[str, np.ndarray] = {}

    def initializer(var) -> onnx.TensorProto:
        value = np.asarray(var.value if var.float_value is None else var.float_value)  # baked: the float weights
        if _inline(value):
            return numpy_helper.from_array(value, var.name)
        arrays[var.name] = np.ascontiguousarray(value)
        return _external(var.name, value)

    model = to_model_proto(graph, tensor=initializer)
    outputs = {o.name for o in model.graph.output}
    model.graph.output.extend(onnx.ValueInfoProto(name=name) for name in tensors if name not in outputs)
    del model.graph.value_info[:]
    for value in (*model.graph.input, *model.graph.output):
        if value.type.HasField("tensor_type") and value.type.tensor_type.HasField("shape"):
            dims = value.type.tensor_type.shape.dim
            if len(dims):
                dims[0].Clear()
                dims[0].dim_param = "qtool_batch"
    return model, arrays


def _inline(value: np.ndarray) -> bool:
    """Whether an initializer stays in the augmented model: under ``EXTERNAL_BYTES``, or of a type no OrtValue
    holds (bfloat16, float 8, 4-bit)."""
    return value.nbytes < EXTERNAL_BYTES or value.dtype not in _ORT_VALUE_TYPES


def _external(name: str, value: np.ndarray) -> onnx.TensorProto:
    """An initializer that names its data as external: onnxruntime takes the array itself in its place."""
    tensor = onnx.TensorProto(name=name, dims=value.shape, data_type=helper.np_dtype_to_tensor_dtype(value.dtype),
                              data_location=onnx.TensorProto.EXTERNAL)
    for key, text in (("location", "qtool-array"), ("offset", "0"), ("length", str(value.nbytes))):
        tensor.external_data.add(key=key, value=text)
    return tensor
