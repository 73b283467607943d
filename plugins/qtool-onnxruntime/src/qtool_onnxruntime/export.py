"""export(): validate, pick the opset, write the QDQ model atomically."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import onnx
from onnx import helper
from qtool import (
    PROTO_LIMIT,
    ExportOptions,
    Severity,
    fill_values,
    save_model_files,
    shape_only_tensor,
    to_model_proto,
)

from .activations import clips_exactly, fused_activations
from .errors import OnnxRuntimeExportError
from .half import half_quantized, lift
from .moved_pairs import pair_after_moves
from .nbits import NBitsRewriter, accuracy_level, nbits_layers, weight_only_format
from .opset import convert, target_opset
from .paths import output_files
from .qdq import QdqWriter
from .rules import validate

_TYPED_FIELDS = ("float_data", "int32_data", "string_data", "int64_data", "double_data", "uint64_data")


def qdq_model(graph, options: ExportOptions) -> onnx.ModelProto:
    """The QDQ ModelProto for a calibrated ``graph``, unchecked: it follows the configs even where ORT fails."""
    model, values = qdq_skeleton(graph, options)
    fill_values(model, values)
    return model


def qdq_skeleton(graph, options: ExportOptions) -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    """:func:`qdq_model` with its large float initializers shape-only, and their arrays by name.

    The float model it starts from holds no large weight's bytes (a quantized weight is written as codes): the
    float initializers the QDQ model still reads are the arrays returned beside it. A float16 or bfloat16 model
    whose tensors qtool quantizes is written in float32 (:mod:`.half`)."""
    layers = nbits_layers(graph, True, weight_only_format(options.extra))
    opset = target_opset(graph, options.opset, frozenset(layer.op.name for layer in layers))
    removed = {}
    if options.remove_activations:
        removed = {a.op.name: a.op.inputs[0].name for a in fused_activations(graph, True) if clips_exactly(a)}
    writer = QdqWriter(graph, convert(to_model_proto(graph, tensor=shape_only_tensor), opset), opset, removed,
                       frozenset((layer.op.name, layer.index) for layer in layers))
    model = writer.write()
    pair_after_moves(model, opset, writer.names)
    NBitsRewriter(model, writer.names, accuracy_level(options.extra)).rewrite(layers)
    values = _left_out_values(graph, model)
    return model, lift(model, values) if half_quantized(graph, settled=True) else values


def _left_out_values(graph, model: onnx.ModelProto) -> dict[str, np.ndarray]:
    """The arrays of ``model``'s initializers written without values, by name (from ``graph``)."""
    return {t.name: np.asarray(graph.variables[t.name].value) for t in model.graph.initializer if _values_left_out(t)}


def _values_left_out(tensor: onnx.TensorProto) -> bool:
    """An initializer with elements but no values: a large weight of the float model (see shape_only_tensor)."""
    if tensor.raw_data or tensor.data_location == onnx.TensorProto.EXTERNAL or math.prod(tensor.dims) == 0:
        return False
    return not any(getattr(tensor, field) for field in _TYPED_FIELDS)


def build_model(graph, options: ExportOptions) -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    """:func:`qdq_skeleton`, checked (:func:`check_loads`): the model and the arrays of its shape-only initializers.

    OnnxRuntimeExportError when ORT cannot run it, unless ``options.allow_unsupported``
    (then whatever ONNX can hold is written). Validation runs here only when the
    caller has not run it (``options.diagnostics``).
    """
    found = validate(graph, options) if options.diagnostics is None else options.diagnostics
    errors = [d for d in found if d.severity is Severity.ERROR]
    if errors and not options.allow_unsupported:
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        raise OnnxRuntimeExportError(f"cannot export for ONNX Runtime: {errors[0]}{more}")
    model, values = qdq_skeleton(graph, options)
    try:
        check_loads(model, values, options.allow_unsupported)
    except OnnxRuntimeExportError as exc:
        if options.allow_unsupported:
            raise
        detail = str(exc).split(": ", 1)[1]
        if _refuses_float(graph):
            raise OnnxRuntimeExportError(f"ONNX Runtime refuses the input model itself, before any quantization "
                                         f"(nothing was written; the float model as read fails to load the same "
                                         f"way): {detail}") from exc
        if options.opset is not None and options.opset != graph.opset:
            raise OnnxRuntimeExportError(f"ONNX Runtime refuses the QDQ model as onnx.version_converter wrote it at "
                                         f"opset {options.opset} (--opset) from the model's {graph.opset} (nothing "
                                         f"was written): {detail}; export at opset {graph.opset}, or convert the "
                                         f"model yourself first") from exc
        raise
    return model, values


def _refuses_float(graph) -> bool:
    """Whether ONNX Runtime refuses the float model as qtool read it (a fault of the input model, such as a graph
    output declared float32 that its node computes in float16), so that the QDQ model's refusal is not blamed on
    the quantization. Checked only after a refusal: a load costs a session."""
    from .session import ORT_ERRORS, cpu_session, load_only_options

    model = to_model_proto(graph, tensor=shape_only_tensor)
    try:
        cpu_session(_checkable(model, _left_out_values(graph, model)).SerializeToString(), load_only_options())
    except ORT_ERRORS:
        return True
    return False


def check_loads(model: onnx.ModelProto, values: dict[str, np.ndarray], allow_unsupported: bool) -> None:
    """Before anything is written, ONNX Runtime loads the model: its graph, the types ONNX's inference gives every
    tensor and a CPU kernel for every node, the large initializers as typed inputs (:func:`_checkable`), without
    graph optimizations. Where errors were allowed (the model may be one ORT refuses), the ONNX checker reads it
    instead. A model beyond one protobuf is checked by neither. The checker's schema registry took 4-7 MB of a
    small model's peak memory, and it passed models ONNX Runtime then refused (float32 scales on float16 values)."""
    checked = _checkable(model, values)
    if checked.ByteSize() >= PROTO_LIMIT:
        return
    if allow_unsupported:
        try:
            onnx.checker.check_model(checked)
        except onnx.checker.ValidationError as exc:
            raise OnnxRuntimeExportError(f"the QDQ model fails the ONNX checker: {exc}") from exc
        return
    from .session import ORT_ERRORS, cpu_session, load_only_options

    try:
        cpu_session(checked.SerializeToString(), load_only_options())
    except ORT_ERRORS as exc:
        message = " ".join(str(exc).split())
        raise OnnxRuntimeExportError(f"ONNX Runtime refuses the QDQ model (nothing was written): {message}") from exc


_CHECKED_BYTES = 1024  # initializers this large reach the load check as typed graph inputs, without their bytes


def _checkable(model: onnx.ModelProto, values: dict[str, np.ndarray]) -> onnx.ModelProto:
    """What the load check reads of ``model``: its shape-only initializers and its large ones (a quantized
    weight's codes) as typed graph inputs, without their bytes (a copy of the model with ResNet-50's weight codes
    took 75 MB more, which the heap then kept)."""
    graph = model.graph
    heavy = {t.name for t in graph.initializer if t.name in values or t.ByteSize() >= _CHECKED_BYTES}
    inputs = {i.name for i in graph.input}
    typed = [helper.make_tensor_value_info(t.name, t.data_type, t.dims) for t in graph.initializer
             if t.name in heavy and t.name not in inputs]
    light = onnx.GraphProto(name=graph.name, node=graph.node, input=[*graph.input, *typed], output=graph.output,
                            value_info=graph.value_info,
                            initializer=[t for t in graph.initializer if t.name not in heavy])
    return onnx.ModelProto(ir_version=model.ir_version, opset_import=model.opset_import, functions=model.functions,
                           graph=light)


def export(graph, output: Path, options: ExportOptions) -> list[Path]:
    """Write the QDQ model (and ``<name>.data`` for large models or ``extra["external_data"]``)."""
    path, _ = output_files(output)
    model, values = build_model(graph, options)
    external = options.extra.get("external_data") or None  # false: decided by size, as when not asked
    return save_model_files(model, path, external_data=external, values=values)
