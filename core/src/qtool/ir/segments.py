"""A graph cut into consecutive segments (decoder blocks, in a transformer) that can be quantized one at a time.

A cut may fall after an op where few activations cross it (the residual stream of a decoder); a segment
closes at such a cut when its parameters would pass a byte budget. The ops are walked in a late order
(:func:`late_order`): a computation a block alone reads (its attention mask, a weight an exporter shares through
an Identity) comes with that block, not at the start of the model, where it would cross every cut before it.
Each segment becomes a Graph of its own: its inputs are the graph inputs and crossing activations it reads, its
outputs the graph outputs it produces and the activations later segments read; its parameters are fresh mappings
of the mapped ones, so their pages leave memory with the segment.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from .external_data import remapped
from .graph import Graph, Operation, Variable


@dataclass
class Segment:
    """Consecutive ops of the topological order; ``inputs``/``outputs`` are variables of the whole graph."""

    index: int
    ops: list[Operation]
    inputs: list[Variable]
    outputs: list[Variable]
    parameter_bytes: int


def split(graph: Graph, budget: int, *, max_crossing: int = 4) -> list[Segment]:
    """Segments of about ``budget`` parameter bytes, cut only where at most ``max_crossing`` activations (graph
    inputs not counted) are alive: a segment closes before the op that would take it over the budget, or at the
    first cut once it is over; one segment when no cut qualifies."""
    order = late_order(graph)
    position = {op.name: i for i, op in enumerate(order)}
    last_use = {}
    for var in graph.variables.values():
        if not var.is_parameter and var.consumers:
            last_use[var.name] = max(position[c.name] for c in var.consumers)
    alive = np.zeros(len(order) + 1, np.int64)  # alive[t]: activations made at or before op t, read after it
    for op in order:
        for var in op.outputs:
            if var.name in last_use and last_use[var.name] > position[op.name]:
                alive[position[op.name]] += 1
                alive[last_use[var.name]] -= 1
    alive = np.cumsum(alive)
    bounds, counted, size = [0], set(), 0
    for t, op in enumerate(order):
        new = {v.name: v.value.nbytes for v in op.parameters() if v.name not in counted}
        if t > bounds[-1] and alive[t - 1] <= max_crossing and (size >= budget or size + sum(new.values()) > budget):
            bounds.append(t)  # close before op t: the segment is full, or op t would overfill it
            counted, size = set(), 0
            new = {v.name: v.value.nbytes for v in op.parameters()}
        counted.update(new)
        size += sum(new.values())
    bounds.append(len(order))
    segments = [order[a:b] for a, b in zip(bounds, bounds[1:], strict=False) if b > a]
    return [_segment(graph, i, ops, position) for i, ops in enumerate(segments)]


def late_order(graph: Graph) -> list[Operation]:
    """The ops in a topological order where each comes as late as its readers allow: depth first from the graph
    outputs, the input made latest in :meth:`Graph.topological_order` first (the residual stream before a mask
    built from the graph inputs), each op right after what it reads. The topological order puts every op whose
    inputs are ready first: a torch export's per-layer masks and shared weights all at the start."""
    base = graph.topological_order()
    position = {op.name: i for i, op in enumerate(base)}
    done: set[str] = set()
    order: list[Operation] = []
    outputs = {v.name for v in graph.outputs}
    ends = [op for op in base if not op.outputs or any(v.name in outputs or not v.consumers for v in op.outputs)]
    for end in ends:
        stack = [(end, False)]
        while stack:  # iterative: a deep model's chain of ops is longer than Python's recursion limit
            op, expanded = stack.pop()
            if op.name in done:
                continue
            if expanded:
                done.add(op.name)
                order.append(op)
                continue
            stack.append((op, True))
            producers = {v.producer.name: v.producer for v in op.inputs if v is not None and v.producer is not None}
            ready = sorted((p for p in producers.values() if p.name not in done), key=lambda p: position[p.name])
            stack += [(p, False) for p in ready]  # the latest on top: walked first
    return order


def _segment(graph: Graph, index: int, ops: list[Operation], position: dict[str, int]) -> Segment:
    names = {op.name for op in ops}
    end = position[ops[-1].name]
    inputs, outputs, params = {}, {}, {}
    for op in ops:
        for var in op.inputs:
            if var is None:
                continue
            if var.is_parameter:
                params[var.name] = var.value.nbytes
            elif var.producer is None or var.producer.name not in names:
                inputs.setdefault(var.name, var)
        for var in op.outputs:
            if var in graph.outputs or any(position[c.name] > end for c in var.consumers):
                outputs[var.name] = var
    graph_inputs = [v for v in graph.inputs if v.name in inputs]
    crossing = [v for v in inputs.values() if v not in graph_inputs]
    return Segment(index, ops, graph_inputs + crossing, list(outputs.values()), sum(params.values()))


def segment_graph(graph: Graph, segment: Segment, dtypes: dict[str, tuple[np.dtype, int]]) -> Graph:
    """A Graph of the segment's ops alone. ``dtypes``: (dtype, rank) of each crossing activation, as captured
    (declared with dynamic sizes); graph inputs keep their declarations."""
    part = Graph(dataclasses.replace(graph.info, graph_name=f"{graph.info.graph_name}.segment{segment.index}"))
    part.part_of = graph.info.graph_name

    def variable(var: Variable) -> Variable:
        known = part.variables.get(var.name)
        if known is not None:
            return known
        if var.is_parameter:
            copy = part.add_variable(var.name, remapped(var.value))
            copy.float_value = None if var.float_value is None else remapped(var.float_value)
            return copy
        copy = part.add_variable(var.name, shape=var.shape, dtype=var.dtype)
        if var.name in graph.value_info:
            part.value_info[var.name] = graph.value_info[var.name]
        return copy

    for var in segment.inputs:
        copy = variable(var)
        if var.name in dtypes:
            dtype, rank = dtypes[var.name]
            copy.dtype, copy.shape = np.dtype(dtype), [None] * rank
            part.value_info.pop(var.name, None)
        part.inputs.append(copy)
    for op in segment.ops:
        copy = part.add_operation(op.op_type, [None if v is None else variable(v) for v in op.inputs],
                                  [variable(v) for v in op.outputs], name=op.name, attributes=op.attributes,
                                  domain=op.domain)
        copy.doc_string, copy.attribute_types = op.doc_string, dict(op.attribute_types)
        copy.subgraph_refs = list(op.subgraph_refs)
    part.outputs = [part.variables[v.name] for v in segment.outputs]
    return part


def declare_outputs(part: Graph, values: list[np.ndarray]) -> None:
    """Declare the segment's outputs that the model did not (activations crossing a cut) with the dtype and
    rank of their ``values`` (dynamic sizes)."""
    for var, value in zip(part.outputs, values, strict=True):
        if var.name not in part.value_info:
            var.dtype, var.shape = value.dtype, [None] * value.ndim
