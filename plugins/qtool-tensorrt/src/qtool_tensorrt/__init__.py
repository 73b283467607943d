"""qtool's TensorRT platform: per-tensor activation ranges as JSON and as a calibration cache."""

from .cache import read_cache, write_cache
from .errors import TensorRTError
from .platform import TensorRTPlatform
from .ranges import read_ranges, write_ranges

__all__ = ["TensorRTError", "TensorRTPlatform", "read_cache", "read_ranges", "write_cache", "write_ranges"]
