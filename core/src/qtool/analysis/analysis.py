"""Graph-wise error and layer-wise sensitivity of a quantized graph.

* graph-wise: every quantized op's output in the fully quantized run against
  the float run (error accumulated from everything upstream);
* layer-wise: quantize one op at a time and measure the error at the graph
  outputs (how much that op alone costs).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass

import numpy as np
import torch

from ..errors import QtoolError
from ..executor import TorchExecutor
from ..executor.feeds import output_tensor, to_tensor
from ..ir import Graph, Operation
from .metrics import ErrorAccumulator, OutputsError, json_number


class NoFloatOutputError(QtoolError):
    """The graph has no floating-point output: the error at its outputs cannot be measured (labels, indices)."""


@dataclass(frozen=True)
class OpError:
    op: str
    op_type: str
    snr_db: float
    cosine: float
    mse: float

    def as_dict(self) -> dict:
        return {k: (json_number(v) if isinstance(v, float) else v) for k, v in asdict(self).items()}


def quantized_ops(graph: Graph) -> list[Operation]:
    return [op for op in graph.topological_order() if op.quant is not None and op.quant.quantized]


def _rows(ops: list[Operation], stats: Mapping[str, ErrorAccumulator | OutputsError]) -> list[OpError]:
    rows = [OpError(op.name, op.op_type, stats[op.name].snr_db, stats[op.name].cosine, stats[op.name].mse)
            for op in ops]
    return sorted(rows, key=lambda r: r.snr_db)  # worst first


def _to_device(sample: Mapping[str, np.ndarray], device: torch.device) -> dict[str, torch.Tensor]:
    return {name: to_tensor(np.asarray(a), device) for name, a in sample.items()}


class GraphwiseError:
    """Per op of ``ops``: its first output in a simulated run against the float run before it, over the runs."""

    def __init__(self, ops: list[Operation]) -> None:
        self.ops = ops
        self._stats = {op.name: ErrorAccumulator() for op in ops}
        self._reference: dict[str, torch.Tensor] = {}

    def keep(self, op, inputs, outputs) -> None:
        """Hook of a float run: keeps the op's output."""
        if op.name in self._stats:
            self._reference[op.name] = outputs[0].detach().clone()

    def compare(self, op, inputs, outputs) -> None:
        """Hook of the simulated run that follows: adds the op's error."""
        if op.name in self._stats:
            self._stats[op.name].update(self._reference.pop(op.name), outputs[0])

    def rows(self) -> list[OpError]:
        return _rows(self.ops, self._stats)


def graphwise_error(executor: TorchExecutor, batches: Iterable[Mapping[str, np.ndarray]]) -> list[OpError]:
    """Per quantized op: its output in the quantized run vs the float run, worst SNR first."""
    graphwise = GraphwiseError(quantized_ops(executor.graph))
    for batch in batches:
        feeds = _to_device(batch, executor.device)
        with torch.inference_mode():
            _float_run(executor, feeds, graphwise.keep)
            _simulated_run(executor, feeds, graphwise.compare)
    return graphwise.rows()


KEPT_BYTES = 256 << 20  # the most bytes of one batch's outputs kept for all ops while its float run ends


class LayerwiseSensitivity:
    """Per quantized op of ``executor``'s graph (or per op of ``ops``): graph-output error when only that op is
    quantized, at the worst floating-point output (:class:`OutputsError`), added one batch at a time.

    Each op's run starts from the float run's tensors (:meth:`TorchExecutor.forward_variants`). Its outputs are
    kept until the float outputs they are compared with are known, unless all ops' outputs together would pass
    ``KEPT_BYTES``: then the float outputs are computed first, in one more float run (also on the first batch,
    where their size is not known yet).
    """

    def __init__(self, executor: TorchExecutor, ops: Iterable[Operation] | None = None) -> None:
        quantized = quantized_ops(executor.graph)
        names = {op.name for op in quantized}
        self.executor = executor
        self.ops = quantized if ops is None else [op for op in ops if op.name in names]
        self._stats = {name: OutputsError() for name in names}
        self._variants = [names - {op.name} for op in self.ops]
        self._output_bytes: int | None = None  # of one batch's floating-point outputs, once known

    def add(self, feeds: Mapping[str, torch.Tensor], watch=None) -> dict[str, torch.Tensor]:
        """Add one batch (torch tensors by input name, inside ``torch.inference_mode``); the float run's
        floating-point outputs. ``watch(op, inputs, outputs)`` sees the steps of one float run.
        :class:`NoFloatOutputError` after that run where every graph output is integer or boolean."""
        if self._output_bytes is None or self._output_bytes * len(self.ops) > KEPT_BYTES:
            reference = _floating(_float_run(self.executor, feeds, watch))
            self._output_bytes = _nbytes(reference)

            def compare(number: int, outputs: Mapping[str, torch.Tensor]) -> None:
                self._stats[self.ops[number].name].update(reference, _tensors(outputs))

            self.executor.forward_variants(feeds, self._variants, compare)
            return reference
        kept: dict[int, dict[str, torch.Tensor]] = {}

        def keep(number: int, outputs: Mapping[str, torch.Tensor]) -> None:
            kept[number] = _floating(outputs)

        reference = _floating(self.executor.forward_variants(feeds, self._variants, keep, watch))
        self._output_bytes = _nbytes(reference)
        for number, op in enumerate(self.ops):
            self._stats[op.name].update(reference, kept.pop(number))
        return reference

    def rows(self) -> list[OpError]:
        return _rows(self.ops, self._stats)


def layerwise_sensitivity(executor: TorchExecutor, batches: Iterable[Mapping[str, np.ndarray]],
                          ops: Iterable[Operation] | None = None) -> list[OpError]:
    """Per quantized op (or per op of ``ops``): graph-output error when only that op is quantized, at the worst
    floating-point output (:class:`LayerwiseSensitivity`), most sensitive first. :class:`NoFloatOutputError` where
    every graph output is integer or boolean."""
    layerwise = LayerwiseSensitivity(executor, ops)
    for batch in batches:
        with torch.inference_mode():
            layerwise.add(_to_device(batch, executor.device))
    return layerwise.rows()


@dataclass(frozen=True)
class Measurements:
    graphwise: list[OpError]
    layerwise: list[OpError]
    layerwise_unmeasured: str | None  # why ``layerwise`` is empty: no floating-point graph output
    outputs: dict[str, ErrorAccumulator]  # float vs simulated run, per floating-point graph output


def measure(executor: TorchExecutor, batches: Iterable[Mapping[str, np.ndarray]], *,
            float_run: TorchExecutor | None = None, watch=None) -> Measurements:
    """Graph-wise error, layer-wise sensitivity and the error at the outputs (:func:`output_error`), from one float
    run with the layer-wise variants and one simulated run per batch; ``watch(op, inputs, outputs)`` sees the steps
    of that float run. ``float_run``: as in :func:`output_error`, run once more per batch where given."""
    graphwise = GraphwiseError(quantized_ops(executor.graph))
    layerwise = LayerwiseSensitivity(executor)
    outputs, unmeasured = OutputsError(), None

    def float_step(op, inputs, results) -> None:
        graphwise.keep(op, inputs, results)
        if watch is not None:
            watch(op, inputs, results)

    for batch in batches:
        feeds = _to_device(batch, executor.device)
        with torch.inference_mode():
            if unmeasured is not None:
                reference = _float_run(executor, feeds, float_step)
            else:
                try:
                    reference = layerwise.add(feeds, float_step)
                except NoFloatOutputError as exc:  # raised after its float run: the rest goes on
                    reference, unmeasured = {}, str(exc)
            if float_run is not None:
                reference = _float_run(float_run, feeds)
            outputs.update(reference, _simulated_run(executor, feeds, graphwise.compare))
    return Measurements(graphwise.rows(), [] if unmeasured else layerwise.rows(), unmeasured, outputs.outputs)


def _float_run(executor: TorchExecutor, feeds: Mapping[str, torch.Tensor], hook=None) -> dict[str, torch.Tensor]:
    """The graph outputs of a float run; ``hook(op, inputs, outputs)`` sees its steps."""
    with executor.mode(quantize=False), executor.watching(hook):
        return _tensors(executor.forward_torch(feeds))


def _simulated_run(executor: TorchExecutor, feeds: Mapping[str, torch.Tensor], hook=None) -> dict[str, torch.Tensor]:
    """The graph outputs of a run with quantization simulated (but for the executor's ``float_ops``)."""
    with executor.mode(quantize=True), executor.watching(hook):
        return _tensors(executor.forward_torch(feeds))


def output_error(executor: TorchExecutor, batches: Iterable[Mapping[str, np.ndarray]],
                 float_run: TorchExecutor | None = None) -> dict[str, ErrorAccumulator]:
    """Float vs quantized run at each floating-point graph output, by output name; ``float_run``: an executor of
    the float model where it is not ``executor``'s graph (``Graph.float_reference``)."""
    stats, float_run = OutputsError(), float_run or executor
    for batch in batches:
        feeds = _to_device(batch, executor.device)
        with torch.inference_mode():
            stats.update(_float_run(float_run, feeds), _simulated_run(executor, feeds))
    return stats.outputs


def _tensors(outputs: Mapping) -> dict[str, torch.Tensor]:
    """Graph outputs as tensors, by name (a ZipMap's sequence of maps: its values, :func:`.output_tensor`)."""
    return {name: output_tensor(value) for name, value in outputs.items()}


def _floating(outputs: Mapping) -> dict[str, torch.Tensor]:
    """The floating-point outputs, by name."""
    floats = {name: t.detach() for name, t in _tensors(outputs).items() if t.is_floating_point()}
    if not floats:
        names = ", ".join(repr(name) for name in outputs)
        raise NoFloatOutputError(f"layer-wise sensitivity not measured: it is the error at the graph's floating-point "
                                 f"outputs, and every output of this graph ({names}) is integer or boolean")
    return floats


def _nbytes(outputs: Mapping[str, torch.Tensor]) -> int:
    return sum(t.numel() * t.element_size() for t in outputs.values())
