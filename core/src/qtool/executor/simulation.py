"""Where the executor fake-quantizes: one decision per op input and output.

A config is applied when it is quantizing and its op is simulated, except
* BAKED parameters, whose stored values are already on the grid: a simulated op
  reads the baked value, a float op the float one the executor loaded;
* a reader's config that shares the producer's parameters (overlapped, same
  scheme) when the producer already applied them: quantizing twice changes nothing.
Parameters are fake-quantized once and cached; activations per run.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field

import torch

from ..errors import QtoolError
from ..quant import TensorQuantizationConfig
from .errors import ExecutorError
from .fake_quant import Quantizer, is_dynamic, make_quantizer
from .feeds import to_tensor
from .plan import Step


@dataclass(frozen=True)
class Site:
    """One place a config is applied: ``op``'s input or output ``index`` (tensor ``tensor``)."""

    op: str
    side: str  # "input" or "output"
    index: int
    tensor: str
    kind: str  # "weight" (cached), "activation", "dynamic"


@dataclass
class StepQuant:
    inputs: dict[int, Quantizer] = field(default_factory=dict)  # activation inputs
    weights: dict[int, torch.Tensor] = field(default_factory=dict)  # parameters, already fake-quantized
    outputs: dict[int, Quantizer] = field(default_factory=dict)


class Simulation:
    """Per-step fake-quant actions for a set of float ops; quantizers cached by config until cleared."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self._quantizers: dict[TensorQuantizationConfig, Quantizer] = {}
        self._weights: dict[tuple[TensorQuantizationConfig | None, str], torch.Tensor] = {}

    def clear(self) -> None:
        self._quantizers.clear()
        self._weights.clear()

    def plan(self, steps: tuple[Step, ...], params: list, float_ops: frozenset[str]
             ) -> tuple[dict[int, StepQuant], list[Site]]:
        """Actions per step index (steps without any are left out) and the list of sites."""
        actions: dict[int, StepQuant] = {}
        sites: list[Site] = []
        applied: dict[str, TensorQuantizationConfig] = {}  # tensor -> config its producer applied
        for step in steps:
            op, config = step.op, step.op.quant
            if config is None or op.name in float_ops:
                continue
            todo = StepQuant()
            for i, (var, tqc) in enumerate(zip(op.inputs, config.inputs, strict=False)):
                if var is not None and var.float_value is not None and tqc is not None and tqc.is_settled:
                    todo.weights[i] = self._baked(var, params[step.inputs[i]])
                    continue
                if var is None or not _applies(tqc) or _already_applied(tqc, applied.get(var.name)):
                    continue
                with _naming(op.name, var.name):
                    if var.is_parameter:
                        todo.weights[i] = self._weight(tqc, var.name, params[step.inputs[i]])
                    else:
                        todo.inputs[i] = self._quantizer(tqc)
                sites.append(Site(op.name, "input", i, var.name, "weight" if var.is_parameter else _kind(tqc)))
            for j, (var, tqc) in enumerate(zip(op.outputs, config.outputs, strict=False)):
                if _applies(tqc):
                    with _naming(op.name, var.name):
                        todo.outputs[j] = self._quantizer(tqc)
                    applied[var.name] = tqc
                    sites.append(Site(op.name, "output", j, var.name, _kind(tqc)))
            if todo.inputs or todo.weights or todo.outputs:
                actions[step.index] = todo
        return actions, sites

    def _quantizer(self, tqc: TensorQuantizationConfig) -> Quantizer:
        if tqc not in self._quantizers:
            self._quantizers[tqc] = make_quantizer(tqc, self.device)
        return self._quantizers[tqc]

    def _baked(self, var, float_tensor: torch.Tensor) -> torch.Tensor:
        """The baked value of ``var``, laid out in memory like its float tensor."""
        key = (None, var.name)
        if key not in self._weights:
            self._weights[key] = torch.empty_like(float_tensor).copy_(to_tensor(var.value, self.device))
        return self._weights[key]

    def _weight(self, tqc: TensorQuantizationConfig, name: str, value: torch.Tensor) -> torch.Tensor:
        key = (tqc, name)
        if key not in self._weights:
            self._weights[key] = self._quantizer(tqc)(value)
        return self._weights[key]


@contextmanager
def _naming(op: str, tensor: str):
    """Report a config that cannot be applied with the op and tensor it belongs to."""
    try:
        yield
    except QtoolError:
        raise
    except Exception as exc:  # noqa: BLE001 - a bad scale shape, a failing passive rule ...
        raise ExecutorError(f"op {op!r}, tensor {tensor!r}: cannot apply its quantization config "
                            f"({type(exc).__name__}: {exc})") from exc


def _applies(tqc: TensorQuantizationConfig | None) -> bool:
    return tqc is not None and tqc.is_settled and not tqc.is_baked


def _already_applied(tqc: TensorQuantizationConfig, producer: TensorQuantizationConfig | None) -> bool:
    return (producer is not None and tqc.is_overlapped and tqc.dominator is producer.dominator
            and tqc.scheme == producer.scheme)


def _kind(tqc: TensorQuantizationConfig) -> str:
    return "dynamic" if is_dynamic(tqc) else "activation"
