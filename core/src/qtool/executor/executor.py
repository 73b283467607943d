"""TorchExecutor: run a Graph with torch, in float or with quantization simulated."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager

import numpy as np
import torch

from ..errors import QtoolError
from ..ir import Graph
from . import feeds as feeding
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
        """Run on numpy inputs (a list in graph input order, or a dict by name); numpy outputs."""
        arrays = feeding.numpy_feeds(inputs, self.graph.inputs)
        with torch.inference_mode():
            tensors = {name: feeding.to_tensor(a, self.device) for name, a in arrays.items()}
            results = self._run(tensors, output_names)
            return [feeding.to_numpy(t) for t in results.values()]

    def forward_torch(self, feeds: Mapping[str, torch.Tensor], output_names: Sequence[str] | None = None
                      ) -> dict[str, torch.Tensor]:
        """Run on torch tensors by input name (moved to the device); tensors by output name."""
        checked = feeding.torch_feeds(feeds, self.graph.inputs)
        return self._run({n: t.to(self.device) for n, t in checked.items()}, output_names)

    def forward_variants(self, feeds: Mapping[str, torch.Tensor], variants: Sequence[Iterable[str]],
                         each: Callable[[int, dict[str, torch.Tensor]], None]) -> dict[str, torch.Tensor]:
        """The graph outputs of one float run on ``feeds`` (torch tensors by input name); ``each(number, outputs)``
        gets the outputs of each variant (a set of ops run in float, the rest with quantization simulated, as
        ``mode(quantize=True, float_ops=variant)`` runs them) as soon as it is done.

        The steps before a variant's first simulated step compute what the float run computes: each variant
        starts from the float run's tensors there, so that its result is the one a whole run gives, for the
        cost of the steps after that point. Hooks see every step run: the float run's and each variant's.
        """
        _count_run()
        checked = feeding.torch_feeds(feeds, self.graph.inputs)
        names = tuple(v.name for v in self.graph.outputs)
        schedule = self._plan.schedule(names)
        feeding.require(checked, schedule.needed_inputs)
        env = list(self._params)
        for name, tensor in checked.items():
            env[self._plan.slot_of[name]] = tensor.to(self.device)
        starts: dict[int, list[tuple[int, dict[int, StepQuant]]]] = {}
        for number, variant in enumerate(variants):
            actions = self._variant_actions(frozenset(variant))
            first = next((p for p, step in enumerate(schedule.steps) if step.index in actions), len(schedule.steps))
            starts.setdefault(first, []).append((number, actions))
        done = 0
        with full_float32(self.device):
            for position in sorted(starts):
                self._execute(schedule, env, {}, done, position)
                done = position
                for number, actions in starts[position]:
                    branch = list(env)
                    self._execute(schedule, branch, actions, position, len(schedule.steps))
                    each(number, {name: branch[slot] for name, slot in zip(names, schedule.outputs, strict=True)})
            self._execute(schedule, env, {}, done, len(schedule.steps))
        return {name: env[slot] for name, slot in zip(names, schedule.outputs, strict=True)}

    def _run(self, feeds: dict[str, torch.Tensor], output_names: Sequence[str] | None) -> dict[str, torch.Tensor]:
        _count_run()
        names = tuple(v.name for v in self.graph.outputs) if output_names is None else tuple(output_names)
        schedule = self._plan.schedule(names)
        feeding.require(feeds, schedule.needed_inputs)
        env = list(self._params)
        for name, tensor in feeds.items():
            env[self._plan.slot_of[name]] = tensor
        actions = self._step_actions()[0] if self.quantize else {}
        with full_float32(self.device):
            self._execute(schedule, env, actions, 0, len(schedule.steps))
        return {name: env[slot] for name, slot in zip(names, schedule.outputs, strict=True)}

    def _execute(self, schedule: Schedule, env: list, actions: dict[int, StepQuant], begin: int, end: int) -> None:
        """Steps ``begin`` to ``end`` (positions in ``schedule``) on ``env``, freeing slots no later step reads."""
        hooks = self._hooks
        for step, frees in zip(schedule.steps[begin:end], schedule.frees[begin:end], strict=True):
            args = [None if slot is None else env[slot] for slot in step.inputs]
            todo = actions.get(step.index)
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
            for slot, tensor in zip(step.outputs, results, strict=False):
                env[slot] = tensor
            if hooks:
                hooks(step.op, args, list(results))
            for slot in frees:
                env[slot] = None

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
