"""The text platform passes the plugin contract of qtool.testing."""

from qtool.testing import PlatformContract


class TestTextContract(PlatformContract):
    platform_name = "text"
