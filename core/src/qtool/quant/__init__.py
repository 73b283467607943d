"""Tensor quantization configs: policy bitmap, schemes, the plan (states, status checks, sites) and the maths.

The maths (torch) is imported on first use of one of its names, so that what only reads schemes and configs
(``qtool --help``, ``qtool list-platforms``, a plugin's registration) starts without torch.
"""

import importlib
from typing import TYPE_CHECKING

from .opconfig import OpQuantConfig
from .plan import (
    BAKED_STATES,
    PlannedConfig,
    Site,
    activation_sites,
    configured,
    quantizes,
    reader_config,
    reader_groups,
    sites,
    written_config,
)
from .policy import QuantizationPolicy, QuantizationState, RoundingPolicy
from .scheme import QuantScheme, float_format_max
from .tensors import QuantizedTensor, quantized_tensors, representable_range
from .tqc import TensorQuantizationConfig

TQC = TensorQuantizationConfig
_MATHS = ("compute_scale_offset", "dequantize_codes", "fake_quantize", "quantize_to_codes", "round_array",
          "round_to_float_format")

__all__ = [
    "BAKED_STATES", "OpQuantConfig", "PlannedConfig", "QuantScheme", "QuantizationPolicy", "QuantizationState",
    "QuantizedTensor", "RoundingPolicy", "Site", "TQC", "TensorQuantizationConfig", "activation_sites",
    "compute_scale_offset", "configured", "dequantize_codes", "fake_quantize", "float_format_max", "quantize_to_codes",
    "quantized_tensors", "quantizes", "reader_config", "reader_groups", "representable_range", "round_array",
    "round_to_float_format", "sites", "written_config",
]


def __getattr__(name: str):
    """A name of :mod:`qtool.quant.maths`, imported (with torch) on first use."""
    if name not in _MATHS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(".maths", __name__), name)
    globals()[name] = value
    return value


if TYPE_CHECKING:
    from .maths import (compute_scale_offset, dequantize_codes, fake_quantize, quantize_to_codes, round_array,
                        round_to_float_format)
