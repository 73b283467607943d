"""AIMET / QNN encodings for qtool: platforms ``aimet`` (format 0.6.1) and ``aimet-1.0`` (format 1.0.0)."""

from .encodings import encodings_document
from .platform import Aimet1Platform, AimetPlatform

__all__ = ["Aimet1Platform", "AimetPlatform", "encodings_document"]
