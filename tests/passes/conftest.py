"""Fixtures of the pass tests (helpers live in passes_helpers.py)."""

from __future__ import annotations

import pytest
from qtool.config import resolve_config


@pytest.fixture
def make_config():
    """make_config(**user_keys) -> a resolved QuantConfig over the built-in defaults."""

    def make(**user):
        return resolve_config({}, user)

    return make
