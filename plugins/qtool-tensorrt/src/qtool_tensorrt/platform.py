"""The ``tensorrt`` platform: the float ONNX model with TensorRT INT8 activation ranges beside it."""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from pathlib import Path

import numpy as np
import qtool
from qtool import Capabilities, Diagnostic, ExportOptions, Severity
from qtool.ops import foreign_ops, weight_axis, weight_index

from .cache import CALIBRATORS, DEFAULT_CALIBRATOR, DEFAULT_VERSION, header, write_cache
from .ranges import write_ranges
from .scales import QMAX, is_trt_activation

# ExportOptions.extra keys this platform reads.
VERSION_OPTION = "tensorrt_version"
CALIBRATOR_OPTION = "tensorrt_calibrator"


class TensorRTPlatform(qtool.Platform):
    """TensorRT builds INT8 engines from per-tensor activation ranges and quantizes weights itself.

    Export writes ``<stem>.onnx`` (the float model), ``<stem>.ranges.json``
    (``{"act_quant_info": {tensor: amax}}``) and ``<stem>.calibration.cache``.
    """

    name = "tensorrt"
    description = "TensorRT INT8: float ONNX model plus activation ranges (JSON) and a calibration cache"
    output_format = "onnx+trt-ranges"
    capabilities = Capabilities(bits=(8,), policies=("SYMMETRICAL", "PER_TENSOR", "PER_CHANNEL", "LINEAR"),
                                formats=("int8",))
    export_options = {
        VERSION_OPTION: f"TensorRT version in the calibration cache header: 10.14.1, 8.6.1 or encoded as 101401, "
                        f"8601 (default {DEFAULT_VERSION})",
        CALIBRATOR_OPTION: f"calibrator named in the cache header: {', '.join(CALIBRATORS)} "
                           f"(default {DEFAULT_CALIBRATOR})",
    }

    @classmethod
    def check_export_options(cls, extra) -> None:
        """Unknown keys, and a version or calibrator the cache header cannot carry, fail before any work."""
        super().check_export_options(extra)
        header(extra.get(VERSION_OPTION, DEFAULT_VERSION), extra.get(CALIBRATOR_OPTION, DEFAULT_CALIBRATOR))

    def default_config(self) -> dict:
        return {
            "activation": {"bits": 8, "signed": True, "symmetric": True, "granularity": "per_tensor"},
            "weight": {"bits": 8, "signed": True, "symmetric": True, "granularity": "per_channel"},
            "bias": {"mode": "float"},
        }

    def annotate(self, op, proposal: qtool.Proposal) -> qtool.Proposal:
        """TensorRT quantizes the weights of convolutions and matrix multiplies; a constant another op reads (a
        Mul's factor, a decoder's anchor grid, a bias added after a MatMul) gets no range in the export and stays
        float in the engine: qtool's simulation keeps it float too, instead of an int8 grid TensorRT never uses."""
        configs = proposal.configs
        weight = weight_index(op)
        kept = [None if tqc is not None and tqc.role == "weight" and i != weight else tqc
                for i, tqc in enumerate(configs.inputs)]
        if kept == configs.inputs:
            return proposal
        changed = qtool.OpQuantConfig(kept, configs.outputs, configs.quantized, configs.reason)
        return dataclasses.replace(proposal, configs=changed)

    def validate(self, graph, options: ExportOptions | None = None) -> list[Diagnostic]:
        return _activation_problems(graph) + _range_conflicts(graph) + _ignored_weights(graph) + _foreign_ops(graph)

    def export(self, graph, output: Path, options: ExportOptions) -> list[Path]:
        model, ranges, cache, _ = self.output_files(output, options)
        version = options.extra.get(VERSION_OPTION, DEFAULT_VERSION)
        calibrator = options.extra.get(CALIBRATOR_OPTION, DEFAULT_CALIBRATOR)
        write_cache(graph, cache, version=version, calibrator=calibrator)
        write_ranges(graph, ranges)
        return [*qtool.save_files(graph, model), ranges, cache]

    def output_files(self, output: Path, options: ExportOptions) -> list[Path]:
        """The model (``.onnx`` added where absent), its ranges and calibration cache, its external data."""
        output = Path(output)
        model = output if output.suffix == ".onnx" else output.with_name(output.name + ".onnx")
        stem = model.with_suffix("")
        return [model, stem.with_name(stem.name + ".ranges.json"), stem.with_name(stem.name + ".calibration.cache"),
                qtool.data_path(model)]


def _activation_problems(graph) -> list[Diagnostic]:
    return [
        Diagnostic(Severity.ERROR, "trt.activation-scheme",
                   "TensorRT ranges are 8-bit symmetric per-tensor; this activation has none",
                   op=t.op.name, tensor=t.tensor, scheme=t.scheme.short())
        for t in qtool.quantized_tensors(graph, roles=["activation"], settled=False) if not is_trt_activation(t.scheme)
    ]


def _range_conflicts(graph) -> list[Diagnostic]:
    """A tensor has one dynamic range in TensorRT: readers that disagree with its producer cannot all be honoured."""
    amax_by_tensor: dict[str, list[tuple[str, float]]] = defaultdict(list)
    for t in qtool.quantized_tensors(graph, roles=["activation"]):
        if is_trt_activation(t.scheme):
            amax_by_tensor[t.tensor].append((t.op.name, float(np.float64(t.scale.reshape(-1)[0]) * QMAX)))
    found = []
    for tensor, places in amax_by_tensor.items():
        if len({amax for _, amax in places}) > 1:
            listed = ", ".join(f"{op} {amax:.6g}" for op, amax in places)
            found.append(Diagnostic(Severity.ERROR, "trt.range-conflict",
                                    f"TensorRT keeps one range per tensor, qtool has several: {listed}; "
                                    f"the export writes the first", op=places[1][0], tensor=tensor))
    return found


def _is_default_weight(entry: qtool.QuantizedTensor) -> bool:
    """int8 symmetric per-channel along the op's output channels: what TensorRT does with the weight anyway."""
    scheme, flags = entry.scheme, qtool.QuantizationPolicy
    return (not scheme.is_floating and scheme.num_of_bits == 8 and scheme.is_symmetric
            and bool(scheme.policy & flags.PER_CHANNEL) and not scheme.policy & (flags.POWER_OF_2 | flags.DYNAMIC)
            and scheme.quant_max == QMAX and scheme.channel_axis == weight_axis(entry.op, entry.tensor))


def _foreign_ops(graph) -> list[Diagnostic]:
    """One warning per op type from outside ONNX's own domain (ONNX Runtime's com.microsoft contrib ops of a
    transformer-optimized model): TensorRT's ONNX parser reads ai.onnx ops, others only as plugins of the same name."""
    return [
        Diagnostic(Severity.WARNING, "trt.foreign-op",
                   f"{len(names)} op(s) {domain}::{op_type} are written as they are: TensorRT's ONNX parser reads "
                   "ai.onnx ops, and another only where a TensorRT plugin of that name is loaded; the engine build "
                   "may refuse the model (export it without such ops, e.g. before ONNX Runtime's transformer "
                   "optimizer)", op=names[0])
        for (domain, op_type), names in foreign_ops(graph).items()
    ]


def _float_weights(graph) -> list[tuple[str, str]]:
    """(op, weight) of quantized Conv/Gemm/MatMul whose activations are quantized but weights kept float."""
    found = []
    for op in graph.topological_order():
        index = weight_index(op)
        if index is None or op.quant is None or not op.quant.quantized:
            continue
        configs = op.quant.inputs
        activations = [c for i, c in enumerate(configs) if i != index and c is not None and c.role == "activation"]
        if any(c.is_settled for c in activations) and (configs[index] is None or not configs[index].is_settled):
            found.append((op.name, op.inputs[index].name))
    return found


def _ignored_weights(graph) -> list[Diagnostic]:
    """One warning per configured weight scheme (float included) that differs from what TensorRT does anyway."""
    first: dict[str, tuple[str, str, int]] = {}
    weights = qtool.quantized_tensors(graph, roles=["weight"], settled=False)
    places = [(t.scheme.short(), t.op.name, t.tensor) for t in weights if not _is_default_weight(t)]
    places += [("float", op, tensor) for op, tensor in _float_weights(graph)]
    for short, op, tensor in places:
        op, tensor, count = first.get(short, (op, tensor, 0))
        first[short] = (op, tensor, count + 1)
    return [
        Diagnostic(Severity.WARNING, "trt.weights-not-exported",
                   f"{_written(short, count)}, and TensorRT quantizes them itself (int8 symmetric per output "
                   "channel): the engine's numbers will differ from qtool's simulation", op=op, tensor=tensor,
                   scheme=short)
        for short, (op, tensor, count) in first.items()
    ]


def _written(short: str, count: int) -> str:
    """What the model file holds of ``count`` weight tensors configured ``short``: float values, on that grid (baked)
    unless kept float."""
    if short == "float":
        return f"{count} weight tensor(s) kept float are written as they are"
    return f"{count} weight tensor(s) are written as float values on the configured {short} grid"
