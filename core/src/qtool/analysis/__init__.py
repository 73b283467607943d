"""Error analysis of a quantized graph: graph-wise error and layer-wise sensitivity."""

from .analysis import OpError, graphwise_error, layerwise_sensitivity, output_error, quantized_ops
from .metrics import ErrorAccumulator

__all__ = ["ErrorAccumulator", "OpError", "graphwise_error", "layerwise_sensitivity", "output_error",
           "quantized_ops"]
