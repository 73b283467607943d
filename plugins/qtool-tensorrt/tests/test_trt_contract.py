"""The tensorrt platform passes the plugin contract of qtool.testing."""

from qtool.testing import PlatformContract


class TestTensorRTContract(PlatformContract):
    platform_name = "tensorrt"
