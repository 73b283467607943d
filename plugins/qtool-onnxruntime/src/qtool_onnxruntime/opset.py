"""Which opset the QDQ model is written at, and converting the float model to it."""

from __future__ import annotations

import re

import onnx
from onnx import helper, version_converter
from qtool.quant import quantized_tensors

from .errors import OnnxRuntimeExportError
from .storage import DEFAULT_LOWEST_OPSET, HIGHEST_OPSET, lowest_opset, storage_type


def target_opset(graph, requested: int | None, skip: frozenset[str] = frozenset()) -> int:
    """``requested`` when given; else the model's opset raised to what its configs need, at least 11 and at most 27
    (as it is where nothing is quantized).

    4-bit and 16-bit types go through com.microsoft Q/DQ below opset 21, so only
    per-axis (13), float8 (19), per-block (21) and 2-bit (25) raise the opset. Ops in
    ``skip`` (written as contrib ops, see .nbits) do not count.
    """
    if requested is not None:
        return requested
    needed = []
    for q in quantized_tensors(graph, settled=False):
        stype = storage_type(q.scheme, stored=graph.variables[q.tensor].is_parameter)
        if q.op.name not in skip and stype is not None:
            needed.append(lowest_opset(stype, q.scheme))
    if not needed:  # no Q/DQ to write: the model's own opset (converting an opset-28 model down to 27 failed)
        return graph.opset
    return min(max(graph.opset, DEFAULT_LOWEST_OPSET, *needed), HIGHEST_OPSET)


def convert(model: onnx.ModelProto, opset: int) -> onnx.ModelProto:
    """``model`` at ai.onnx ``opset`` through onnx.version_converter, with an IR version that allows it."""
    current = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
    if current is not None and current != opset:  # None: no op of ONNX's own domain (an ai.onnx.ml model)
        if current < 13 <= opset:
            _flatten_hardmax(model.graph)
        try:
            converted = version_converter.convert_version(model, opset)
        except (RuntimeError, ValueError) as exc:
            raise OnnxRuntimeExportError(
                f"cannot convert the model from opset {current} to opset {opset} with onnx.version_converter: "
                f"{_converter_reason(exc, opset)}; set the export opset to {current} or convert the model first"
            ) from exc
        model = _restore_names(model, converted)
        _constants_as_initializers(model.graph)
        if current < 11 <= opset:
            _keep_resize_coordinates(model)
    model.ir_version = max(model.ir_version, helper.find_min_ir_version_for(list(model.opset_import), True))
    return model


def _converter_reason(exc: Exception, opset: int) -> str:
    """onnx.version_converter's refusal in a user's words: its C++ assertion text names the op and its version."""
    text = " ".join(str(exc).split())
    missing = re.search(r"No Adapter (?:From|To) Version \$?(\d+) for (\w+)", text)
    if missing:
        return f"it has no way to write {missing.group(2)}-{missing.group(1)} at opset {opset}"
    newer = re.search(r"No Previous Version of (\w+) exists", text)
    if newer:
        first = min(s.since_version for s in onnx.defs.get_all_schemas_with_history()
                    if s.name == newer.group(1) and s.domain == "")
        return f"{newer.group(1)} exists from opset {first} on, not at opset {opset}"
    return text.rsplit(": ", 1)[-1] if text else type(exc).__name__


def _keep_resize_coordinates(model: onnx.ModelProto) -> None:
    """An Upsample or Resize of opset 10 and below maps output pixel x to input x / scale and takes the nearest by
    floor; the Resize onnx.version_converter writes for opset 11 and above says nothing, so it gets that opset's
    defaults (half_pixel, round_prefer_floor): another function (a linear x2 upsampling read 6.6 dB against the
    original, found by a user-style probe). Such a Resize says what it computed."""
    for node in model.graph.node:
        if node.op_type != "Resize" or node.domain not in ("", "ai.onnx"):
            continue
        given = {a.name: a for a in node.attribute}
        if "coordinate_transformation_mode" not in given:
            node.attribute.append(helper.make_attribute("coordinate_transformation_mode", "asymmetric"))
        mode = helper.get_attribute_value(given["mode"]).decode() if "mode" in given else "nearest"
        if mode == "nearest" and "nearest_mode" not in given:
            node.attribute.append(helper.make_attribute("nearest_mode", "floor"))


def _constants_as_initializers(graph: onnx.GraphProto) -> None:
    """The Constant nodes onnx.version_converter writes (an opset-9 Clip's min and max become inputs at 11) as
    initializers, as qtool writes every constant: the export finds constants among the initializers (a float8 Clip
    whose bounds were Constant nodes stayed before its pair, and ONNX Runtime, folding them, refused the model:
    'Unexpected data type for QuantizeLinear input y_zero_point'). A Constant that is a graph output stays, as qtool
    keeps it."""
    nodes, outputs = [], {o.name for o in graph.output}
    for node in graph.node:
        value = _tensor_constant(node)
        if value is None or node.output[0] in outputs:
            nodes.append(node)
            continue
        initializer = graph.initializer.add()
        initializer.CopyFrom(value)
        initializer.name = node.output[0]
    graph.ClearField("node")
    graph.node.extend(nodes)


def _tensor_constant(node: onnx.NodeProto) -> onnx.TensorProto | None:
    """The tensor of an ONNX Constant node given by its ``value`` attribute, else None."""
    if node.op_type != "Constant" or node.domain not in ("", "ai.onnx") or len(node.attribute) != 1:
        return None
    return node.attribute[0].t if node.attribute[0].name == "value" else None


def _flatten_hardmax(graph: onnx.GraphProto) -> None:
    """Before opset 13 a Hardmax takes one maximum over its input flattened to 2-D at ``axis``, from 13 one along
    ``axis`` alone, and onnx.version_converter keeps the node as it is (a Hardmax(axis=1) of a [2, 5, 6] tensor put
    a 1 in each row of 5, not one in 30: another function; Softmax and LogSoftmax it rewrites). Such a Hardmax
    becomes Reshape(Hardmax(Flatten(x, axis), axis=1), Shape(x)), as the converter writes a Softmax; one along the
    last axis of an input of known rank stays."""
    ranks = {v.name: len(v.type.tensor_type.shape.dim) for v in (*graph.input, *graph.value_info, *graph.output)
             if v.type.tensor_type.HasField("shape")}
    nodes = []
    for node in graph.node:
        for attribute in node.attribute:
            for body in ([attribute.g] if attribute.HasField("g") else []) + list(attribute.graphs):
                _flatten_hardmax(body)
        axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
        rank = ranks.get(node.input[0]) if node.input else None
        if node.op_type != "Hardmax" or node.domain not in ("", "ai.onnx") or (rank and axis in (-1, rank - 1)):
            nodes.append(node)
            continue
        source, result = node.input[0], node.output[0]
        shape, flat, flat_max = f"{result}_hardmax_shape", f"{result}_hardmax_flat", f"{result}_intermediate"
        nodes += [helper.make_node("Shape", [source], [shape]),
                  helper.make_node("Flatten", [source], [flat], axis=axis),
                  helper.make_node("Hardmax", [flat], [flat_max], name=node.name, axis=1),
                  helper.make_node("Reshape", [flat_max, shape], [result])]
    graph.ClearField("node")
    graph.node.extend(nodes)


def _restore_names(before: onnx.ModelProto, after: onnx.ModelProto) -> onnx.ModelProto:
    """``after`` (``before`` converted) with the names ``before`` gave its tensors and nodes. The converter writes
    a node it replaces (an opset-9 Upsample becomes a Resize) unnamed, with outputs of new names; the QDQ writer
    finds tensors and nodes by the float graph's names (the Q/DQ pair of the Upsample's output read a tensor no
    node wrote, and ONNX Runtime refused the model). A new name is found where a node that kept its name reads it
    in place of an old one that no longer exists (an opset-10 Resize that gains its roi input keeps its scales). A
    node takes no name another node kept: the Reshape the converter writes after an opset-11 Softmax writes the
    Softmax's output, and taking its name made two nodes '/Softmax' (ORT refused torch's opset-9 export)."""
    old_nodes = {node.name: node for node in before.graph.node if node.name}
    graph = after.graph
    present = {name for node in graph.node for name in node.output} | {t.name for t in graph.initializer} | \
        {v.name for v in graph.input}
    renamed: dict[str, str] = {}
    for node in graph.node:
        old = old_nodes.get(node.name)
        if old is not None and old.op_type == node.op_type:
            renamed.update({new: name for name, new in zip(old.input, node.input, strict=False)
                            if new != name and name not in present and new})
    if not renamed:
        return after
    producers = {name: node.name for node in before.graph.node for name in node.output}
    taken = {node.name for node in graph.node if node.name}
    for node in graph.node:
        node.input[:] = [renamed.get(name, name) for name in node.input]
        node.output[:] = [renamed.get(name, name) for name in node.output]
        restored = [producers[name] for name in node.output if name in producers and producers[name] not in taken]
        if not node.name and restored:
            node.name = restored[0]
            taken.add(node.name)
    for value in graph.output:
        value.name = renamed.get(value.name, value.name)
    return after
