"""Which opset the QDQ model is written at, and converting the float model to it."""

from __future__ import annotations

import onnx
from onnx import helper, version_converter
from qtool.quant import quantized_tensors

from .errors import OnnxRuntimeExportError
from .storage import HIGHEST_OPSET, LOWEST_OPSET, lowest_opset, storage_type, value_type


def target_opset(graph, requested: int | None, skip: frozenset[str] = frozenset()) -> int:
    """``requested`` when given; else the model's opset raised to what its configs need, at most 27.

    4-bit and 16-bit types go through com.microsoft Q/DQ below opset 21, so only
    per-axis (13), float8 and float16/bfloat16 tensors (19), per-block (21) and 2-bit (25) raise the opset. Ops in
    ``skip`` (written as contrib ops, see .nbits) do not count.
    """
    if requested is not None:
        return requested
    needed = []
    for q in quantized_tensors(graph, settled=False):
        var = graph.variables[q.tensor]
        stype = storage_type(q.scheme, stored=var.is_parameter)
        if q.op.name not in skip and stype is not None:
            needed.append(lowest_opset(stype, q.scheme, value_type(var)))
    if not needed:
        return min(graph.opset, HIGHEST_OPSET)
    return min(max(graph.opset, LOWEST_OPSET, *needed), HIGHEST_OPSET)


def convert(model: onnx.ModelProto, opset: int) -> onnx.ModelProto:
    """``model`` at ai.onnx ``opset`` through onnx.version_converter, with an IR version that allows it."""
    current = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
    if current != opset:
        try:
            model = version_converter.convert_version(model, opset)
        except (RuntimeError, ValueError) as exc:
            first = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
            raise OnnxRuntimeExportError(
                f"cannot convert the model from opset {current} to opset {opset} with onnx.version_converter: "
                f"{first}; set the export opset to {current} or convert the model first") from exc
    model.ir_version = max(model.ir_version, helper.find_min_ir_version_for(list(model.opset_import), True))
    return model
