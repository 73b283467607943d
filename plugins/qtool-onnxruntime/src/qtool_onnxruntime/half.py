"""float16 and bfloat16 models: written to compute in float32, their graph inputs and outputs keeping their types.

ONNX Runtime fuses its CPU integer kernels (QLinearConv, QLinearMatMul, QGemm, MatMulIntegerToFloat...) from
float32 Q/DQ only, and its x86 CPU provider has no float16 kernel for most float ops either: it runs them on Casts
to float32 it inserts itself. So where qtool quantizes a tensor of a float16 or bfloat16 model, the export writes
the whole model in float32 (every such tensor type, initializer and type attribute) with a Cast after each graph
input and before each graph output of a half type: a caller feeds and gets the model's own types. Measured on ORT
1.32, one thread, against float32 only around each quantized op (Casts at each region's edges, the float ops between
in float16): a float16 BERT encoder (4 layers, 256 wide, 128 tokens) 10.9 ms float16, 5.1 ms lifted whole, 5.6 ms
by regions; a float16 CNN 3.2 ms float16, 1.0 ms either way; the same SQNR (docs/platforms/onnxruntime.md).
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from qtool.quant import QuantizedTensor, quantized_tensors

from .qdq import Names, rename_body_reads
from .storage import HALF_TYPES, stated_type

HALF = frozenset({TensorProto.FLOAT16, TensorProto.BFLOAT16})
TYPE_ATTRIBUTES = frozenset({"to", "dtype"})  # Cast's target; EyeLike's, RandomNormal's... output type


def half_quantized(graph, settled: bool) -> tuple[QuantizedTensor, np.dtype] | None:
    """The first quantized tensor of a float16 or bfloat16 type and that type: the export then writes ``graph`` in
    float32 (None: in its own types)."""
    for q in quantized_tensors(graph, settled=settled):
        dtype = stated_type(graph.variables[q.tensor])
        if dtype in HALF_TYPES:
            return q, dtype
    return None


def lift(model: onnx.ModelProto, values: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """``model`` in float32, in place; ``values`` (the arrays of its shape-only initializers) with each half array
    as float32."""
    graph = model.graph
    names = Names(model)
    initializers = {t.name for t in graph.initializer}
    fed = [i for i in graph.input if i.name not in initializers]  # an IR-3 model lists its initializers too
    _lift_graph(graph, frozenset(values), {i.name for i in fed}, {o.name for o in graph.output})
    for function in model.functions:
        for node in function.node:
            _lift_node(node)
    front = [_cast_input(graph, i, names) for i in fed if _half_tensor(i.type)]
    back = [_cast_output(graph, o, names) for o in graph.output
            if _half_tensor(o.type) and o.name not in {i.name for i in fed}]  # an input handed through stays
    nodes = [*front, *graph.node, *back]
    graph.ClearField("node")
    graph.node.extend(nodes)
    return {name: array.astype(np.float32) if array.dtype in HALF_TYPES else array for name, array in values.items()}


def _lift_graph(graph: onnx.GraphProto, held: frozenset[str] = frozenset(), fed: set[str] = frozenset(),
                returned: set[str] = frozenset()) -> None:
    """Every half type in ``graph`` (its nodes and subgraphs included) to float32, but those of the model's own
    inputs ``fed`` and outputs ``returned`` (Casts keep their types); ``held``: initializers without their values
    (the caller converts those)."""
    for info in (*graph.input, *graph.value_info):
        if info.name not in fed:
            _lift_type(info.type)
    for info in graph.output:
        if info.name not in returned:
            _lift_type(info.type)
    for tensor in graph.initializer:
        if tensor.data_type in HALF and tensor.name in held:
            tensor.data_type = TensorProto.FLOAT
        elif tensor.data_type in HALF:
            tensor.CopyFrom(_float32(tensor))
    for node in graph.node:
        _lift_node(node)


def _lift_node(node: onnx.NodeProto) -> None:
    for attr in node.attribute:
        if attr.type == onnx.AttributeProto.INT and attr.name in TYPE_ATTRIBUTES and attr.i in HALF \
                and node.domain in ("", "ai.onnx"):
            attr.i = TensorProto.FLOAT
        elif attr.type == onnx.AttributeProto.TENSOR and attr.t.data_type in HALF:
            attr.t.CopyFrom(_float32(attr.t))
        elif attr.type == onnx.AttributeProto.TENSORS:
            for tensor in attr.tensors:
                if tensor.data_type in HALF:
                    tensor.CopyFrom(_float32(tensor))
        elif attr.type == onnx.AttributeProto.GRAPH:
            _lift_graph(attr.g)
        elif attr.type == onnx.AttributeProto.GRAPHS:
            for body in attr.graphs:
                _lift_graph(body)


def _float32(tensor: onnx.TensorProto) -> onnx.TensorProto:
    return numpy_helper.from_array(numpy_helper.to_array(tensor).astype(np.float32), tensor.name)


def _lift_type(type_proto: onnx.TypeProto) -> None:
    """Half element types to float32, inside sequences, optionals and maps too."""
    kind = type_proto.WhichOneof("value")
    if kind == "tensor_type" and type_proto.tensor_type.elem_type in HALF:
        type_proto.tensor_type.elem_type = TensorProto.FLOAT
    elif kind == "sequence_type":
        _lift_type(type_proto.sequence_type.elem_type)
    elif kind == "optional_type":
        _lift_type(type_proto.optional_type.elem_type)
    elif kind == "map_type":
        _lift_type(type_proto.map_type.value_type)


def _half_tensor(type_proto: onnx.TypeProto) -> bool:
    return type_proto.WhichOneof("value") == "tensor_type" and type_proto.tensor_type.elem_type in HALF


def _cast_input(graph: onnx.GraphProto, info: onnx.ValueInfoProto, names: Names) -> onnx.NodeProto:
    """The model reads graph input ``info`` through a Cast to float32."""
    inner = names.fresh(f"{info.name}_float32")
    _rename_reads(graph, info.name, inner)
    return helper.make_node("Cast", [info.name], [inner], name=names.fresh(f"{info.name}_Cast"),
                            to=TensorProto.FLOAT)


def _cast_output(graph: onnx.GraphProto, info: onnx.ValueInfoProto, names: Names) -> onnx.NodeProto:
    """Graph output ``info`` written by a Cast from the float32 tensor the model computes in its place."""
    inner = names.fresh(f"{info.name}_float32")
    _rename_reads(graph, info.name, inner)
    for node in graph.node:
        node.output[:] = [inner if name == info.name else name for name in node.output]
    for tensor in (*graph.initializer, *graph.value_info):
        if tensor.name == info.name:
            tensor.name = inner
    return helper.make_node("Cast", [inner], [info.name], name=names.fresh(f"{info.name}_Cast"),
                            to=info.type.tensor_type.elem_type)


def _rename_reads(graph: onnx.GraphProto, old: str, new: str) -> None:
    """Every node of ``graph`` (its subgraphs included) reads ``old`` as ``new``."""
    for node in graph.node:
        node.input[:] = [new if name == old else name for name in node.input]
        rename_body_reads(node, {old: new})
