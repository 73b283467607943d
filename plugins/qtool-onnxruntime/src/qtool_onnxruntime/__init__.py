"""qtool platforms for ONNX Runtime: ``onnxruntime`` (float bias) and ``onnxruntime-int32bias``."""

from .platform import OnnxRuntimeInt32BiasPlatform, OnnxRuntimePlatform

__all__ = ["OnnxRuntimeInt32BiasPlatform", "OnnxRuntimePlatform"]
