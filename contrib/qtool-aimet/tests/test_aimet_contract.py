"""Both AIMET platforms pass the plugin contract of qtool.testing."""

from qtool.testing import PlatformContract


class TestAimetContract(PlatformContract):
    platform_name = "aimet"


class TestAimet1Contract(PlatformContract):
    platform_name = "aimet-1.0"
