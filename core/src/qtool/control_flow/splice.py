"""A quantized body model back into a subgraph: its formal inputs only (the outer tensors it reads become outer
reads again), the names it defines made unique in the whole model."""

from __future__ import annotations

import onnx

from ..ir import GraphError
from ..ir.onnx_import import rename_outer_reads, subgraphs


def exported_body(original: onnx.GraphProto, exported: onnx.ModelProto, prefix: str) -> onnx.GraphProto:
    """The graph of ``exported`` (``original`` quantized as a model of its own) as a subgraph in ``original``'s
    place: ``original``'s formal inputs and outputs, every other name it defines prefixed with ``prefix``."""
    body = onnx.GraphProto()
    body.CopyFrom(exported.graph)
    formal = [v.name for v in original.input]
    inputs = {v.name: v for v in body.input}
    missing = [name for name in formal if name not in inputs]
    if missing:
        raise GraphError(f"the quantized body {original.name!r} lost its input {missing[0]!r}")
    kept = [inputs[name] for name in formal]
    del body.input[:]
    body.input.extend(kept)
    body.name = original.name
    fixed = set(formal) | {v.name for v in body.output}
    defined = {t.name for t in body.initializer} | {o for n in body.node for o in n.output if o}
    _rename(body, {name: prefix + name for name in defined - fixed})
    return body


def _rename(graph: onnx.GraphProto, renamed: dict[str, str]) -> None:
    """Rename defined names and every read of them, nested subgraphs included."""
    for tensor in graph.initializer:
        tensor.name = renamed.get(tensor.name, tensor.name)
    for info in graph.value_info:
        info.name = renamed.get(info.name, info.name)
    for node in graph.node:
        node.input[:] = [renamed.get(n, n) for n in node.input]
        node.output[:] = [renamed.get(n, n) for n in node.output]
        for inner in subgraphs(node):
            rename_outer_reads(inner, renamed)

