"""TorchExecutor: run a Graph with torch, in float or with quantization simulated."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager

import numpy as np
import torch

from ..errors import QtoolError
from ..ir import Graph, Operation
from . import feeds as feeding
from .branches import Branch, branch_of
from .errors import ExecutorError, OpExecutionError
from .hooks import HookFn, HookHandle, Hooks
from .plan import Plan, Schedule
from .plugin_ops import load_plugin_ops
from .precision import full_float32
from .simulation import Simulation, Site, StepQuant
from .support import check_supported

_runs = 0  # the graph runs of every TorchExecutor of this process: runs()


def runs() -> int:
    """How many graph runs (forward, forward_torch, forward_variants) the executors of this process made: the
    pipeline reads it to know whether a quantize run used qtool's simulation."""
    return _runs


def _count_run() -> None:
    global _runs
    _runs += 1


class TorchExecutor:
    """Runs ``graph`` op by op on ``device`` ("cpu", "cuda", "cuda:1" ...).

    ``quantize`` (default True) simulates every quantizing config; ``float_ops``
    names ops run in float; :meth:`mode` changes both for a block. Call :meth:`refresh` after configs, parameter values
    or the graph change: parameters and their fake-quantized values are cached.
    """

    def __init__(self, graph: Graph, device: str | torch.device = "cpu") -> None:
        load_plugin_ops()
        check_supported(graph)
        self.graph = graph
        self.device = torch_device(device)
        self.quantize = True
        self.float_ops: set[str] = set()
        self._hooks = Hooks()
        self._simulation = Simulation(self.device)
        self.refresh()

    # -- state ------------------------------------------------------------------------------
    @contextmanager
    def mode(self, *, quantize: bool | None = None, float_ops: Iterable[str] | None = None) -> Iterator[TorchExecutor]:
        """Run with ``quantize`` and/or ``float_ops`` set inside the ``with`` block; both are restored after it."""
        saved = self.quantize, self.float_ops
        if quantize is not None:
            self.quantize = quantize
        if float_ops is not None:
            self.float_ops = set(float_ops)
        try:
            yield self
        finally:
            self.quantize, self.float_ops = saved

    def refresh(self) -> None:
        """Rebuild the plan and drop cached parameters and quantizers."""
        self._plan = Plan(self.graph, self.device)
        with torch.inference_mode(False), torch.no_grad():
            self._params = self._load_parameters()
        self._simulation.clear()
        self._actions: tuple[frozenset[str], dict[int, StepQuant], list[Site]] | None = None
        self._variants: dict[frozenset[str], dict[int, StepQuant]] = {}
        self._branches: dict[tuple[tuple[int, ...], frozenset[str]], tuple[Branch, dict[int, StepQuant]]] = {}
        self._parameter_slots = frozenset(self._plan.slot_of[v.name] for v in self.graph.parameters())

    def _load_parameters(self) -> list[torch.Tensor | None]:
        params: list[torch.Tensor | None] = [None] * self._plan.num_slots
        for var in self.graph.parameters():
            if var.value.dtype == object:
                raise ExecutorError(f"parameter {var.name!r} holds strings, which torch cannot run")
            tensor = feeding.to_tensor(var.value if var.float_value is None else var.float_value, self.device)
            if tensor.ndim == 4 and any(op.op_type == "Conv" and op.inputs[1] is var for op in var.consumers):
                tensor = tensor.contiguous(memory_format=torch.channels_last)
            params[self._plan.slot_of[var.name]] = tensor
        return params

    def add_hook(self, fn: HookFn) -> HookHandle:
        """Call ``fn(op, inputs, outputs)`` after each op, with tensors as the op saw and wrote them."""
        return self._hooks.add(fn)

    @contextmanager
    def watching(self, hook: HookFn | None) -> Iterator[None]:
        """:meth:`add_hook` for the ``with`` block (nothing where ``hook`` is None)."""
        handle = None if hook is None else self.add_hook(hook)
        try:
            yield
        finally:
            if handle is not None:
                handle.remove()

    def fake_quant_sites(self) -> list[Site]:
        """Where a run with the current ``quantize`` and ``float_ops`` fake-quantizes."""
        return list(self._step_actions()[1]) if self.quantize else []

    def _step_actions(self) -> tuple[dict[int, StepQuant], list[Site]]:
        float_ops = frozenset(self.float_ops)
        if self._actions is None or self._actions[0] != float_ops:
            with torch.inference_mode(False), torch.no_grad():
                actions, sites = self._simulation.plan(self._plan.steps, self._params, float_ops)
            self._actions = (float_ops, actions, sites)
        return self._actions[1], self._actions[2]

    def _variant_actions(self, float_ops: frozenset[str]) -> dict[int, StepQuant]:
        """The actions per step of a simulated run with ``float_ops`` in float (kept until :meth:`refresh`)."""
        if float_ops not in self._variants:
            with torch.inference_mode(False), torch.no_grad():
                self._variants[float_ops] = self._simulation.plan(self._plan.steps, self._params, float_ops)[0]
        return self._variants[float_ops]

    # -- running ----------------------------------------------------------------------------
    def forward(self, inputs: Sequence | Mapping, output_names: Sequence[str] | None = None) -> list[np.ndarray]:
        """Run on numpy inputs (a list in graph input order, or a dict by name); numpy outputs (a sequence: a list
        of them; a map: a dict), one per name asked (a graph output listed twice comes twice)."""
        arrays = feeding.numpy_feeds(inputs, self.graph.inputs)
        names = [v.name for v in self.graph.outputs] if output_names is None else list(output_names)
        with torch.inference_mode():
            tensors = {name: feeding.to_tensor(a, self.device) for name, a in arrays.items()}
            results = self._run(tensors, names)
            return [feeding.output_value(results[name]) for name in names]

    def forward_torch(self, feeds: Mapping[str, torch.Tensor], output_names: Sequence[str] | None = None
                      ) -> dict[str, torch.Tensor]:
        """Run on torch tensors by input name (moved to the device); tensors by output name."""
        checked = feeding.torch_feeds(feeds, self.graph.inputs)
        return self._run({n: t.to(self.device) for n, t in checked.items()}, output_names)

    def forward_together(self, feeds: Sequence[Mapping[str, torch.Tensor]], output_names: Sequence[str],
                         stops: Iterable[str], reached: Callable[[Operation, list[list], list[list]], None]) -> None:
        """Run every feed dict (torch tensors by input name) up to ``output_names``, all of them step by step
        together: once an op named in ``stops`` has run on every feed, ``reached(op, inputs, outputs)`` gets its
        inputs and outputs per feed before any feed goes further (an output changed in place is what later ops
        read). Feeds of different shapes (text of several lengths) run side by side, none joined to another."""
        _count_run()
        schedule = self._plan.schedule(tuple(output_names))
        checked = [feeding.torch_feeds(f, self.graph.inputs) for f in feeds]
        for f in checked:
            feeding.require(f, schedule.needed_inputs)
        envs = [self._loaded_env(f) for f in checked]
        actions = self._step_actions()[0] if self.quantize else {}
        stops, done = set(stops), 0
        with full_float32(self.device):
            for end, step in enumerate(schedule.steps, 1):
                if step.op.name not in stops:
                    continue
                inputs, outputs = [], []

                def keep(op, args, results, stop=step.op, inputs=inputs, outputs=outputs):
                    if op is stop:
                        inputs.append(args)
                        outputs.append(results)

                with self.watching(keep):
                    for env in envs:
                        self._execute(schedule, env, actions, done, end)
                reached(step.op, inputs, outputs)
                done = end
            for env in envs:
                self._execute(schedule, env, actions, done, len(schedule.steps))

    def forward_variants(self, feeds: Mapping[str, torch.Tensor], variants: Sequence[Iterable[str]],
                         each: Callable[[int, dict[str, torch.Tensor]], None], watch: HookFn | None = None
                         ) -> dict[str, torch.Tensor]:
        """The graph outputs of one float run on ``feeds`` (torch tensors by input name); ``each(number, outputs)``
        gets the outputs of each variant (a set of ops run in float, the rest with quantization simulated, as
        ``mode(quantize=True, float_ops=variant)`` runs them) as soon as it is done.

        A variant runs only the steps whose result can differ from the float run's (:mod:`.branches`), on the
        float run's tensors elsewhere, so that its result is the one a whole run gives, for the cost of the steps
        it changes. The float run keeps the tensors a variant reads until that variant has run. Hooks see every
        step run: the float run's and each variant's; ``watch(op, inputs, outputs)`` the float run's alone.
        """
        _count_run()
        checked = feeding.torch_feeds(feeds, self.graph.inputs)
        names = tuple(v.name for v in self.graph.outputs)
        schedule = self._plan.schedule(names)
        feeding.require(checked, schedule.needed_inputs)
        env = self._loaded_env(checked)
        branches = [self._branch(schedule, frozenset(variant)) for variant in variants]
        ready: dict[int, list[int]] = {}
        for number, (branch, _) in enumerate(branches):
            ready.setdefault(branch.ready, []).append(number)
        frees, released = _held(schedule, [branch for branch, _ in branches])
        done = 0
        with full_float32(self.device):
            for position in sorted(ready):
                with self.watching(watch):
                    self._execute(schedule, env, {}, done, position, frees)
                done = position
                for number in ready[position]:
                    outputs = self._variant_outputs(schedule, env, *branches[number], checked)
                    each(number, dict(zip(names, outputs, strict=True)))
                for slot in released.get(position, ()):
                    env[slot] = None
            with self.watching(watch):
                self._execute(schedule, env, {}, done, len(schedule.steps), frees)
        return {name: env[slot] for name, slot in zip(names, schedule.outputs, strict=True)}

    def _branch(self, schedule: Schedule, float_ops: frozenset[str]) -> tuple[Branch, dict[int, StepQuant]]:
        """The branch of a variant and its actions per step (kept until :meth:`refresh`)."""
        key = (schedule.outputs, float_ops)
        if key not in self._branches:
            actions = self._variant_actions(float_ops)
            self._branches[key] = branch_of(schedule, frozenset(actions), self._parameter_slots), actions
        return self._branches[key]

    def _variant_outputs(self, schedule: Schedule, env: list, branch: Branch, actions: dict[int, StepQuant],
                         feeds: Mapping[str, torch.Tensor]) -> list[torch.Tensor]:
        """A variant's graph outputs: its branch on the float run's ``env``, or a whole run where a check fails."""
        slots = self._run_branch(schedule, env, branch, actions)
        if slots is None:
            slots = self._loaded_env(feeds)
            self._execute(schedule, slots, actions, 0, len(schedule.steps))
        return [slots[slot] for slot in schedule.outputs]

    def _run_branch(self, schedule: Schedule, env: list, branch: Branch, actions: dict[int, StepQuant]
                    ) -> list | None:
        """A copy of the float run's ``env`` with the branch's steps run on it, or None where a shape-only op's check
        fails."""
        slots, hooks = list(env), self._hooks
        for position in branch.positions:
            step = schedule.steps[position]
            args = [None if slot is None else slots[slot] for slot in step.inputs]
            results = self._step(step, args, actions.get(step.index), schedule)
            if position in branch.checks and not all(
                    torch.equal(r, env[slot]) for slot, r in zip(step.outputs, results, strict=False)):
                return None
            for slot, tensor in zip(step.outputs, results, strict=False):
                slots[slot] = tensor
            if hooks:
                hooks(step.op, args, list(results))
            for slot in branch.frees.get(position, ()):
                slots[slot] = None
        return slots

    def _run(self, feeds: dict[str, torch.Tensor], output_names: Sequence[str] | None) -> dict[str, torch.Tensor]:
        _count_run()
        names = tuple(v.name for v in self.graph.outputs) if output_names is None else tuple(output_names)
        schedule = self._plan.schedule(names)
        feeding.require(feeds, schedule.needed_inputs)
        env = self._loaded_env(feeds)
        actions = self._step_actions()[0] if self.quantize else {}
        with full_float32(self.device):
            self._execute(schedule, env, actions, 0, len(schedule.steps))
        return {name: env[slot] for name, slot in zip(names, schedule.outputs, strict=True)}

    def _loaded_env(self, feeds: Mapping[str, torch.Tensor]) -> list:
        """The slots at the start of a run: the parameters and ``feeds`` (on the device)."""
        env = list(self._params)
        for name, tensor in feeds.items():
            env[self._plan.slot_of[name]] = tensor.to(self.device)
        return env

    def _execute(self, schedule: Schedule, env: list, actions: dict[int, StepQuant], begin: int, end: int,
                 frees: Sequence[tuple[int, ...]] | None = None) -> None:
        """Steps ``begin`` to ``end`` (positions in ``schedule``) on ``env``, freeing slots no later step reads
        (``frees``: per position, where it is not the schedule's own)."""
        hooks = self._hooks
        frees = schedule.frees if frees is None else frees
        for step, freed in zip(schedule.steps[begin:end], frees[begin:end], strict=True):
            args = [None if slot is None else env[slot] for slot in step.inputs]
            results = self._step(step, args, actions.get(step.index), schedule)
            for slot, tensor in zip(step.outputs, results, strict=False):
                env[slot] = tensor
            if hooks:
                hooks(step.op, args, list(results))
            for slot in freed:
                env[slot] = None

    def _step(self, step, args: list, todo: StepQuant | None, schedule: Schedule) -> list:
        """One step's results, a failure reported with its node."""
        try:
            results = self._run_step(step, args, todo)
        except QtoolError:
            raise
        except Exception as exc:  # noqa: BLE001 - any op failure is reported with its node
            simulated = " with quantization simulated" if todo is not None else ""
            raise OpExecutionError(f"node {step.op.name!r} ({step.op.op_type}) failed{simulated}: "
                                   f"{type(exc).__name__}: {exc}") from exc
        if len(results) < len(step.outputs):
            self._check_missing(step, results, schedule)
        return results

    @staticmethod
    def _run_step(step, args: list, todo: StepQuant | None) -> list:
        """The op on ``args`` (inputs replaced by their fake-quantized values), outputs fake-quantized."""
        if todo is None:
            return step.fn(step.ctx, step.attrs, args)
        for i, tensor in todo.weights.items():
            args[i] = tensor
        for i, quantizer in todo.inputs.items():
            args[i] = quantizer(args[i])
        results = step.fn(step.ctx, step.attrs, args)
        return [todo.outputs[j](r) if j in todo.outputs else r for j, r in enumerate(results)]

    def _check_missing(self, step, results: list, schedule: Schedule) -> None:
        """An op returned fewer outputs than it declares: fine unless a later step or the caller reads one."""
        read = {s for later in schedule.steps for s in later.inputs} | set(schedule.outputs)
        for var, slot in list(zip(step.op.outputs, step.outputs, strict=True))[len(results):]:
            if slot in read:
                raise OpExecutionError(f"node {step.op.name!r} ({step.op.op_type}) did not produce output "
                                       f"{var.name!r}, which is used")


def torch_device(device: str | torch.device) -> torch.device:
    """``device`` as torch names it; an unknown one, or CUDA where none is available, is refused."""
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ExecutorError(f"unknown device {device!r}: {exc}") from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ExecutorError(f"device {str(device)!r} requested but CUDA is not available")
    return device


def _held(schedule: Schedule, branches: Sequence[Branch]) -> tuple[list[tuple[int, ...]], dict[int, list[int]]]:
    """The float run's frees per position with the slots branches read held back, and the held slots by the position
    whose branches free them (a branch at position ``p`` runs after the steps before ``p``)."""
    held: dict[int, int] = {}
    for branch in branches:
        for slot in branch.reads:
            held[slot] = max(held.get(slot, 0), branch.ready)
    frees: list[tuple[int, ...]] = []
    released: dict[int, list[int]] = {}
    for position, slots in enumerate(schedule.frees):
        kept = [slot for slot in slots if held.get(slot, 0) > position]
        frees.append(tuple(slot for slot in slots if slot not in kept))
        for slot in kept:
            released.setdefault(held[slot], []).append(slot)
    return frees, released
