"""Graph IR: operations and variables linked both ways (producer, consumers).

Mutate a graph only through the Graph methods here so that links stay right.
"""

from __future__ import annotations

import copy
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import QtoolError

_SUBGRAPH_TYPES = (5, 10)  # onnx.AttributeProto.GRAPH, GRAPHS


class GraphError(QtoolError, ValueError):
    """A graph that the IR cannot represent or a mutation that would break it."""


@dataclass(eq=False)
class Variable:
    """A tensor: a graph input, an op output, or a parameter (``value`` is set).

    ``float_value`` is set when ``value`` holds a parameter on its quantization
    grid (after baking): float simulation reads it, export writes ``value``.
    ``copy_of`` names the parameter of the model as read that a private copy
    (:meth:`Graph.private_parameter`) was made from.
    """

    name: str
    value: np.ndarray | None = None
    float_value: np.ndarray | None = None
    shape: list[int | str | None] | None = None
    dtype: np.dtype | None = None
    producer: Operation | None = None
    consumers: list[Operation] = field(default_factory=list)
    copy_of: str | None = None

    @property
    def is_parameter(self) -> bool:
        return self.value is not None

    def __repr__(self) -> str:
        kind = "param" if self.is_parameter else "var"
        return f"<{kind} {self.name}>"


@dataclass(eq=False)
class Operation:
    """One node. ``inputs`` may hold None where an optional input is absent.

    ``quant`` holds the op's quantization configs once the pipeline has
    dispatched it (see :mod:`qtool.quant.opconfig`). A control-flow op (If,
    Loop, Scan) keeps its subgraphs as GraphProto attributes; the tensors of
    this graph they read are its last ``len(subgraph_refs)`` inputs, named in
    the subgraphs as ``subgraph_refs`` says (export renames them if they change).
    """

    name: str
    op_type: str
    domain: str = ""
    attributes: dict[str, Any] = field(default_factory=dict)
    inputs: list[Variable | None] = field(default_factory=list)
    outputs: list[Variable] = field(default_factory=list)
    doc_string: str = ""
    attribute_types: dict[str, int] = field(default_factory=dict)
    quant: Any = None
    subgraph_refs: list[str] = field(default_factory=list)

    @property
    def has_subgraphs(self) -> bool:
        """A control-flow op: some attribute holds a graph (If branches, Loop and Scan bodies)."""
        return any(t in _SUBGRAPH_TYPES for t in self.attribute_types.values())

    @property
    def explicit_inputs(self) -> list[Variable | None]:
        """The inputs the ONNX node lists (without those its subgraphs read from this graph)."""
        return self.inputs[:len(self.inputs) - len(self.subgraph_refs)]

    @property
    def outer_inputs(self) -> dict[str, Variable | None]:
        """The tensors of this graph the subgraphs read, by the names they use there (a pass may have given a
        variable another name, or another variable)."""
        return dict(zip(self.subgraph_refs, self.inputs[len(self.explicit_inputs):], strict=True))

    def parameters(self) -> list[Variable]:
        return [v for v in self.inputs if v is not None and v.is_parameter]

    def __repr__(self) -> str:
        return f"<{self.op_type} {self.name}>"


@dataclass
class ModelInfo:
    """What the model carries besides the graph, kept for a faithful export."""

    ir_version: int = 8
    opset_imports: dict[str, int] = field(default_factory=lambda: {"": 17})
    producer_name: str = ""
    producer_version: str = ""
    domain: str = ""
    model_version: int = 0
    doc_string: str = ""
    graph_name: str = "graph"
    graph_doc_string: str = ""
    metadata_props: dict[str, str] = field(default_factory=dict)
    # initializers also listed as graph inputs (IR 4 and later: defaults a caller may feed), taken as constants
    constant_inputs: tuple[str, ...] = ()
    sources: tuple[Any, ...] = ()  # the files the model was read from (Paths: it, its external data), never written
    # the model's own Q/DQ nodes qtool removed to quantize it again (qtool.own_quantization), by op type
    removed_quantization: dict[str, int] = field(default_factory=dict)


class Graph:
    """A computation graph with named operations and variables."""

    def __init__(self, info: ModelInfo | None = None) -> None:
        self.info = info or ModelInfo()
        self.operations: dict[str, Operation] = {}
        self.variables: dict[str, Variable] = {}
        self.inputs: list[Variable] = []
        self.outputs: list[Variable] = []
        self.value_info: dict[str, Any] = {}  # ValueInfoProto of intermediates, by name
        self.part_of: str | None = None  # the model this graph is a segment of (qtool.ir.segments), if one
        # the graph whose float run the quantized model is measured against, where a pass changed this one's float
        # function (bias correction; qtool.passes.Pass.changes_float_function); None: this graph itself
        self.float_reference: Graph | None = None
        # the shapes calibration's float runs gave the tensors it observed, by name, a dimension that varied None:
        # what an exporter may read where ``Variable.shape`` is unknown (never written into the model)
        self.observed_shapes: dict[str, tuple[int | None, ...]] = {}
        self._name_counter = 0
        self._order: list[Operation] | None = None  # topological_order's, until a mutation links ops otherwise

    def copy(self) -> Graph:
        """An independent copy (operations, variables, configs); parameter arrays are shared, not copied:
        every change replaces a parameter's value (:meth:`set_parameter_value`) instead of writing into it.
        Every variable and operation is made empty first and filled after, so that the copy never follows the
        links from op to op (a deep graph would exceed Python's recursion limit)."""
        memo = {id(a): a for v in self.variables.values() for a in (v.value, v.float_value) if a is not None}
        if self.float_reference is not None:  # shared: it is never changed
            memo[id(self.float_reference)] = self.float_reference
        nodes = [*self.variables.values(), *self.operations.values()]
        for node in nodes:
            memo[id(node)] = object.__new__(type(node))
        for node in nodes:
            memo[id(node)].__dict__.update(copy.deepcopy(node.__dict__, memo))
        return copy.deepcopy(self, memo)

    # -- queries ------------------------------------------------------------
    @property
    def opset(self) -> int:
        return self.info.opset_imports.get("", self.info.opset_imports.get("ai.onnx", 1))

    def parameters(self) -> list[Variable]:
        return [v for v in self.variables.values() if v.is_parameter]

    def unique_name(self, base: str) -> str:
        """A name not used by any operation or variable, derived from ``base``."""
        if base not in self.variables and base not in self.operations:
            return base
        while True:
            self._name_counter += 1
            candidate = f"{base}_{self._name_counter}"
            if candidate not in self.variables and candidate not in self.operations:
                return candidate

    def topological_order(self) -> list[Operation]:
        """Operations so that every producer comes before its consumers (stable); computed once between the
        mutations that add, remove or relink an op (passes ask for it many times: 20 ms a run of a small Llama)."""
        if self._order is None:
            self._order = self._sorted_operations()
        return list(self._order)

    def _sorted_operations(self) -> list[Operation]:
        pending = {op.name: len({id(v) for v in op.inputs if v is not None and v.producer is not None})
                   for op in self.operations.values()}
        ready = deque(op for op in self.operations.values() if pending[op.name] == 0)
        order: list[Operation] = []
        while ready:
            op = ready.popleft()
            order.append(op)
            for out in op.outputs:
                for consumer in _distinct_ops(out.consumers):
                    if any(v is out for v in consumer.inputs):
                        pending[consumer.name] -= 1
                        if pending[consumer.name] == 0:
                            ready.append(consumer)
        if len(order) != len(self.operations):
            stuck = sorted(set(self.operations) - {op.name for op in order})
            raise GraphError(f"graph has a cycle through node(s): {', '.join(stuck[:5])}")
        return order

    # -- mutation -------------------------------------------------------------
    def add_variable(self, name: str, value: np.ndarray | None = None, **kwargs) -> Variable:
        if name in self.variables:
            raise GraphError(f"variable {name!r} already exists")
        var = Variable(name, value=value, **kwargs)
        if value is not None:
            var.shape, var.dtype = list(value.shape), value.dtype
        self.variables[name] = var
        return var

    def add_operation(
        self,
        op_type: str,
        inputs: Iterable[Variable | None],
        outputs: Iterable[Variable],
        name: str | None = None,
        attributes: dict[str, Any] | None = None,
        domain: str = "",
    ) -> Operation:
        """Create an op, linking it as producer of ``outputs`` and consumer of ``inputs``. Its name need only differ
        from the other ops' (ONNX keeps node and tensor names apart: a node 'gap' writing tensor 'gap' keeps it)."""
        name = name or op_type
        if name in self.operations:
            name = self.unique_name(name)
        self._order = None
        op = Operation(name, op_type, domain, dict(attributes or {}))
        self.operations[name] = op
        for var in inputs:
            self._link_input(op, var)
        for var in outputs:
            if var.producer is not None:
                raise GraphError(f"variable {var.name!r} is already produced by {var.producer.name!r}")
            var.producer = op
            op.outputs.append(var)
        return op

    def _link_input(self, op: Operation, var: Variable | None) -> None:
        self._order = None
        op.inputs.append(var)
        if var is not None:
            var.consumers.append(op)

    def set_input(self, op: Operation, index: int, var: Variable | None) -> None:
        """Make input ``index`` of ``op`` read ``var``."""
        old = op.inputs[index]
        if old is not None:
            old.consumers.remove(op)
        self._order = None
        op.inputs[index] = var
        if var is not None:
            var.consumers.append(op)

    def set_subgraphs(self, op: Operation, subgraphs: dict[str, Any], reads: list[str]) -> None:
        """Give control-flow ``op`` new subgraph attributes that read ``reads`` (a subset of the outer tensors its
        subgraphs read so far, by the names they use there); the outer tensors no longer read are unlinked."""
        by_name = op.outer_inputs
        unknown = [name for name in reads if name not in by_name]
        if unknown:
            raise GraphError(f"node {op.name!r}: new subgraphs read {unknown[0]!r}, which the old ones did not")
        explicit = len(op.explicit_inputs)
        for index in range(explicit, len(op.inputs)):
            self.set_input(op, index, None)
        del op.inputs[explicit:]
        for name in reads:
            self._link_input(op, by_name[name])
        op.subgraph_refs = list(reads)
        op.attributes.update(subgraphs)

    def replace_all_uses(self, old: Variable, new: Variable) -> None:
        """Every consumer of ``old`` (and the graph outputs) read ``new`` instead."""
        for consumer in list(old.consumers):
            for i, var in enumerate(consumer.inputs):
                if var is old:
                    self.set_input(consumer, i, new)
        self.outputs = [new if v is old else v for v in self.outputs]

    def remove_operation(self, op: Operation) -> None:
        """Unlink and delete ``op``; its outputs stay as variables without producer."""
        for i in range(len(op.inputs)):
            self.set_input(op, i, None)
        for out in op.outputs:
            out.producer = None
        del self.operations[op.name]
        self._order = None

    def bypass_operation(self, op: Operation, input_index: int = 0, output_index: int = 0) -> None:
        """Remove a single-path op (Identity, Dropout, a removable Relu), wiring its input through.

        When the op's output is a graph output, the output name is kept by
        renaming: the input variable takes the output's name if it is not itself
        a graph input or parameter.
        """
        source, result = op.inputs[input_index], op.outputs[output_index]
        if source is None:
            raise GraphError(f"cannot bypass {op.name!r}: input {input_index} is absent")
        is_graph_output = result in self.outputs
        self.remove_operation(op)
        self.replace_all_uses(result, source)
        self.remove_variable(result)
        if is_graph_output and not source.is_parameter and source not in self.inputs:
            self.rename_variable(source, result.name)

    def insert_after(self, var: Variable, op_type: str, name: str | None = None,
                     attributes: dict[str, Any] | None = None, extra_inputs: Iterable[Variable] = ()) -> Operation:
        """Insert ``var -> op -> new var`` and move every reader of ``var`` to the new var."""
        new_var = self.add_variable(self.unique_name(f"{var.name}_{op_type.lower()}"), shape=var.shape, dtype=var.dtype)
        readers = list(var.consumers)
        op = self.add_operation(op_type, [var, *extra_inputs], [new_var], name=name, attributes=attributes)
        for reader in readers:
            for i, v in enumerate(reader.inputs):
                if v is var:
                    self.set_input(reader, i, new_var)
        self.outputs = [new_var if v is var else v for v in self.outputs]
        return op

    def set_parameter_value(self, op: Operation, index: int, value: np.ndarray, *,
                            quantized: bool = False, every_reader: bool = False) -> Variable:
        """Give ``op``'s parameter input ``index`` the value ``value`` and return its variable.

        In place when ``op`` alone reads the parameter, or ``every_reader`` (the value is right for all the ops
        that read it; not for a graph output); otherwise ``op`` gets a private copy (named ``<parameter>_<op>``)
        so that no other reader sees the change. ``quantized``: ``value`` lies on a quantization grid, and the
        float value it replaces stays in ``float_value`` for float simulation.
        """
        var = op.inputs[index]
        if var is None or not var.is_parameter:
            raise GraphError(f"input {index} of {op.name!r} is not a parameter")
        float_value = var.float_value
        if quantized and float_value is None:
            float_value = var.value
        if not every_reader or var in self.outputs:
            var = self.private_parameter(op, index)
        var.value = np.asarray(value, dtype=var.value.dtype)
        var.shape, var.float_value = list(var.value.shape), float_value
        return var

    def is_shared(self, var: Variable) -> bool:
        """Whether several ops read ``var``, or an op and the graph's outputs."""
        return len(dict.fromkeys(var.consumers)) > 1 or var in self.outputs

    def private_parameter(self, op: Operation, index: int, name: str | None = None) -> Variable:
        """``op``'s parameter input ``index``, made ``op``'s own first where it is shared (:meth:`is_shared`): a copy
        named ``name`` (by default ``<parameter>_<op>``, made unique)."""
        var = op.inputs[index]
        if self.is_shared(var):
            copy = self.add_variable(name or self.unique_name(f"{var.name}_{op.name}"), var.value,
                                     float_value=var.float_value, copy_of=var.copy_of or var.name)
            self.set_input(op, index, copy)
            return copy
        return var

    def remove_variable(self, var: Variable) -> None:
        if var.consumers or var.producer is not None:
            raise GraphError(f"variable {var.name!r} is still linked")
        self.variables.pop(var.name, None)

    def rename_variable(self, var: Variable, new_name: str) -> None:
        if new_name in self.variables and self.variables[new_name] is not var:
            raise GraphError(f"cannot rename {var.name!r}: {new_name!r} exists")
        del self.variables[var.name]
        var.name = new_name
        self.variables[new_name] = var

    def remove_unused(self) -> int:
        """Delete parameters and dangling variables nothing reads; return how many."""
        graph_io = {id(v) for v in (*self.inputs, *self.outputs)}
        dead = [v for v in self.variables.values() if not v.consumers and v.producer is None and id(v) not in graph_io]
        for var in dead:
            del self.variables[var.name]
        return len(dead)


def _distinct_ops(ops: Iterable[Operation]) -> list[Operation]:
    seen: dict[int, Operation] = {}
    for op in ops:
        seen.setdefault(id(op), op)
    return list(seen.values())
