"""OutlierOutputs: keep float the output of a quantized layer whose output has outlier channels, the layer int8.

A transformer's feed-forward down-projection writes a few channels of the residual stream that are a hundred
times the rest (all-MiniLM-L6-v2: one channel near 195 where the median channel peaks near 1). One per-tensor
8-bit range over that output rounds every other channel to a handful of steps. When no quantized op reads the
output (a bias Add, a residual Add and a LayerNorm do not), the layer's integer kernel can write float instead
(ONNX Runtime's MatMulIntegerToFloat): its inputs stay int8, only the rounding of its output goes. Candidates:
quantized layers of ``op_types`` (MatMul: the kernel takes the activation first) whose output's largest channel
(per-channel ``max|y|`` over calibration samples, float graph) is at least ``ratio`` times the median, not
where a runtime could fold MatMul + bias Add into a float Gemm (:func:`qtool.ops.folds_into_gemm`, with shapes
from ONNX shape inference where the graph has none).
"""

from __future__ import annotations

import math

import onnx

from ...ir import Graph, Operation, shape_only_tensor, to_model_proto
from ...ops import folds_into_gemm, output_channel_axis
from ..base import Pass, PassResult
from ..quantize_fusion import read_quantized
from .float_peaks import FloatPeaks
from .op_precision import keep_output_float
from .options import check, number, positive_int
from .outliers import ratio

WHERE = "accuracy.outlier_outputs"


class OutlierOutputs(Pass):
    """Options: ``ratio`` (largest over median output channel that keeps the output float), ``op_types``,
    ``samples``."""

    name = "OutlierOutputs"

    def __init__(self, data, *, ratio: float = 16.0, op_types: list[str] | tuple[str, ...] = ("MatMul",),
                 samples: int = 16, device: str = "cpu", float_peaks: FloatPeaks | None = None) -> None:
        check(data is not None, WHERE, "data", "OutlierOutputs needs calibration data")
        self.ratio = number(WHERE, "ratio", ratio, 1.0, math.inf)
        check(isinstance(op_types, list | tuple) and all(t == "MatMul" for t in op_types), WHERE, "op_types",
              f"must be a list of \"MatMul\" (the layers with an integer kernel that writes float), got {op_types!r}")
        self.op_types = tuple(op_types)
        self.samples = positive_int(WHERE, "samples", samples)
        self.float_peaks = float_peaks or FloatPeaks(data, device)
        self.float_peaks.add_reader(self.samples, self._prospective)

    def call(self, graph: Graph) -> PassResult:
        layers = [op for op in graph.topological_order() if self._candidate(op)]
        axes = {op.outputs[0].name: output_channel_axis(op) for op in layers}
        peaks = self.float_peaks.peaks(graph, self.samples, axes, reader=self._prospective)
        ratios = {}
        for op in layers:
            peak = peaks.get(op.outputs[0].name)
            if peak is not None and peak.size >= 2 and not ratio(peak) < self.ratio:
                ratios[op] = ratio(peak)
        outliers = list(ratios)
        if any(folds_into_gemm(op) for op in outliers):  # shape inference only where an outlier layer may fold
            inferred = _inferred_shapes(graph)
            outliers = [op for op in outliers if not folds_into_gemm(op, inferred)]
        floated = []
        for op in outliers:
            keep_output_float(graph, op, f"float output: channel outlier {ratios[op]:.0f}x median, no quantized op "
                                         f"reads it")
            floated.append({"op": op.name, "outlier_ratio": ratios[op]})
        return PassResult(graph, bool(floated), {"float_outputs": floated})

    def _prospective(self, graph: Graph) -> dict[str, int]:
        """The outputs this pass may ask peaks of, before quantization is decided: every layer of ``op_types``."""
        return {op.outputs[0].name: output_channel_axis(op) for op in graph.operations.values()
                if op.op_type in self.op_types and op.inputs[0] is not None and not op.inputs[0].is_parameter}

    def _candidate(self, op: Operation) -> bool:
        if op.op_type not in self.op_types or op.quant is None or not op.quant.quantized:
            return False
        if op.inputs[0] is None or op.inputs[0].is_parameter or not op.quant.outputs:
            return False
        written = op.quant.outputs[0]
        if written is None or not written.is_settled or written.is_passive:
            return False
        return not read_quantized(op.outputs[0])


def _inferred_shapes(graph: Graph) -> dict[str, list]:
    """Tensor shapes by ONNX shape inference (with data propagation); unknown dimensions as None, {} on failure."""
    try:  # inference needs a weight's shape, not its bytes (only small constants')
        model = onnx.shape_inference.infer_shapes(to_model_proto(graph, tensor=shape_only_tensor), data_prop=True)
    except Exception:  # an unknown op, a graph over 2 GB...: shapes stay unknown (counted foldable)
        return {}
    shapes = {}
    for info in (*model.graph.value_info, *model.graph.output):
        if info.type.tensor_type.HasField("shape"):
            shapes[info.name] = [d.dim_value if d.HasField("dim_value") else (d.dim_param or None)
                                 for d in info.type.tensor_type.shape.dim]
    return shapes
