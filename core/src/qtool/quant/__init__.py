"""Tensor quantization configs: policy bitmap, schemes, the plan (states, status checks, sites) and the maths
(numpy, or torch for torch tensors: none of it imports torch)."""

from .maths import (
    compute_scale_offset,
    dequantize_codes,
    fake_quantize,
    full_range_blocks,
    quantize_to_codes,
    round_array,
    round_to_float_format,
)
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

__all__ = [
    "BAKED_STATES", "OpQuantConfig", "PlannedConfig", "QuantScheme", "QuantizationPolicy", "QuantizationState",
    "QuantizedTensor", "RoundingPolicy", "Site", "TQC", "TensorQuantizationConfig", "activation_sites",
    "compute_scale_offset", "configured", "dequantize_codes", "fake_quantize", "float_format_max", "full_range_blocks",
    "quantize_to_codes", "quantized_tensors", "quantizes", "reader_config", "reader_groups", "representable_range", "round_array",
    "round_to_float_format", "sites", "written_config",
]

