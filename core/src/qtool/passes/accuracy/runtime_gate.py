"""The quantized graph's output SNR measured on the target platform's runtime, without torch.

SensitivityFallback's ``enough_snr_db`` gate: the graph as calibrated (every quantized op quantized) is exported
and run by the platform (:class:`qtool.platform_runtime.PlatformRuntime`), and its floating-point outputs are
compared with the float graph's, computed by onnxruntime (:mod:`qtool.calibration.ort_engine`), over the same
samples. The SNR is the worst output's, summed over the samples, as the simulated measurement takes it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np

from ...analysis.metrics import OutputsError
from ...calibration import ort_engine
from ...calibration.threads import pass_threads
from ...ir import Graph
from ...platform import RuntimeUnavailable

if TYPE_CHECKING:
    from ...platform_runtime import PlatformRuntime


def runtime_snr_db(graph: Graph, batches: Sequence[Mapping[str, np.ndarray]], runtime: PlatformRuntime,
                   reference: Callable[[list[str]], list[dict[str, np.ndarray]] | None] = lambda names: None
                   ) -> tuple[float | None, str]:
    """The output SNR (dB) of ``graph`` run by ``runtime`` against its float outputs, over ``batches``, and the
    runtime's name; None and why where the graph cannot be measured so (the platform cannot export or run it
    here, onnxruntime cannot compute its float outputs, or no element was compared). ``reference(names)``: the float outputs of ``batches``
    where known already (calibration's run kept them, :meth:`qtool.calibration.KeptOutputs.batch_reference`),
    else None: onnxruntime computes them."""
    names = [v.name for v in graph.outputs]
    refused = ort_engine.refusal(graph, "cpu")
    if refused is not None:
        return None, f"no float reference from onnxruntime: {refused}"
    try:
        ran = runtime(graph, list(batches), names)
    except RuntimeUnavailable as exc:
        return None, str(exc)
    # after the runtime's session is gone: one session at a time
    expected = reference(names) or ort_engine.float_outputs(graph, batches, names, "cpu", threads=pass_threads())
    if expected is None:
        return None, "no float reference from onnxruntime: it cannot run the float graph"
    error = OutputsError()
    for floats, outputs in zip(expected, ran, strict=True):
        error.update(floats, dict(zip(names, outputs, strict=True)))
    if error.outputs and not error.compared:
        return None, ("no element to compare: every floating-point output is empty (a detector that kept no box) "
                      "or of another shape than the float model's")
    return error.snr_db, runtime.name
