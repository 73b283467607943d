"""Which steps a simulated variant of a float run must run again: those whose result can differ from the float run's.

A variant (some ops simulated, as :meth:`TorchExecutor.forward_variants` runs them) changes the tensors its
simulated steps write and, from there, the tensors of every step that reads a changed one. The other steps compute
exactly what the float run computes, so a variant runs only the changed steps, on the float run's tensors
elsewhere. A ``Shape`` or ``Size`` op reading a changed tensor is only checked: its result depends on the shape
alone, which the simulation leaves as it is unless an op's output shape depends on values (then the check fails
and the variant is run whole).
"""

from __future__ import annotations

from dataclasses import dataclass

from .plan import Schedule, Step

SHAPE_ONLY = frozenset({"Shape", "Size"})  # ops of the default domain whose output depends on the input's shape alone


@dataclass(frozen=True)
class Branch:
    """The steps of one variant that run again, and what they need from the float run."""

    positions: tuple[int, ...]  # in the schedule, in order: the changed steps and the checks
    checks: frozenset[int]  # positions of shape-only ops on a changed tensor: their result must be the float one
    frees: dict[int, tuple[int, ...]]  # per position: changed slots no later step of the branch (nor caller) reads
    reads: frozenset[int]  # the float run's slots the branch reads (parameters aside)
    ready: int  # the position by which the float run has computed every slot of ``reads``


def branch_of(schedule: Schedule, simulated: frozenset[int], parameters: frozenset[int]) -> Branch:
    """The branch of the variant that simulates the steps of index ``simulated`` (``parameters``: slots always
    loaded)."""
    positions, checks, changed = _changed_steps(schedule.steps, simulated)
    reads = {slot for p in positions for slot in schedule.steps[p].inputs
             if slot is not None and slot not in changed and slot not in parameters}
    reads |= {slot for p in checks for slot in schedule.steps[p].outputs}
    reads |= set(schedule.outputs) - changed - parameters
    produced = {slot: p for p, step in enumerate(schedule.steps) for slot in step.outputs}
    ready = max((produced.get(slot, -1) + 1 for slot in reads), default=0)
    return Branch(tuple(positions), frozenset(checks), _frees(schedule, positions, changed), frozenset(reads), ready)


def _changed_steps(steps: tuple[Step, ...], simulated: frozenset[int]) -> tuple[list[int], list[int], set[int]]:
    """The positions to run (changed steps and checks, in order), the checks, and the slots changed."""
    positions: list[int] = []
    checks: list[int] = []
    changed: set[int] = set()
    for position, step in enumerate(steps):
        if step.index not in simulated and not any(slot in changed for slot in step.inputs):
            continue
        positions.append(position)
        if step.index not in simulated and _shape_only(step):
            checks.append(position)
        else:
            changed.update(step.outputs)
    return positions, checks, changed


def _shape_only(step: Step) -> bool:
    return step.op.op_type in SHAPE_ONLY and step.op.domain in ("", "ai.onnx")


def _frees(schedule: Schedule, positions: list[int], changed: set[int]) -> dict[int, tuple[int, ...]]:
    """Per position of the branch: the changed slots it reads or writes last (graph outputs kept)."""
    last: dict[int, int] = {}
    for position in positions:
        step = schedule.steps[position]
        for slot in (*step.inputs, *step.outputs):
            if slot in changed:
                last[slot] = position
    frees: dict[int, list[int]] = {}
    for slot, position in last.items():
        if slot not in schedule.outputs:
            frees.setdefault(position, []).append(slot)
    return {position: tuple(slots) for position, slots in frees.items()}
