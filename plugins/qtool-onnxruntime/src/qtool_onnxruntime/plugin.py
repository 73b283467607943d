"""Entry point of group ``qtool``: registers ``onnxruntime`` and ``onnxruntime-int32bias``."""

import qtool

from .platform import OnnxRuntimeInt32BiasPlatform, OnnxRuntimePlatform


@qtool.hookimpl
def qtool_register_platforms(register):
    register(OnnxRuntimePlatform)
    register(OnnxRuntimeInt32BiasPlatform)
