"""The static execution plan: ops in topological order over numbered tensor slots.

Ops without a kernel in the op library run through ONNX Runtime (:mod:`.ort_fallback`).

A :class:`Schedule` is the part of the plan needed for some outputs, with the
slots each step frees once their last reader has run.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from ..ir import Graph, Operation, Variable
from .errors import ExecutorError
from .ort_fallback import OrtNode
from .ops import OpContext, get_op, is_supported
from .ops.registry import OpFunction


@dataclass(frozen=True)
class Step:
    index: int
    op: Operation
    fn: OpFunction
    ctx: OpContext
    attrs: dict[str, Any]
    inputs: tuple[int | None, ...]  # slot per op input, None where absent
    outputs: tuple[int, ...]


@dataclass(frozen=True)
class Schedule:
    """The steps producing ``outputs``, and what to free and feed."""

    steps: tuple[Step, ...]
    frees: tuple[tuple[int, ...], ...]  # per step: slots no later step (nor the caller) reads
    outputs: tuple[int, ...]
    needed_inputs: tuple[Variable, ...]  # graph inputs read


class Plan:
    """Slots for every variable and a step per operation of ``graph``."""

    def __init__(self, graph: Graph, device: torch.device) -> None:
        self.graph = graph
        self.slot_of: dict[str, int] = {name: i for i, name in enumerate(graph.variables)}
        self.num_slots = len(self.slot_of)
        self.steps = tuple(self._step(i, op, device) for i, op in enumerate(graph.topological_order()))
        self._producer_step = {slot: step for step in self.steps for slot in step.outputs}
        self._schedules: dict[tuple[str, ...], Schedule] = {}

    def _step(self, index: int, op: Operation, device: torch.device) -> Step:
        domain = "" if op.domain == "ai.onnx" else op.domain
        opset = self.graph.opset if domain == "" else self.graph.info.opset_imports.get(domain, 1)
        types = tuple(None if v is None else v.dtype for v in op.inputs)
        ctx = OpContext(op.op_type, op.name, opset, len(op.outputs), device, types)
        inputs = tuple(None if v is None else self.slot_of[v.name] for v in op.inputs)
        outputs = tuple(self.slot_of[v.name] for v in op.outputs)
        fn = get_op(op.op_type, op.domain) if is_supported(op.op_type, op.domain) else OrtNode(op, self.graph)
        return Step(index, op, fn, ctx, op.attributes, inputs, outputs)

    def schedule(self, output_names: tuple[str, ...]) -> Schedule:
        """The schedule computing ``output_names`` (cached per tuple of names)."""
        if output_names not in self._schedules:
            self._schedules[output_names] = self._build(output_names)
        return self._schedules[output_names]

    def _build(self, output_names: tuple[str, ...]) -> Schedule:
        for name in output_names:
            if name not in self.slot_of:
                raise ExecutorError(f"unknown output {name!r}: no tensor of that name in the graph")
        outputs = tuple(self.slot_of[n] for n in output_names)
        needed: set[int] = set()
        pending = [self._producer_step[s] for s in outputs if s in self._producer_step]
        while pending:
            step = pending.pop()
            if step.index in needed:
                continue
            needed.add(step.index)
            pending += [self._producer_step[s] for s in step.inputs if s in self._producer_step]
        steps = tuple(s for s in self.steps if s.index in needed)
        last_read: dict[int, int] = {}
        for position, step in enumerate(steps):
            for slot in (*step.inputs, *step.outputs):
                if slot is not None:
                    last_read[slot] = position
        keep = set(outputs) | {self.slot_of[v.name] for v in self.graph.parameters()}
        frees: list[list[int]] = [[] for _ in steps]
        for slot, position in last_read.items():
            if slot not in keep:
                frees[position].append(slot)
        read = {s for step in steps for s in step.inputs} | set(outputs)
        needed_inputs = tuple(v for v in self.graph.inputs if self.slot_of[v.name] in read)
        return Schedule(steps, tuple(tuple(f) for f in frees), outputs, needed_inputs)
