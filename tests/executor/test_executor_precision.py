"""On CUDA the executor runs in full float32: TF32 off while it runs, the user's setting restored after."""

from __future__ import annotations

import pytest
import torch
from qtool.executor.precision import full_float32


def _tf32() -> tuple[bool, bool]:
    return torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32


@pytest.fixture
def tf32_on():
    """The user allows TF32 in cuDNN and cuBLAS; whatever was set before comes back after the test."""
    saved = _tf32()
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = True, True
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def test_tf32_is_off_inside_and_restored_after_on_cuda(tf32_on):
    with full_float32(torch.device("cuda")):
        assert _tf32() == (False, False)
    assert _tf32() == (True, True)


def test_settings_restored_when_the_run_fails(tf32_on):
    with pytest.raises(RuntimeError, match="op failed"), full_float32(torch.device("cuda")):
        raise RuntimeError("op failed")
    assert _tf32() == (True, True)


def test_cpu_runs_leave_the_settings_alone(tf32_on):
    with full_float32(torch.device("cpu")):
        assert _tf32() == (True, True)
