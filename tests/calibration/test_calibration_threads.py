"""threads/one_thread: torch's count for a block, the caller's restored, without importing torch; pass_threads."""

from __future__ import annotations

import json
import os
import subprocess
import sys

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


@pytest.mark.parametrize("omp", [None, "1", "64"])
def test_without_torch_loaded_nothing_imports_it_and_the_count_is_the_one_torch_starts_with(omp):
    script = ("import json, sys\n"
              "from qtool.calibration.threads import _torch_default_threads, one_thread, pass_threads\n"
              "with one_thread():\n"
              "    pass_threads()\n"
              "    count = _torch_default_threads()\n"
              "loaded = 'torch' in sys.modules\n"
              "import torch\n"
              "print(json.dumps([loaded, count, torch.get_num_threads()]))\n")
    env = {k: v for k, v in os.environ.items() if k not in ("QTOOL_NUM_THREADS", "MKL_NUM_THREADS", "OMP_NUM_THREADS")}
    env.update({"OMP_NUM_THREADS": omp} if omp else {})
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=True,
                         env=env)
    loaded, count, torch_count = json.loads(run.stdout.strip().splitlines()[-1])
    assert not loaded and count == torch_count


def test_a_torch_imported_inside_a_block_starts_with_its_count_and_gets_the_default_back():
    script = ("import json, sys\n"
              "from qtool.calibration import threads as t\n"
              "with t.threads(3):\n"
              "    with t.one_thread():\n"
              "        import torch.nn\n"
              "        inner = torch.get_num_threads()\n"
              "    outer = torch.get_num_threads()\n"
              "print(json.dumps([inner, outer, torch.get_num_threads(), t._torch_default_threads(),\n"
              "                  t._FINDER in sys.meta_path]))\n")
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=True)
    inner, outer, after, default, finder_left = json.loads(run.stdout.strip().splitlines()[-1])
    assert (inner, outer, after) == (1, 3, default) and not finder_left
