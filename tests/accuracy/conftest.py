"""Fixtures of the accuracy-pass tests (helpers live in accuracy_helpers.py)."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def one_thread():
    """Small convolutions with autograd run fastest, and reproducibly, on one thread."""
    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(saved)
