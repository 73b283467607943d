"""qtool.quantize called from several threads at once: each call returns its own diagnostics and agreement, and the
process's warning filters stay as they were (runs take turns: see qtool.one_at_a_time)."""

from __future__ import annotations

import threading
import warnings

import numpy as np
import qtool

UNREACHABLE = {"accuracy": {"fallback": {"min_snr_db": 200}}}  # the fallback warns that it cannot meet it


def test_concurrent_calls_keep_their_own_diagnostics_and_leave_the_warning_filters(cnn_model, calib_npz, tmp_path):
    filters = list(warnings.filters)
    codes: dict[str, list] = {"budget": [], "plain": []}
    skipped: list[bool] = []
    failures: list[BaseException] = []

    def calls(kind: str, config, count: int) -> None:
        try:
            for number in range(count):
                result = qtool.quantize(cnn_model, "onnxruntime", calib_npz, config=config,
                                        output=tmp_path / f"{kind}{number}.onnx")
                codes[kind].append(sorted({d.code for d in result.diagnostics if d.severity.value == "warning"}))
                if kind == "plain":
                    skipped.append("skipped" in result.agreement)
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            failures.append(exc)

    threads = [threading.Thread(target=calls, args=("budget", UNREACHABLE, 2)),
               threading.Thread(target=calls, args=("plain", None, 4))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert failures == []
    assert all("fallback-budget" in found for found in codes["budget"]) and len(codes["budget"]) == 2
    assert all("fallback-budget" not in found for found in codes["plain"]) and len(codes["plain"]) == 4
    assert skipped == [True] * 4  # another thread's simulation runs are not this call's
    assert warnings.filters == filters


def test_a_calibration_generator_may_call_qtool_itself(cnn_model):
    """Calibration reads the user's generator in a thread of its own: a qtool call there waited for the run that
    was waiting for it (a deadlock a reviewer found)."""
    planned = []

    def samples():
        for i in range(8):
            if i == 2:
                planned.append(qtool.explain(cnn_model, "onnxruntime"))
            yield {"x": np.random.default_rng(i).standard_normal((1, 3, 8, 8)).astype(np.float32)}

    done: list = []
    worker = threading.Thread(target=lambda: done.append(qtool.quantize(cnn_model, "onnxruntime", samples())),
                              daemon=True)
    worker.start()
    worker.join(timeout=120)
    assert not worker.is_alive() and len(done) == 1 and len(planned) == 1
