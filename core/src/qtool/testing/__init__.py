"""The plugin author's kit: tiny models, hand-calibrated graphs and the platform contract.

Installed with qtool as a pytest plugin (entry point ``pytest11``), so its
fixtures (``qtool_small_model``, ``qtool_calibrated_graph``) are available in
any test suite; subclass :class:`PlatformContract` to run the contract on your
platform, or call :func:`check_platform` for a list of problems.
"""

from .contract import (
    PlatformContract,
    awkward_graph,
    check_capabilities,
    check_default_config,
    check_export,
    check_pipeline,
    check_platform,
    check_registration,
    check_validate,
)
from .handmade import INT8, INT8_PER_CHANNEL, made_up_range, quantize_by_hand, retarget
from .models import SMALL_MODEL_INPUT, calibration_file, random_inputs, small_model, small_model_proto
from .numerics import dequantize, simulate

__all__ = [
    "INT8", "INT8_PER_CHANNEL", "PlatformContract", "SMALL_MODEL_INPUT", "awkward_graph", "calibration_file",
    "check_capabilities", "check_default_config", "check_export", "check_pipeline", "check_platform",
    "check_registration", "check_validate", "dequantize", "made_up_range", "quantize_by_hand", "random_inputs",
    "retarget", "simulate", "small_model", "small_model_proto",
]
