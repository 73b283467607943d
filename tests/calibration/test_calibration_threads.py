"""one_thread: observers' arithmetic on one torch thread, the caller's count restored."""

from __future__ import annotations

import pytest
import torch
from qtool.calibration.threads import one_thread


def test_one_thread_inside_and_the_count_restored_after_an_error():
    saved = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        with pytest.raises(RuntimeError), one_thread():
            assert torch.get_num_threads() == 1
            raise RuntimeError("inside")
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(saved)


def test_pass_threads_follows_the_environment(monkeypatch):
    from qtool.calibration.threads import ENV, pass_threads
    from qtool.errors import QtoolError

    monkeypatch.setenv(ENV, "3")
    assert pass_threads() == 3
    monkeypatch.setenv(ENV, "zero")
    with pytest.raises(QtoolError, match="environment variable QTOOL_NUM_THREADS: must be a whole number >= 1"):
        pass_threads()
    monkeypatch.delenv(ENV)
    assert 1 <= pass_threads() <= max(torch.get_num_threads(), 1)
