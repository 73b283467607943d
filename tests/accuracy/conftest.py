"""Fixtures of the accuracy-pass tests (helpers live in accuracy_helpers.py)."""

from __future__ import annotations

import pytest
import torch
from accuracy_helpers import samples


@pytest.fixture(autouse=True)
def one_thread():
    """Small convolutions with autograd run fastest, and reproducibly, on one thread."""
    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(saved)


@pytest.fixture
def calib():
    """32 calibration samples of shape (8, 16) (8 tokens of width 16), in batches of 16 (a test module may
    define its own)."""
    return samples((8, 16), 32)


@pytest.fixture
def held_out():
    """32 other samples of the same shape."""
    return samples((8, 16), 32, seed=1)
