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
from ..ir import Graph, Operation
from .metrics import ErrorAccumulator, OutputsError


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
        return {k: (None if isinstance(v, float) and not np.isfinite(v) else v) for k, v in asdict(self).items()}


def quantized_ops(graph: Graph) -> list[Operation]:
    return [op for op in graph.topological_order() if op.quant is not None and op.quant.quantized]


def _rows(ops: list[Operation], stats: Mapping[str, ErrorAccumulator | OutputsError]) -> list[OpError]:
    rows = [OpError(op.name, op.op_type, stats[op.name].snr_db, stats[op.name].cosine, stats[op.name].mse)
            for op in ops]
    return sorted(rows, key=lambda r: r.snr_db)  # worst first


def _to_device(sample: Mapping[str, np.ndarray], device: torch.device) -> dict[str, torch.Tensor]:
    return {name: torch.from_numpy(np.asarray(a)).to(device) for name, a in sample.items()}


def graphwise_error(executor: TorchExecutor, batches: Iterable[Mapping[str, np.ndarray]]) -> list[OpError]:
    """Per quantized op: its output in the quantized run vs the float run, worst SNR first."""
    ops = quantized_ops(executor.graph)
    wanted = {op.name for op in ops}
    stats = {name: ErrorAccumulator() for name in wanted}
    reference = {}

    def keep_reference(op, inputs, outputs):
        if op.name in wanted:
            reference[op.name] = outputs[0].detach().clone()

    def compare(op, inputs, outputs):
        if op.name in wanted:
            stats[op.name].update(reference[op.name], outputs[0])

    for batch in batches:
        feeds = _to_device(batch, executor.device)
        for mode, hook in ((False, keep_reference), (True, compare)):
            handle = executor.add_hook(hook)
            try:
                with executor.mode(quantize=mode), torch.inference_mode():
                    executor.forward_torch(feeds)
            finally:
                handle.remove()
        reference.clear()
    return _rows(ops, stats)


KEPT_BYTES = 256 << 20  # the most bytes of one batch's outputs kept for all ops while its float run ends


def layerwise_sensitivity(executor: TorchExecutor, batches: Iterable[Mapping[str, np.ndarray]],
                          ops: Iterable[Operation] | None = None) -> list[OpError]:
    """Per quantized op (or per op of ``ops``): graph-output error when only that op is quantized, at the worst
    floating-point output (:class:`OutputsError`), most sensitive first. :class:`NoFloatOutputError` where every
    graph output is integer or boolean.

    Each op's run starts from the float run's tensors (:meth:`TorchExecutor.forward_variants`): it runs only the
    steps its quantization changes. Its outputs are kept until the float outputs they are compared with are known, unless all ops' outputs together
    would pass ``KEPT_BYTES``: then the float outputs are computed first, in one more float run.
    """
    quantized = quantized_ops(executor.graph)
    names = {op.name for op in quantized}
    ops = quantized if ops is None else [op for op in ops if op.name in names]
    stats = {name: OutputsError() for name in names}
    variants = [names - {op.name} for op in ops]
    output_bytes = None  # of one batch's floating-point outputs, once known
    for batch in batches:
        feeds = _to_device(batch, executor.device)
        with torch.inference_mode():
            if output_bytes is None or output_bytes * len(ops) > KEPT_BYTES:
                with executor.mode(quantize=False):
                    reference = _floating(executor.forward_torch(feeds))
                output_bytes = _nbytes(reference)

                def compare(number: int, outputs: Mapping[str, torch.Tensor], reference=reference) -> None:
                    stats[ops[number].name].update(reference, outputs)

                executor.forward_variants(feeds, variants, compare)
                continue
            kept: dict[int, dict[str, torch.Tensor]] = {}

            def keep(number: int, outputs: Mapping[str, torch.Tensor], kept=kept) -> None:
                kept[number] = _floating(outputs)

            reference = _floating(executor.forward_variants(feeds, variants, keep))
            output_bytes = _nbytes(reference)
            for number, op in enumerate(ops):
                stats[op.name].update(reference, kept.pop(number))
    return _rows(ops, stats)


def output_error(executor: TorchExecutor, batches: Iterable[Mapping[str, np.ndarray]],
                 float_run: TorchExecutor | None = None) -> dict[str, ErrorAccumulator]:
    """Float vs quantized run at each floating-point graph output, by output name; ``float_run``: an executor of
    the float model where it is not ``executor``'s graph (``Graph.float_reference``)."""
    stats, float_run = OutputsError(), float_run or executor
    for batch in batches:
        feeds = _to_device(batch, executor.device)
        with torch.inference_mode():
            with float_run.mode(quantize=False):
                reference = float_run.forward_torch(feeds)
            with executor.mode(quantize=True):
                quantized = executor.forward_torch(feeds)
        stats.update(reference, quantized)
    return stats.outputs


def _floating(outputs: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The floating-point outputs, by name."""
    floats = {name: t.detach() for name, t in outputs.items() if t.is_floating_point()}
    if not floats:
        names = ", ".join(repr(name) for name in outputs)
        raise NoFloatOutputError(f"layer-wise sensitivity not measured: it is the error at the graph's floating-point "
                                 f"outputs, and every output of this graph ({names}) is integer or boolean")
    return floats


def _nbytes(outputs: Mapping[str, torch.Tensor]) -> int:
    return sum(t.numel() * t.element_size() for t in outputs.values())
