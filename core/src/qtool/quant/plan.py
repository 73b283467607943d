"""The quantization plan: every change of a config's state, its two status checks, and where tensors are quantized.

A :class:`TensorQuantizationConfig` moves through its life cycle only by the
methods of :class:`PlannedConfig` (its base): ``set_params`` (ACTIVATED),
``overlap`` (share another config's parameters), ``make_passive`` (derive them
by a rule), ``keep_float(reason)``, ``bake`` (values stored on the grid) and
``restore_state`` (a saved state file). Nothing else assigns a state.

Two questions cover every reader:

* :attr:`PlannedConfig.is_planned`: the tensor is quantized here, or will be
  once calibrated (neither this config nor its dominator is kept float);
* :attr:`PlannedConfig.is_settled`: it is quantized with known parameters (the
  configs that are simulated and exported).

:func:`sites` walks a graph's quantization the way an exporter writes it: one
site per quantize/dequantize pair of an activation (its producer's pair, then
one per group of readers with another dominator) and one per quantized reader
of a parameter, so exporters read placement instead of deriving it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from itertools import chain

import numpy as np

from .policy import QuantizationState as S

ParamsRule = Callable[[], tuple[np.ndarray, np.ndarray]]

SETTLED_STATES = frozenset({S.ACTIVATED, S.BAKED, S.OVERLAPPED, S.PASSIVE, S.PASSIVE_BAKED})
BAKED = {S.ACTIVATED: S.BAKED, S.PASSIVE: S.PASSIVE_BAKED}  # the one mapping of what baking does
BAKED_STATES = frozenset(BAKED.values())
UNBAKED = {baked: unbaked for unbaked, baked in BAKED.items()}


class PlannedConfig:
    """The state machine half of a tensor quantization config (see the module docstring)."""

    def __init__(self, state: S = S.INITIAL) -> None:
        self._state = state
        self._scale: np.ndarray | None = None
        self._offset: np.ndarray | None = None
        self._dominator: PlannedConfig | None = None
        self._rule: ParamsRule | None = None
        self.notes: dict[str, object] = {}

    @property
    def state(self) -> S:
        return self._state

    # -- the two status checks -------------------------------------------------------
    @property
    def is_planned(self) -> bool:
        """Quantized here, now or once calibrated: neither this config nor its dominator is kept float."""
        return S.FP32 not in (self._state, self.dominator.state)

    @property
    def is_settled(self) -> bool:
        """Quantized with known parameters: its own, a settled dominator's, or a passive rule's."""
        return self._state in SETTLED_STATES and self.dominator.state in SETTLED_STATES

    @property
    def is_baked(self) -> bool:
        """This config or its dominator is baked (the simulation then leaves the parameter as stored)."""
        return self._state in BAKED_STATES or self.dominator.state in BAKED_STATES

    @property
    def dominator(self) -> PlannedConfig:
        """The config that owns this config's parameters (itself when it owns them)."""
        tqc = self
        while tqc._dominator is not None:
            tqc = tqc._dominator
        return tqc

    # -- state changes -------------------------------------------------------------------
    def set_params(self, scale, offset, state: S = S.ACTIVATED) -> None:
        """Own parameters from now on (calibration, weight quantization)."""
        self._scale = np.asarray(scale, dtype=np.float32)
        self._offset = np.asarray(offset)
        self._dominator = None
        self._rule = None
        self._state = state

    def overlap(self, dominator: PlannedConfig) -> None:
        """Share ``dominator``'s parameters (they stay equal if it is recalibrated)."""
        if dominator.dominator is self:
            raise ValueError("overlapping these configs would make a cycle")
        self._dominator = dominator
        self._state = S.OVERLAPPED

    def make_passive(self, rule: ParamsRule) -> None:
        """Derive parameters from other configs each time they are read."""
        self._rule = rule
        self._dominator = None
        self._state = S.PASSIVE

    def keep_float(self, reason: str | None = None) -> None:
        """This tensor stays float at this place; ``reason`` goes to ``notes["reason"]``."""
        self._state = S.FP32
        if reason is not None:
            self.notes["reason"] = reason

    def bake(self) -> None:
        """Its tensor's stored values are now on the grid (ACTIVATED -> BAKED, PASSIVE -> PASSIVE_BAKED)."""
        if self._state not in BAKED:
            raise ValueError(f"a {self._state.value} config cannot be baked")
        self._state = BAKED[self._state]

    def restore_state(self, state: S) -> None:
        """Take the state a saved plan records (qtool.state), after its parameters or links are restored."""
        self._state = state


def configured(op) -> Iterator[tuple[str, int, object, PlannedConfig]]:
    """``(side, index, variable, config)`` for every configured input and output of ``op``."""
    if op.quant is None:
        return
    for side, variables, configs in (("input", op.inputs, op.quant.inputs), ("output", op.outputs, op.quant.outputs)):
        for index, (var, tqc) in enumerate(zip(variables, configs, strict=False)):
            if var is not None and tqc is not None:
                yield side, index, var, tqc


def quantizes(tqc: PlannedConfig | None, settled: bool) -> bool:
    """``tqc.is_settled`` (``settled``) or ``tqc.is_planned``; False for no config."""
    return tqc is not None and (tqc.is_settled if settled else tqc.is_planned)


def written_config(var, settled: bool = True) -> PlannedConfig | None:
    """The config at which ``var``'s producer writes it, when it quantizes."""
    producer = var.producer if var is not None else None
    if producer is None or producer.quant is None:
        return None
    tqc = producer.quant.outputs[producer.outputs.index(var)]
    return tqc if quantizes(tqc, settled) else None


def reader_config(op, index: int, settled: bool = True) -> PlannedConfig | None:
    """``op``'s config for its input ``index``, when it quantizes."""
    tqc = op.quant.inputs[index] if op.quant is not None and index < len(op.quant.inputs) else None
    return tqc if quantizes(tqc, settled) else None


def reader_groups(var, settled: bool = True) -> dict[int, list[tuple[object, int, PlannedConfig]]]:
    """Quantizing reader configs of ``var`` by dominator: ``{id(dominator): [(op, index, tqc), ...]}``."""
    groups: dict[int, list] = {}
    for op in dict.fromkeys(var.consumers):
        for index, source in enumerate(op.inputs):
            tqc = reader_config(op, index, settled) if source is var else None
            if tqc is not None:
                groups.setdefault(id(tqc.dominator), []).append((op, index, tqc))
    return groups


@dataclass(frozen=True)
class Site:
    """One place a tensor is quantized, as an exporter writes it.

    ``kind``: "producer" (the pair after the producer, or for a graph input,
    at the input), "reader" (one more pair for readers with another dominator)
    or "parameter" (the stored copy one reader reads). ``readers`` are the
    ``(op, input index)`` that read this site's dequantized values.
    """

    kind: str
    tensor: object  # qtool.ir.Variable
    config: PlannedConfig
    readers: tuple[tuple[object, int], ...]


def sites(graph, settled: bool = True) -> Iterator[Site]:
    """Every site of ``graph``: parameters first (in ``graph.parameters()`` order), then activations in
    topological order (graph inputs first); the sites of one tensor come together, producer first."""
    for var in graph.parameters():
        for op, index, tqc in chain.from_iterable(reader_groups(var, settled).values()):
            yield Site("parameter", var, tqc, ((op, index),))
    for var in [*graph.inputs, *(v for op in graph.topological_order() for v in op.outputs)]:
        yield from activation_sites(var, settled)


def activation_sites(var, settled: bool = True) -> Iterator[Site]:
    """The pairs of activation ``var``: its producer's (read by every reader not in another group), then one per
    group of reader configs with another dominator."""
    written, groups = written_config(var, settled), reader_groups(var, settled)
    if written is not None:
        groups.pop(id(written.dominator), None)
        elsewhere = {(id(op), index) for members in groups.values() for op, index, _ in members}
        readers = tuple((op, i) for op in dict.fromkeys(var.consumers) for i, v in enumerate(op.inputs)
                        if v is var and (id(op), i) not in elsewhere)
        yield Site("producer", var, written, readers)
    for members in groups.values():
        yield Site("reader", var, members[0][2], tuple((op, index) for op, index, _ in members))
