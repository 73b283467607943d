"""Error analysis of a quantized graph: graph-wise error and layer-wise sensitivity.

The names are imported on first use: :mod:`.analysis` runs the torch executor, :mod:`.float_gap` and
:mod:`.metrics` (the pipeline's summary) need no torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..lazy import lazy_names

_EXPORTS = {
    ".analysis": ["GraphwiseError", "LayerwiseSensitivity", "Measurements", "NoFloatOutputError", "OpError",
                  "graphwise_error", "layerwise_sensitivity", "measure", "output_error", "quantized_ops"],
    ".metrics": ["ErrorAccumulator", "OutputsError", "json_number", "jsonable", "nonfinite_split", "output_array",
                 "snr_text"],
}
__all__, __getattr__, __dir__ = lazy_names(__name__, _EXPORTS)

if TYPE_CHECKING:
    from .analysis import (
        GraphwiseError,
        LayerwiseSensitivity,
        Measurements,
        NoFloatOutputError,
        OpError,
        graphwise_error,
        layerwise_sensitivity,
        measure,
        output_error,
        quantized_ops,
    )
    from .metrics import (
        ErrorAccumulator,
        OutputsError,
        json_number,
        jsonable,
        nonfinite_split,
        output_array,
        snr_text,
    )
