"""Errors this platform raises."""

from qtool import QtoolError


class OnnxRuntimeExportError(QtoolError):
    """The graph cannot be written as an ONNX Runtime QDQ model (the message names op, tensor or opset)."""
