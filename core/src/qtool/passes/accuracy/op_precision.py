"""Changing one quantized op's precision without changing anyone else's.

Configs of other ops may share parameters with the op's configs (a reader
overlapped with the op's output, aligned inputs). Before the op's configs
change, every other config keeps what it had: those whose parameters came from
the op take a snapshot (one owner per former dominator, the rest overlapped
with it), those that reached another dominator through the op's configs are
overlapped with that dominator directly.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import numpy as np

from ...ir import Graph, Operation
from ...quant import QuantScheme, TensorQuantizationConfig, compute_scale_offset, representable_range
from ...quant.policy import QuantizationState as S
from ..parameter_quantize import weight_range


def return_to_float(graph: Graph, op: Operation, reason: str) -> None:
    """The op runs float: FP32 on each of its configs, ``quantized`` False, ``reason`` recorded."""

    def change() -> None:
        for tqc in op.quant.all_configs():
            tqc.keep_float(reason)

    _isolated(graph, op, change)
    op.quant.quantized, op.quant.reason = False, reason


def release_followers(graph: Graph, reason: str) -> list[str]:
    """Return to float, with ``reason``, every op quantized only for its neighbours' sake (``OpQuantConfig.follows``)
    whose neighbours no longer run quantized, as dispatch would have decided: one that reads an op running float,
    or (a passive or between op) whose output no quantized op reads. Their names, in the order released."""
    released: list[str] = []
    changed = True
    while changed:
        changed = False
        for op in graph.topological_order():
            if op.quant is None or not op.quant.quantized or op.quant.follows is None or _has_company(op):
                continue
            return_to_float(graph, op, reason)
            released.append(op.name)
            changed = True
    return released


def _has_company(op: Operation) -> bool:
    """Whether the ops a follower depends on still run quantized (its configured inputs' producers; for a passive
    or between op also a reader of its output)."""
    producers = [var.producer for var, tqc in zip(op.inputs, op.quant.inputs, strict=True)
                 if tqc is not None and var.producer is not None]
    if not all(p.quant is not None and p.quant.quantized for p in producers):
        return False
    return op.quant.follows == "activation" or any(
        reader.quant is not None and reader.quant.quantized for out in op.outputs for reader in out.consumers)


def keep_output_float(graph: Graph, op: Operation, reason: str) -> None:
    """The op stays quantized but writes float: its output config FP32 with ``reason``."""
    _isolated(graph, op, lambda: op.quant.outputs[0].keep_float(reason))


def raise_precision(graph: Graph, op: Operation, bits: dict[str, int], reason: str) -> list[str]:
    """Widen the op's integer configs of role ``r`` to ``bits[r]`` bits over the same range; what changed."""
    widened: list[str] = []

    def change() -> None:
        for var, tqc in _narrower(op, bits):
            scheme = _wider(tqc.scheme, bits[tqc.role])
            if var.is_parameter:
                low, high = weight_range(np.asarray(var.value, dtype=np.float64), scheme)
            else:
                low, high = representable_range(tqc)
            tqc.scheme = scheme
            tqc.set_params(*compute_scale_offset(scheme, low, high))
            tqc.notes["reason"] = reason
            widened.append(f"{var.name}: {scheme.short()}")

    _isolated(graph, op, change)
    op.quant.reason = reason
    return widened


@contextmanager
def trial(graph: Graph) -> Iterator[None]:
    """Precision changes made inside are undone on exit (every config's scheme, state, parameters and notes,
    every op's ``quantized`` flag and reason)."""
    quants = [op.quant for op in graph.operations.values() if op.quant is not None]
    configs = [(t, dict(vars(t)), dict(t.notes)) for q in quants for t in q.all_configs()]
    flags = [(q, q.quantized, q.reason) for q in quants]
    try:
        yield
    finally:
        for tqc, attributes, notes in configs:
            vars(tqc).update(attributes)
            tqc.notes = notes
        for q, quantized, reason in flags:
            q.quantized, q.reason = quantized, reason


def can_widen(op: Operation, bits: dict[str, int]) -> bool:
    """Whether :func:`raise_precision` would change any of the op's configs."""
    return next(_narrower(op, bits), None) is not None


def _narrower(op: Operation, bits: dict[str, int]):
    """The op's (variable, config) pairs of an integer role narrower than ``bits[role]``."""
    pairs = zip((*op.inputs, *op.outputs), (*op.quant.inputs, *op.quant.outputs), strict=True)
    for var, tqc in pairs:
        if tqc is None or not tqc.is_settled or tqc.is_passive or tqc.scheme.is_floating:
            continue
        if tqc.role in bits and bits[tqc.role] > tqc.scheme.num_of_bits:
            yield var, tqc


def _wider(scheme: QuantScheme, bits: int) -> QuantScheme:
    signed = scheme.quant_min < 0
    low, high = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if signed else (0, 2**bits - 1)
    return scheme.with_changes(num_of_bits=bits, quant_min=low, quant_max=high)


def _isolated(graph: Graph, op: Operation, change: Callable[[], None]) -> None:
    """Run ``change`` on the op's configs; other ops' configs keep their parameters, and those kept float stay so
    (one that still names a changed config as its dominator does not take its parameters over)."""
    own = {id(t) for t in op.quant.all_configs()}
    others = [t for o in graph.operations.values() if o is not op and o.quant is not None
              for t in o.quant.all_configs() if t.state is not S.FP32]
    before: dict[int, TensorQuantizationConfig] = {id(t): t.dominator for t in others}
    snapshots = {id(r): (r.scale, r.offset) for r in before.values() if id(r) in own and r.is_settled}
    change()
    owners: dict[int, TensorQuantizationConfig] = {}
    for tqc in others:
        old = before[id(tqc)]
        if id(old) in snapshots:
            if id(old) in owners:
                tqc.overlap(owners[id(old)])
            else:
                tqc.set_params(*snapshots[id(old)])
                owners[id(old)] = tqc
        elif id(old) not in own and tqc.dominator is not old:
            tqc.overlap(old)
