"""What each control-flow body sees during calibration: one feed per call of the body.

The main graph runs in float over the calibration data; every call of an If,
Loop or Scan is unrolled as ONNX Runtime runs it: an If feeds the branch its
condition takes, a Loop feeds its body once per iteration (the loop-carried
values as the previous iteration left them), a Scan once per slice of its scan
inputs (in the direction it scans). A feed holds the body's formal inputs and
the outer tensors it reads; the loop-carried values come from the float body
run by ONNX Runtime.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import onnx
import onnxruntime as ort
from onnx import helper, numpy_helper

from ..calibration import ort_engine
from ..calibration.provenance import feed_error
from ..calibration.threads import pass_threads
from ..executor.errors import ExecutorError
from ..ir import Graph, Operation
from ..ir.onnx_import import outer_references

MAX_FEEDS = 256  # feeds kept per body: every k-th call, k doubling whenever they would be more
MAX_TRIPS = 10_000  # a Loop without a trip count that never stops is cut here


def body_attributes(op: Operation) -> list[str]:
    """The attributes of ``op`` that hold one subgraph (If branches, Loop and Scan bodies)."""
    return [name for name, kind in op.attribute_types.items() if kind == onnx.AttributeProto.GRAPH]


def body_reads(body: onnx.GraphProto) -> list[str]:
    """Tensors of the enclosing graph ``body`` reads, in order of use."""
    return outer_references(helper.make_node("If", [], [], then_branch=body, else_branch=onnx.GraphProto()))


def body_model(graph: Graph, op: Operation, body: onnx.GraphProto, feed: dict[str, np.ndarray]) -> onnx.ModelProto:
    """``body`` (of ``op``) as a model of its own: its formal inputs, then the outer tensors it reads (parameters of
    the main graph become its initializers, the others inputs), inputs typed as ``feed`` (one call's) holds them,
    outputs as the body computes them from it."""
    copy = onnx.GraphProto()
    copy.CopyFrom(body)
    formal = [v.name for v in body.input]
    del copy.input[:]
    copy.input.extend(_typed(name, feed[name]) for name in formal)
    outer = op.outer_inputs
    for name in body_reads(body):
        var = outer[name]
        if var.is_parameter:
            copy.initializer.append(numpy_helper.from_array(np.asarray(var.value), name))
        else:
            copy.input.append(_typed(name, feed[name]))
    opsets = [helper.make_opsetid(d, v) for d, v in graph.info.opset_imports.items()]
    model = helper.make_model(copy, opset_imports=opsets, ir_version=graph.info.ir_version)
    results = _session(model).run(None, {name: feed[name] for name in (v.name for v in copy.input)})
    outputs = [_typed(v.name, np.asarray(r)) for v, r in zip(body.output, results, strict=True)]
    del model.graph.output[:]
    model.graph.output.extend(outputs)
    return model


def _session(model: onnx.ModelProto) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.log_severity_level = 4  # fatal only: qtool reports a failure with its own error, ORT's message in it
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def _declared_rank(value: onnx.ValueInfoProto) -> int | None:
    """The rank a body input declares (None: none declared). ONNX Runtime gives a Loop body's iteration number
    and condition the rank the body declares: tf2onnx's bodies read the iteration number as [1], a Slice's starts."""
    tensor = value.type.tensor_type
    return len(tensor.shape.dim) if tensor.HasField("shape") else None


def _typed(name: str, value: np.ndarray) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, helper.np_dtype_to_tensor_dtype(value.dtype),
                                         [f"{name}_d{k}" for k in range(value.ndim)])


class BodyRecorder:
    """Feeds of each body of one control-flow op, from the op's calls (``record(inputs)``, the op's inputs as the
    executor runs it: the node's own, then the outer tensors its bodies read)."""

    def __init__(self, graph: Graph, op: Operation) -> None:
        self.graph, self.op = graph, op
        self.feeds: dict[str, list[dict[str, np.ndarray]]] = {name: [] for name in body_attributes(op)}
        self.calls = dict.fromkeys(self.feeds, 0)  # body calls seen
        self._every = dict.fromkeys(self.feeds, 1)  # keep every k-th call's feed
        self._sessions: dict[str, ort.InferenceSession] = {}

    def record(self, inputs: list[np.ndarray | None]) -> None:
        explicit = inputs[:len(self.op.explicit_inputs)]
        outer = {name: value for name, value in zip(self.op.subgraph_refs, inputs[len(explicit):], strict=True)}
        kind = self.op.op_type
        if kind == "If":
            branch = "then_branch" if bool(np.asarray(explicit[0]).reshape(-1)[0]) else "else_branch"
            self._add(branch, {}, outer)
        elif kind == "Loop":
            self._loop(explicit, outer)
        elif kind == "Scan":
            self._scan(explicit, outer)


    def _add(self, name: str, formal: dict[str, np.ndarray], outer: dict[str, np.ndarray]) -> dict:
        body = self.op.attributes[name]
        variables = self.op.outer_inputs
        feed = {**formal, **{ref: outer[ref] for ref in body_reads(body) if not variables[ref].is_parameter}}
        if self.calls[name] % self._every[name] == 0:
            self.feeds[name].append(feed)
            if len(self.feeds[name]) > MAX_FEEDS:  # thin to every other one kept: still evenly spread
                self.feeds[name] = self.feeds[name][::2]
                self._every[name] *= 2
        self.calls[name] += 1
        return feed

    def _run(self, name: str, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        if name not in self._sessions:
            self._sessions[name] = _session(body_model(self.graph, self.op, self.op.attributes[name], feed))
        return self._sessions[name].run(None, feed)

    def _loop(self, explicit: list, outer: dict[str, np.ndarray]) -> None:
        body = self.op.attributes["body"]
        names = [v.name for v in body.input]
        trips = None if explicit[0] is None else int(np.asarray(explicit[0]).reshape(-1)[0])
        cond = True if len(explicit) < 2 or explicit[1] is None else bool(np.asarray(explicit[1]).reshape(-1)[0])
        carried = [np.asarray(v) for v in explicit[2:]]
        i = 0
        ranks = [_declared_rank(v) for v in body.input[:2]]
        while cond and i < (MAX_TRIPS if trips is None else trips):
            counters = [np.array(i, np.int64), np.array(cond)]
            counters = [c if rank is None else c.reshape((1,) * rank) for c, rank in zip(counters, ranks, strict=True)]
            formal = dict(zip(names, [*counters, *carried], strict=True))
            results = self._run("body", self._add("body", formal, outer))
            cond, carried = bool(np.asarray(results[0]).reshape(-1)[0]), list(results[1:1 + len(carried)])
            i += 1

    def _scan(self, explicit: list, outer: dict[str, np.ndarray]) -> None:
        body, attrs = self.op.attributes["body"], self.op.attributes
        count = int(attrs["num_scan_inputs"])
        states, scanned = [np.asarray(v) for v in explicit[:-count]], [np.asarray(v) for v in explicit[-count:]]
        axes = [a % s.ndim for a, s in zip(attrs.get("scan_input_axes", [0] * count), scanned, strict=True)]
        backwards = attrs.get("scan_input_directions", [0] * count)
        names = [v.name for v in body.input]
        length = scanned[0].shape[axes[0]]
        for t in range(length):
            slices = [np.asarray(np.take(s, length - 1 - t if back else t, axis=axis))  # a 1-D input's: 0-d
                      for s, axis, back in zip(scanned, axes, backwards, strict=True)]
            formal = dict(zip(names, [*states, *slices], strict=True))
            results = self._run("body", self._add("body", formal, outer))
            states = list(results[:len(states)])


def record_bodies(graph: Graph, ops: list[Operation], batches: Iterable[dict[str, np.ndarray]],
                  device: str = "cpu") -> dict[str, BodyRecorder]:
    """Run ``graph`` in float over ``batches``, recording each control-flow op of ``ops``' body feeds: by
    onnxruntime where it can stand in for the executor (:mod:`qtool.calibration.ort_engine`; control-flow ops
    run through onnxruntime in the executor too), else by the executor."""
    recorders = {op.name: BodyRecorder(graph, op) for op in ops}
    if ort_engine.refusal(graph, device) is None:
        try:
            _record_with_onnxruntime(graph, recorders, batches)
            return recorders
        except ort_engine.ORT_ERRORS:  # onnxruntime refused the model or a batch: the executor starts over
            recorders = {op.name: BodyRecorder(graph, op) for op in ops}
    _record_with_executor(graph, recorders, batches, device)
    return recorders


def _record_with_onnxruntime(graph: Graph, recorders: dict[str, BodyRecorder],
                             batches: Iterable[dict[str, np.ndarray]]) -> None:
    ops = [graph.operations[name] for name in recorders]
    computed = [v.name for op in ops for v in op.inputs if v is not None and not v.is_parameter]
    run = ort_engine.OrtFloatRun(graph, computed, threads=pass_threads())
    for batch in batches:
        values = {name: array for piece in run.run(batch, splittable=False) for name, array in piece.items()}
        for op in ops:
            recorders[op.name].record([None if v is None else np.asarray(v.value) if v.is_parameter else values[v.name]
                                       for v in op.inputs])


def _record_with_executor(graph: Graph, recorders: dict[str, BodyRecorder],
                          batches: Iterable[dict[str, np.ndarray]], device: str) -> None:
    from ..executor import TorchExecutor

    executor = TorchExecutor(graph, device)
    executor.quantize = False

    def hook(op, inputs, outputs) -> None:
        if op.name in recorders:
            recorders[op.name].record([None if t is None else t.detach().cpu().numpy() for t in inputs])

    handle = executor.add_hook(hook)
    try:
        for batch in batches:
            try:
                executor.forward(batch)
            except ExecutorError as exc:  # on this feed: its file named
                error = feed_error(batch, str(exc), retry=executor.forward, errors=(ExecutorError,))
                if error is None:
                    raise
                raise error from exc
    finally:
        handle.remove()
