"""Platforms registered for one test straight into the registry (as qtool's core would), then dropped."""

import pytest
from qtool.platform import PLATFORMS


@pytest.fixture
def register_platform():
    def register(cls):
        PLATFORMS.entries()
        PLATFORMS.add(cls.name, cls, None)
        return cls.name

    yield register
    PLATFORMS.clear()
