"""ChannelSplit: split a layer's outlier input channels into several smaller copies, all still int8.

For a MatMul or Gemm (without transA) with a constant 2-D weight whose input has a channel at least
``min_ratio`` times the median channel (per-channel ``max|x|`` over calibration samples, float graph), every
channel ``j`` above ``ratio`` times the median is split into ``k_j = ceil(max|x_j| / (ratio * median))``
channels of ``x_j / k_j`` each, and the weight's input row ``j`` is repeated for every copy:
``sum_k (x_j / k_j) w_j = x_j w_j``, so the float function is unchanged while the input's per-tensor range
shrinks to about ``ratio`` times the median channel (outlier channel splitting, Zhao et al. 2019, on activations).
A ``Gather`` of the split channels, concatenated after the input along the channel axis, makes the copies (a
Gather of every channel ran 0.4 ms a layer in ONNX Runtime on all-MiniLM-L6-v2, most of its quantized model's
latency gap to ORT's own); the division is folded into the constant of a ``Mul`` that produces the input for this
layer alone (a GELU's last ``* 0.5``), otherwise a ``Mul`` after the Concat does it. Both stay float where a
platform quantizes only compute ops (onnxruntime); the layer keeps an integer kernel and reads ``sum(k_j - 1)``
more input channels. ``max_growth`` caps those extra channels at a share of the layer's input channels: the limit
then rises above ``ratio`` times the median until the copies fit, so that no channel is left above it (the copies
of a channel round alike: ``k`` of them gain only where the range shrinks about ``k``-fold).

The peaks come from a float run over the first ``samples`` samples. Where calibration's own float run follows
(the default passes) and covers those samples in whole batches, the pass decides from that run instead
(``share_run``): nothing changes before calibration, and where a layer then splits, the passes start over
(:class:`~qtool.passes.base.StartOver`) with the peaks it measured, so the result is the same as with a run of its
own. A model where nothing splits is run in float once instead of twice.
"""

from __future__ import annotations

import math

import numpy as np

from ...ir import Graph, Operation, Variable
from ..base import Pass, PassResult, StartOver
from .channels import grouped
from .float_peaks import FloatPeaks
from .layers import weight_input
from .options import check, number, positive_int
from .outliers import ratio

WHERE = "accuracy.channel_split"


class ChannelSplit(Pass):
    """Options: ``min_ratio`` (layers whose input's largest channel is at least this many times the median),
    ``ratio`` (split channels above this many times the median), ``max_growth`` (extra input channels per layer,
    as a share of its input channels), ``max_error_ratio`` (split only where the estimated input rounding error
    falls at least to this share), ``op_types``, ``samples``, ``share_run`` (decide from calibration's float run
    where it can, see the module)."""

    name = "ChannelSplit"

    def __init__(self, data, *, min_ratio: float = 8.0, ratio: float = 4.0, max_growth: float = 0.05,
                 max_error_ratio: float = 0.5, op_types: list[str] | tuple[str, ...] = ("MatMul", "Gemm"),
                 samples: int = 16, share_run: bool = True, device: str = "cpu",
                 float_peaks: FloatPeaks | None = None) -> None:
        check(data is not None, WHERE, "data", "ChannelSplit needs calibration data")
        self.min_ratio = number(WHERE, "min_ratio", min_ratio, 1.0, math.inf)
        self.ratio = number(WHERE, "ratio", ratio, 1.0, math.inf)
        self.max_growth = number(WHERE, "max_growth", max_growth, 0.0, 1.0)
        self.max_error_ratio = number(WHERE, "max_error_ratio", max_error_ratio, 0.0, 1.0)
        check(isinstance(op_types, list | tuple) and all(t in ("MatMul", "Gemm") for t in op_types), WHERE,
              "op_types", f"must be a list of \"MatMul\" and \"Gemm\", got {op_types!r}")
        self.op_types = tuple(op_types)
        self.samples = positive_int(WHERE, "samples", samples)
        check(isinstance(share_run, bool), WHERE, "share_run", f"must be true or false, got {share_run!r}")
        self.data, self.device, self.share_run = data, device, share_run
        self.calibration_follows = False  # set where calibration takes this pass as a reader (the default passes)
        self.known: dict[str, np.ndarray] | None = None  # the peaks measured by the run before a start over
        self._deferred: dict | None = None  # the details of a call that left the decision to calibration's run
        self.float_peaks = float_peaks or FloatPeaks(data, device)
        self.float_peaks.add_reader(self.samples, self._axes)

    @property
    def may_start_over(self) -> bool:
        return self.share_run and self.calibration_follows and self.known is None

    def start_over_with(self, peaks: dict[str, np.ndarray] | None) -> None:
        """Decide from ``peaks`` (measured by calibration's run before the passes started over), or from a run of
        its own where None (that run could not measure them)."""
        self.known, self.share_run = peaks, False

    def call(self, graph: Graph) -> PassResult:
        if self.may_start_over and _shares_first_samples(graph, self.data, self.samples, self.device):
            self.float_peaks.drop_reader(self._axes)
            self._deferred = {"split": [], "not_split": [], "decided_on": "calibration's float run"}
            return PassResult(graph, False, self._deferred)
        peaks = self.known if self.known is not None else \
            self.float_peaks.peaks(graph, self.samples, self._axes(graph), reader=self._axes)
        plan, kept = self._plan(graph, peaks)
        split = [{**entry, "by": _split(graph, op, copies)} for op, copies, entry in plan]
        return PassResult(graph, bool(split), {"split": split, "not_split": kept})

    def calibration_tap(self, graph: Graph) -> _SplitTap | None:
        """The decision left to calibration's float run of ``graph`` (None where this pass decided itself)."""
        if self._deferred is None:
            return None
        return _SplitTap(self, graph, self._axes(graph))

    def decide(self, graph: Graph, peaks: dict[str, np.ndarray] | None) -> None:
        """The deferred decision on ``peaks`` of the first samples (None: the run did not measure them whole): the
        passes start over where a layer splits or the peaks are missing; else the details say what was kept."""
        if peaks is None:
            raise StartOver({self.name: None})
        plan, kept = self._plan(graph, peaks)
        if plan:
            raise StartOver({self.name: peaks})
        self._deferred["not_split"] = kept

    def _plan(self, graph: Graph, peaks: dict[str, np.ndarray]) -> tuple[list[tuple[Operation, np.ndarray, dict]],
                                                                          list[dict]]:
        """The layers to split (each with its copies and its details), and those an outlier left unsplit (why)."""
        plan, kept = [], []
        for op in (op for op in graph.topological_order() if self._splittable(op)):
            peak = peaks.get(op.inputs[0].name)
            if peak is None or peak.size < 2 or not np.isfinite(peak).all() or ratio(peak) < self.min_ratio:
                continue  # an infinite peak is a mask, which calibration keeps float: no split shrinks it
            copies = self._copies(peak)
            if copies.max() == 1:
                continue
            entry = {"op": op.name, "outlier_ratio": ratio(peak), "channels": len(peak),
                     "extra_channels": int((copies - 1).sum()),
                     "error_ratio": _error(op, peak, copies) / _error(op, peak, np.ones_like(copies))}
            if entry["error_ratio"] > self.max_error_ratio:
                kept.append({**entry, "reason": f"estimated input error x{entry['error_ratio']:.2f}, "
                                                f"above max_error_ratio {self.max_error_ratio:g}"})
                continue
            plan.append((op, copies, entry))
        return plan, kept

    def _axes(self, graph: Graph) -> dict[str, int]:
        """The input channel axis of every layer this pass may split, by input name."""
        return {op.inputs[0].name: (-1 if op.op_type == "MatMul" else 1)
                for op in graph.operations.values() if self._splittable(op)}

    def _splittable(self, op: Operation) -> bool:
        if op.op_type not in self.op_types or weight_input(op) is None or op.inputs[1].value.ndim != 2:
            return False
        return op.op_type == "MatMul" or not op.attributes.get("transA", 0)

    def _copies(self, peak: np.ndarray) -> np.ndarray:
        """How many channels each input channel becomes: every channel within one limit, the smallest limit of at
        least ``ratio`` times the median that ``max_growth`` affords (copies of one channel round alike, so a
        channel split ``k`` ways gains only where the range shrinks about ``k``-fold: no channel is left above)."""
        budget = int(self.max_growth * len(peak))

        def copies(limit: float) -> np.ndarray:
            return np.maximum(np.ceil(peak / limit), 1).astype(np.int64)

        low, high = self.ratio * float(np.median(peak)), float(peak.max())
        if low <= 0.0 or low >= high:
            return np.ones(len(peak), np.int64)
        if (copies(low) - 1).sum() <= budget:
            return copies(low)
        for _ in range(50):  # bisection on the limit: the extra channels only fall as it rises
            middle = (low + high) / 2
            low, high = (low, middle) if (copies(middle) - 1).sum() <= budget else (middle, high)
        return copies(high)


class _SplitTap:
    """ChannelSplit's peaks taken from calibration's float run (a :class:`qtool.calibration.driver.FloatTap`):
    the batches that lie wholly within the first samples; the pass decides once it has them all, when the batch
    after them starts (the run's thread asks what it wants ahead: the decision waits for this thread)."""

    def __init__(self, owner: ChannelSplit, graph: Graph, axes: dict[str, int]) -> None:
        from .outliers import PeakTable

        self._owner, self._graph, self._table = owner, graph, PeakTable(axes)
        self.tensors, self.cuts = list(axes), [owner.samples]
        self._decided = False

    def wants(self, first: int, count: int) -> bool:
        return not self._decided

    def batch(self, first: int, count: int, feeds, run_samples: int) -> None:
        if not self._decided and first + count > self._owner.samples:  # past the first samples, or they end here
            self._decide(whole=first == self._owner.samples)

    def take(self, name: str, array: np.ndarray) -> None:
        if not self._decided:
            self._table.add_array(name, array)

    def finish(self, complete: bool) -> None:
        if not self._decided:  # the data held no more than the first samples
            self._decide(whole=complete)

    def _decide(self, *, whole: bool) -> None:
        self._decided = True
        self._owner.decide(self._graph, self._table.peaks() if whole else None)


def _shares_first_samples(graph: Graph, data, samples: int, device: str) -> bool:
    """Whether calibration's float run can measure the first ``samples`` samples of ``data`` for the pass: it runs
    in onnxruntime, and they make whole batches (feeds; samples, whose batches calibration cuts where the first
    samples end, unless the model fixes its batch: then batches that divide them, or all the data)."""
    from ...calibration import load_calibration_data, ort_engine

    if ort_engine.refusal(graph, device) is not None:
        return False
    data = load_calibration_data(data, graph)
    whole = data.layout == "feeds" or not data.fixed_batch or samples % data.fixed_batch == 0
    return whole or (data.count is not None and data.count <= samples)


def _error(op: Operation, peak: np.ndarray, copies: np.ndarray) -> float:
    """The layer's output error from rounding its input to 8 bits over one per-tensor range, estimated from the
    channel peaks: each channel's rounding error (at most its own peak), times its ``k`` copies (they round
    alike), weighted by the squared norm of the weight row that reads it."""
    rows = np.square(grouped(op, op.inputs[1].value).astype(np.float64)).sum(axis=(1, 3)).reshape(-1)
    step = float((peak / copies).max()) / 255.0
    return float(np.sum(rows * np.square(copies * np.minimum(step, peak / copies))))


def _split(graph: Graph, op: Operation, copies: np.ndarray) -> str:
    """Append the copies of ``op``'s input channels, divide them, repeat the weight's rows; how the division was
    done."""
    x = op.inputs[0]
    extra = np.repeat(np.arange(len(copies)), copies - 1)
    index = np.concatenate([np.arange(len(copies)), extra])
    divisor = copies.astype(np.float64)
    weight = op.inputs[1].value
    rows = weight[:, index] if op.op_type == "Gemm" and op.attributes.get("transB", 0) else weight[index]
    new_weight = graph.set_parameter_value(op, 1, rows)
    new_weight.shape = list(rows.shape)
    axis = -1 if op.op_type == "MatMul" else 1
    dtype = x.dtype if x.dtype is not None else np.dtype(np.float32)
    folded = _fold_into_mul(graph, x, op, divisor)
    indices = graph.add_variable(graph.unique_name(f"{op.name}_split_channels"), extra.astype(np.int64))
    copied = graph.add_variable(graph.unique_name(f"{x.name}_copies"), dtype=dtype)
    graph.add_operation("Gather", [x, indices], [copied], name=f"{op.name}_split_copies", attributes={"axis": axis})
    gathered = graph.add_variable(graph.unique_name(f"{x.name}_split"), dtype=dtype)
    graph.add_operation("Concat", [x, copied], [gathered], name=f"{op.name}_split", attributes={"axis": axis})
    source = gathered
    if folded is None:
        factor = graph.add_variable(graph.unique_name(f"{op.name}_split_factor"),
                                    (1.0 / divisor[index]).astype(dtype))
        source = graph.add_variable(graph.unique_name(f"{x.name}_split_scaled"), dtype=dtype)
        graph.add_operation("Mul", [gathered, factor], [source], name=f"{op.name}_split_scale")
        folded = "Mul after the Concat"
    graph.set_input(op, 0, source)
    return folded


def _fold_into_mul(graph: Graph, x: Variable, op: Operation, divisor: np.ndarray) -> str | None:
    """Divide channel ``j`` of ``x`` by ``divisor[j]`` in the constant of the Mul producing it, when ``op`` alone
    reads ``x`` and the constant is a scalar or one value per last-axis channel; where, or None."""
    mul = x.producer
    if mul is None or mul.op_type != "Mul" or set(x.consumers) != {op} or x in graph.outputs:
        return None
    constant = [i for i, v in enumerate(mul.inputs) if v is not None and v.is_parameter]
    if len(constant) != 1:
        return None
    value = mul.inputs[constant[0]].value
    if not (value.size == 1 or value.shape[-1:] == divisor.shape and value.size == divisor.size):
        return None
    scaled = (value.reshape(-1) / divisor).astype(value.dtype)
    new = graph.set_parameter_value(mul, constant[0], scaled)
    new.shape = list(scaled.shape)
    return f"Mul {mul.name}"
