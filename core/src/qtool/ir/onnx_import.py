"""ONNX ModelProto -> Graph."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnx
from google.protobuf.message import DecodeError
from onnx import helper, numpy_helper
from onnx.inliner import inline_local_functions

from ..files import file_kind
from .external_data import check_external_data, map_external_data
from .graph import Graph, GraphError, ModelInfo


def load(path: str | os.PathLike) -> Graph:
    """Read an ONNX file into a Graph; initializers in external data stay mapped from their file (read-only
    ``numpy.memmap``), read from disk only where used."""
    path = Path(path)
    if not path.is_file():
        kind = file_kind(path)
        raise GraphError(f"{path}: " + (f"is {kind}, not a model file" if kind else "no such model file"))
    try:
        model = onnx.load(str(path), load_external_data=False)
    except (DecodeError, ValueError, OSError) as exc:
        raise GraphError(f"{path}: not a readable ONNX model ({exc})") from exc
    if not model.graph.node and not model.graph.output:
        raise GraphError(f"{path}: not a readable ONNX model (no graph in the file)")
    try:
        check_model_proto(model)
    except GraphError as exc:
        raise GraphError(f"{path}: {exc}") from None
    data_files = check_external_data(model, path)
    try:
        mapped = map_external_data(model, path.parent)
    except (ValueError, OSError) as exc:
        raise GraphError(f"{path}: cannot read its external data ({exc})") from exc
    except GraphError as exc:
        raise GraphError(f"{path}: {exc}") from exc
    try:
        graph = from_model_proto(model, mapped)
    except GraphError as exc:
        raise GraphError(f"{path}: {exc}") from exc
    graph.info.sources = (path.resolve(), *data_files)
    return graph


def check_model_proto(model: onnx.ModelProto) -> None:
    """What makes a model compute nothing, or nothing ONNX defines, as a GraphError: no graph output (calibration ran,
    then ONNX Runtime refused to run it), a node reading a tensor that nothing defines (a TypeError deep in
    calibration), no opset of the default domain where its ops are used, or one onnx does not know (opset 99: found
    only by the export's version converter)."""
    proto = model.graph
    if not proto.output:
        raise GraphError("the model has no graph outputs, so it computes nothing; declare its outputs")
    opsets = {o.domain or "ai.onnx": o.version for o in model.opset_import}
    if any(node.domain in ("", "ai.onnx") for node in proto.node):
        known = onnx.defs.onnx_opset_version()
        if "ai.onnx" not in opsets:
            raise GraphError("the model imports no opset of the default ONNX domain (opset_import), which its ops "
                             "use; set it to the opset it was exported at")
        if not 1 <= opsets["ai.onnx"] <= known:
            raise GraphError(f"the model's opset {opsets['ai.onnx']} (opset_import, default domain) is not one "
                             f"ONNX defines (1 to {known} in onnx {onnx.__version__})")
    defined = {v.name for v in proto.input} | {t.name for t in proto.initializer}
    defined |= {s.values.name for s in proto.sparse_initializer}
    defined |= {name for node in proto.node for name in node.output}
    for node in proto.node:
        for name in (*node.input, *outer_references(node)):
            if name and name not in defined:
                raise GraphError(f"node {node.name or node.op_type!r} ({node.op_type}) reads tensor {name!r}, which "
                                 "is no graph input, initializer nor node output")


def from_model_proto(model: onnx.ModelProto, values: dict[str, np.ndarray] | None = None) -> Graph:
    """Build a Graph from a ModelProto; Constant and constant ConstantOfShape become parameters; the model's local
    functions are inlined (as ONNX Runtime inlines them: the compute ops inside are quantized like the others, not
    left float inside an op qtool cannot see into). ``values``: initializer values by name already at hand (mapped
    external data), used instead of the proto's."""
    if model.functions:
        model = inline_local_functions(model)
    info = ModelInfo(
        ir_version=model.ir_version,
        opset_imports={o.domain: o.version for o in model.opset_import},
        producer_name=model.producer_name,
        producer_version=model.producer_version,
        domain=model.domain,
        model_version=model.model_version,
        doc_string=model.doc_string,
        graph_name=model.graph.name or "graph",
        graph_doc_string=model.graph.doc_string,
        metadata_props={p.key: p.value for p in model.metadata_props},
    )
    graph = Graph(info)
    proto = model.graph
    values = values or {}
    for init in proto.initializer:
        value = values.get(init.name)
        graph.add_variable(init.name, value=_initializer_value(init) if value is None else value)
    for sparse in proto.sparse_initializer:
        raise GraphError(f"sparse initializer {sparse.values.name!r} is not supported")
    for vi in (*proto.input, *proto.value_info, *proto.output):
        graph.value_info[vi.name] = _detached(vi)
    listed = tuple(vi.name for vi in proto.input if vi.name in graph.variables)
    if model.ir_version >= 4:  # IR 3 lists every initializer as an input, as the format requires
        info.constant_inputs = listed
    for vi in proto.input:
        if vi.name not in graph.variables:
            graph.inputs.append(_declare(graph, vi.name))
    for node in proto.node:
        _add_node(graph, node)
    for vi in proto.output:
        if vi.name not in graph.variables:
            raise GraphError(f"graph output {vi.name!r} is produced by no node")
        graph.outputs.append(graph.variables[vi.name])
    for var in graph.variables.values():
        if not var.is_parameter and var.name in graph.value_info:
            var.shape, var.dtype = _shape_and_dtype(graph.value_info[var.name])
    _fold_constants(graph)
    return graph


def _initializer_value(init: onnx.TensorProto) -> np.ndarray:
    try:
        return numpy_helper.to_array(init)
    except (ValueError, TypeError) as exc:
        raise GraphError(f"initializer {init.name!r}: its data does not fit its shape {list(init.dims)} "
                         f"and type {_type_name(init.data_type)} ({exc})") from None


def _type_name(data_type: int) -> str:
    try:
        return onnx.TensorProto.DataType.Name(data_type)
    except ValueError:
        return f"#{data_type}"


def _declare(graph: Graph, name: str):
    return graph.variables.get(name) or graph.add_variable(name)


def _add_node(graph: Graph, node: onnx.NodeProto) -> None:
    name = node.name or graph.unique_name(f"{node.op_type}_{len(graph.operations)}")
    if name in graph.operations:
        name = graph.unique_name(name)
    attributes, types = {}, {}
    for attr in node.attribute:
        if attr.ref_attr_name:
            raise GraphError(f"node {name!r} ({node.op_type}) refers to a function attribute")
        try:
            attributes[attr.name] = _attribute_value(attr)
        except (ValueError, TypeError) as exc:
            raise GraphError(f"node {name!r} ({node.op_type}) attribute {attr.name!r} is unreadable ({exc})") from None
        types[attr.name] = attr.type
    refs = outer_references(node)
    inputs = [_declare(graph, n) if n else None for n in (*node.input, *refs)]
    outputs = []
    for out in node.output:
        var = _declare(graph, out) if out else graph.add_variable(graph.unique_name(f"{name}_unused"))
        if var.producer is not None:
            raise GraphError(f"tensor {out!r} is produced by both {var.producer.name!r} and {name!r}")
        outputs.append(var)
    op = graph.add_operation(node.op_type, inputs, outputs, name=name, attributes=attributes, domain=node.domain)
    op.doc_string, op.attribute_types, op.subgraph_refs = node.doc_string, types, refs


def subgraphs(node: onnx.NodeProto) -> list[onnx.GraphProto]:
    """The GraphProto attributes of ``node`` (If branches, Loop and Scan bodies)."""
    found = []
    for attr in node.attribute:
        if attr.type == onnx.AttributeProto.GRAPH:
            found.append(attr.g)
        elif attr.type == onnx.AttributeProto.GRAPHS:
            found.extend(attr.graphs)
    return found


def outer_references(node: onnx.NodeProto) -> list[str]:
    """Names ``node``'s subgraphs (nested ones included) read from the enclosing graph, in order of use."""
    names: dict[str, None] = {}
    for body in subgraphs(node):
        defined = {v.name for v in body.input} | {t.name for t in body.initializer}
        defined |= {s.values.name for s in body.sparse_initializer}
        for inner in body.node:
            for name in (*inner.input, *outer_references(inner)):
                if name and name not in defined:
                    names.setdefault(name)
            defined.update(inner.output)
        for out in body.output:  # a branch may hand an outer tensor through as is
            if out.name not in defined:
                names.setdefault(out.name)
    return list(names)


def rename_outer_reads(body: onnx.GraphProto, renamed: dict[str, str]) -> None:
    """``body`` (a subgraph, nested ones included) reads the outer tensors ``renamed`` names by their new names;
    names ``body`` defines itself shadow the outer ones and stay."""
    local = {v.name for v in body.input} | {t.name for t in body.initializer}
    local |= {o for n in body.node for o in n.output}
    outer = {old: new for old, new in renamed.items() if old not in local}
    if not outer:
        return
    for node in body.node:
        node.input[:] = [outer.get(name, name) for name in node.input]
        for inner in subgraphs(node):
            rename_outer_reads(inner, outer)
    for out in body.output:  # a branch handing an outer tensor through
        out.name = outer.get(out.name, out.name)


def _attribute_value(attr: onnx.AttributeProto):
    value = helper.get_attribute_value(attr)
    if attr.type == onnx.AttributeProto.STRING:
        return value.decode("utf-8")
    if attr.type == onnx.AttributeProto.STRINGS:
        return [v.decode("utf-8") for v in value]
    if attr.type == onnx.AttributeProto.TENSOR:
        return numpy_helper.to_array(value)
    if attr.type == onnx.AttributeProto.TENSORS:
        return [numpy_helper.to_array(t) for t in value]
    if attr.type == onnx.AttributeProto.GRAPH:
        return _detached(value)
    if attr.type == onnx.AttributeProto.GRAPHS:
        return [_detached(g) for g in value]
    return value


def _detached(message):
    """A copy of a part of the model's proto that holds nothing of it: a part kept as it is keeps the whole parsed
    model alive (its weights too: a ResNet-50's 100 MB twice in memory)."""
    copy = type(message)()
    copy.CopyFrom(message)
    return copy


def _shape_and_dtype(vi: onnx.ValueInfoProto):
    tensor_type = vi.type.tensor_type
    if not vi.type.HasField("tensor_type"):
        return None, None
    dtype = helper.tensor_dtype_to_np_dtype(tensor_type.elem_type) if tensor_type.elem_type else None
    if not tensor_type.HasField("shape"):
        return None, dtype
    dims = [d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in tensor_type.shape.dim]
    return dims, dtype


def constant_node_value(attributes: dict) -> np.ndarray:
    """The tensor a Constant node produces, from whichever attribute carries it."""
    if "value" in attributes:
        return np.asarray(attributes["value"])
    for key, dtype in (("value_float", np.float32), ("value_floats", np.float32),
                       ("value_int", np.int64), ("value_ints", np.int64)):
        if key in attributes:
            return np.asarray(attributes[key], dtype=dtype)
    if "value_string" in attributes or "value_strings" in attributes:
        return np.asarray(attributes.get("value_string", attributes.get("value_strings")), dtype=object)
    raise GraphError("Constant node without a value attribute")


def _fold_constants(graph: Graph) -> None:
    """Turn Constant nodes and ConstantOfShape of a constant shape into parameters."""
    for op in graph.topological_order():
        out = op.outputs[0] if op.outputs else None
        if out is None or out in graph.outputs or op.domain not in ("", "ai.onnx"):
            continue
        if op.op_type == "Constant":
            try:
                value = constant_node_value(op.attributes)
            except GraphError as exc:
                raise GraphError(f"node {op.name!r}: {exc}") from exc
        elif op.op_type == "ConstantOfShape" and op.inputs[0] is not None and op.inputs[0].is_parameter:
            fill = np.asarray(op.attributes.get("value", np.zeros(1, dtype=np.float32))).reshape(-1)
            value = np.full(tuple(int(d) for d in op.inputs[0].value.reshape(-1)), fill[0], dtype=fill.dtype)
        else:
            continue
        graph.remove_operation(op)
        out.value, out.shape, out.dtype = value, list(value.shape), value.dtype
    graph.remove_unused()
