"""Graph -> ONNX ModelProto, and an atomic save."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper

from ..files import folder_lock, make_readable, temporary_beside
from .data_file import raw_bytes, store
from .graph import Graph, Variable
from .onnx_import import rename_outer_reads
from .streamed_model import write_streamed

_SUBGRAPH_TYPES = (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS)
PROTO_LIMIT = 2**31 - 2**24  # bytes of initializers in one ModelProto: headroom below protobuf's 2 GiB
SMALL_TENSOR = 4096  # bytes: initializers up to this size keep their values in shape_only_tensor's models


def to_model_proto(graph: Graph, *, tensor: Callable[[Variable], onnx.TensorProto] | None = None) -> onnx.ModelProto:
    """Build a ModelProto; parameters become initializers, names are kept. ``tensor`` builds each initializer
    from its variable (default: its value, bytes included)."""
    nodes = [node_proto(op) for op in graph.topological_order()]
    used = {v.name for op in graph.operations.values() for v in op.inputs if v is not None}
    used |= {v.name for v in graph.outputs}
    tensor = tensor or _tensor
    initializers = [tensor(v) for v in graph.variables.values() if v.is_parameter and v.name in used]
    produced = {v.name for op in graph.operations.values() for v in op.outputs} | {v.name for v in graph.inputs}
    intermediates = [
        vi for name, vi in graph.value_info.items()
        if name in produced and name not in {v.name for v in (*graph.inputs, *graph.outputs)}
    ]
    inputs = [value_info(graph, v) for v in graph.inputs]
    if graph.info.ir_version < 4:  # IR-3 requires every initializer to be a graph input too
        inputs += [helper.make_tensor_value_info(t.name, t.data_type, t.dims) for t in initializers]
    proto = helper.make_graph(
        nodes,
        graph.info.graph_name,
        inputs,
        [value_info(graph, v) for v in graph.outputs],
        initializer=initializers,
        doc_string=graph.info.graph_doc_string or None,
        value_info=intermediates,
    )
    info = graph.info
    model = helper.make_model(
        proto,
        opset_imports=[helper.make_opsetid(d, v) for d, v in info.opset_imports.items()],
        ir_version=info.ir_version,
        producer_name=info.producer_name,
        producer_version=info.producer_version,
        domain=info.domain,
        model_version=info.model_version,
        doc_string=info.doc_string,
    )
    helper.set_model_props(model, info.metadata_props)
    return model


def data_path(path: str | os.PathLike) -> Path:
    """The external data file :func:`save` writes beside the model ``path`` (``<name>.data``)."""
    path = Path(path)
    return path.with_name(f"{path.name}.data")


def save(graph: Graph, path: str | os.PathLike, *, external_data: bool | None = None) -> Path:
    """Write ``graph`` to ``path`` atomically (temporary file, then rename).

    Models whose tensors exceed the protobuf limit are saved with external data
    in ``<name>.data`` beside the model (also when ``external_data`` is True):
    :func:`save_files` says which files were written.
    """
    return save_files(graph, path, external_data=external_data)[0]


def save_files(graph: Graph, path: str | os.PathLike, *, external_data: bool | None = None) -> list[Path]:
    """Write ``graph`` as :func:`save` does, its large weights from their arrays (no copy of them in a proto);
    :func:`save_model_files` says what it returns and removes."""
    model = to_model_proto(graph, tensor=shape_only_tensor)
    large = {t.name for t in model.graph.initializer if np.asarray(graph.variables[t.name].value).nbytes > SMALL_TENSOR}
    values = {name: graph.variables[name].value for name in large}
    return save_model_files(model, path, external_data=external_data, values=values)


def save_model_files(model: onnx.ModelProto, path: str | os.PathLike, *, external_data: bool | None = None,
                     values: Mapping[str, np.ndarray] | None = None) -> list[Path]:
    """:func:`save_model_proto`, then the files written: the model, and ``<name>.data`` where the model keeps
    tensors in it; an earlier data file of that name, which the model written now does not read, is removed."""
    path, data = Path(path), data_path(path)
    if external_data is None:
        external_data = _beyond_one_protobuf(model, values)  # asked before the save, which moves the bytes out
    save_model_proto(model, path, external_data=external_data, values=values)
    if external_data and _reads_data_file(path):
        return [path, data]
    data.unlink(missing_ok=True)
    return [path]


def save_model_proto(model: onnx.ModelProto, path: str | os.PathLike, *, external_data: bool | None = None,
                     values: Mapping[str, np.ndarray] | None = None) -> Path:
    """Write ``model`` to ``path`` atomically, with external data in ``<name>.data`` when its tensors exceed the
    protobuf limit (or ``external_data`` is True). ``values``: arrays of initializers ``model`` holds shape-only
    (:func:`shape_only_tensor`), written from the arrays (:mod:`.streamed_model`: no serialized copy of the model
    in memory); with external data each tensor's bytes go to the data file from its array or its proto, one at a
    time (:mod:`.data_file`), and ``model``'s initializers become references to them."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    values = values or {}
    if external_data is None:
        external_data = _beyond_one_protobuf(model, values)
    tmp = temporary_beside(path)
    data_name = data_path(path).name
    # a name of its own: two runs may share the output
    tmp_data = temporary_beside(data_path(path)) if external_data else None
    try:
        if external_data:
            if not _write_external(model, values, tmp_data, data_name):  # every tensor under 1 KiB stays inline
                tmp_data.unlink()
                tmp_data = None
            onnx.save_model(model, tmp)
        elif values:
            with open(tmp, "wb") as file:
                write_streamed(model, values, file)
        else:
            onnx.save_model(model, tmp)
        with folder_lock(path.parent):
            if tmp_data is not None:
                os.replace(make_readable(tmp_data), path.parent / data_name)
            os.replace(make_readable(tmp), path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        if tmp_data is not None:
            tmp_data.unlink(missing_ok=True)
        raise
    return path


def _beyond_one_protobuf(model: onnx.ModelProto, values: Mapping[str, np.ndarray] | None) -> bool:
    """Whether ``model``'s initializers (``values``: the arrays of those it holds shape-only) exceed
    ``PROTO_LIMIT``."""
    return sum(t.ByteSize() for t in model.graph.initializer) + sum(np.asarray(v).nbytes
                                                                    for v in (values or {}).values()) > PROTO_LIMIT


def _reads_data_file(path: Path) -> bool:
    """Whether the model written at ``path`` keeps tensors in external data (none where every one is under
    1 KiB); read without its tensors' bytes."""
    model = onnx.load(path, load_external_data=False)
    return any(t.data_location == onnx.TensorProto.EXTERNAL for t in model.graph.initializer)


def _write_external(model: onnx.ModelProto, values: Mapping[str, np.ndarray], file: Path, location: str) -> bool:
    """Write the bytes of ``model``'s initializers of ``INLINE_BYTES`` or more to ``file`` (named ``location``
    beside the model) and make those initializers references to them; whether any was written."""
    with open(file, "wb") as data:
        for tensor in model.graph.initializer:
            stored = store(tensor, raw_bytes(tensor, values.get(tensor.name)), data, location)
            if stored is not None:
                tensor.CopyFrom(stored)
            elif tensor.name in values:  # held shape-only: its bytes go into the model
                tensor.CopyFrom(numpy_helper.from_array(np.asarray(values[tensor.name]), tensor.name))
        return data.tell() > 0


def node_proto(op) -> onnx.NodeProto:
    """The NodeProto of ``op``, attributes in ONNX form; subgraphs read the current names of outer tensors."""
    node = helper.make_node(
        op.op_type,
        [v.name if v is not None else "" for v in op.explicit_inputs],
        [v.name for v in op.outputs],
        name=op.name,
        domain=op.domain or None,
        doc_string=op.doc_string or None,
    )
    renamed = {old: var.name for old, var in op.outer_inputs.items() if var is not None and var.name != old}
    for key, value in op.attributes.items():
        if renamed and op.attribute_types.get(key) in _SUBGRAPH_TYPES:
            value = _renamed(value, renamed)
        node.attribute.append(_attribute(key, value, op.attribute_types.get(key)))
    return node


def _renamed(value, renamed: dict[str, str]):
    """Copies of the subgraph(s) ``value`` reading outer tensors by their new names."""
    if isinstance(value, list):
        return [_renamed(g, renamed) for g in value]
    graph = onnx.GraphProto()
    graph.CopyFrom(value)
    rename_outer_reads(graph, renamed)
    return graph


def _attribute(key: str, value, attr_type: int | None) -> onnx.AttributeProto:
    if isinstance(value, np.ndarray):
        value = numpy_helper.from_array(value)
    elif isinstance(value, list) and value and isinstance(value[0], np.ndarray):
        value = [numpy_helper.from_array(v) for v in value]
    return helper.make_attribute(key, value, attr_type=attr_type)


def _tensor(var: Variable) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(var.value), var.name)


def shape_only_tensor(var: Variable) -> onnx.TensorProto:
    """A ``tensor`` for :func:`to_model_proto` whose initializers keep their bytes only when small (up to
    ``SMALL_TENSOR``): large ones carry name, type and shape, for tools that read a model's structure and
    constants but not its weights (shape inference, opset conversion)."""
    value = np.asarray(var.value)
    if value.nbytes <= SMALL_TENSOR:
        return _tensor(var)
    return onnx.TensorProto(name=var.name, data_type=helper.np_dtype_to_tensor_dtype(value.dtype), dims=value.shape)


def value_info(graph: Graph, var: Variable) -> onnx.ValueInfoProto:
    known = graph.value_info.get(var.name)
    if known is not None:
        return known
    if var.dtype is None:
        return helper.make_empty_tensor_value_info(var.name)
    elem = helper.np_dtype_to_tensor_dtype(np.dtype(var.dtype))
    return helper.make_tensor_value_info(var.name, elem, var.shape)
