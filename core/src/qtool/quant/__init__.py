"""Tensor quantization configs: policy bitmap, schemes, states and the maths."""

from .maths import compute_scale_offset, dequantize_codes, fake_quantize, quantize_to_codes, round_to_float_format
from .opconfig import OpQuantConfig
from .policy import QuantizationPolicy, QuantizationState, RoundingPolicy, validate_policy
from .scheme import QuantScheme, float_format_max
from .tensors import QuantizedTensor, quantized_tensors, representable_range
from .tqc import TensorQuantizationConfig

TQC = TensorQuantizationConfig

__all__ = [
    "OpQuantConfig", "QuantScheme", "QuantizedTensor", "QuantizationPolicy", "QuantizationState", "RoundingPolicy",
    "TQC",
    "TensorQuantizationConfig", "compute_scale_offset", "dequantize_codes", "fake_quantize",
    "float_format_max", "quantize_to_codes", "quantized_tensors", "representable_range", "round_to_float_format",
    "validate_policy",
]
