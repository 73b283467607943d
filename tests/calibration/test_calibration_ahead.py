"""OneAhead: items in order, one computed ahead at most and only once asked for, errors (onnxruntime's too) reach
the caller, no thread outlives the block."""

from __future__ import annotations

import threading
import time

import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper
from qtool.calibration import ort_engine
from qtool.calibration.ahead import OneAhead


def _ahead_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("qtool-ahead")]


def _counted(n: int, started: list[int]):
    for i in range(n):
        started.append(i)
        yield i


def test_items_come_in_order_with_at_most_one_computed_ahead_once_asked_for():
    started: list[int] = []
    seen = []
    with OneAhead(_counted(6, started)) as items:
        for item in items:
            assert len(started) == item + 1  # nothing ahead before it is asked for
            items.ahead()
            items.ahead()  # under way already: no second one
            seen.append(item)
            deadline = time.monotonic() + 10
            while len(started) < min(item + 2, 6) and time.monotonic() < deadline:  # the next one computes meanwhile
                time.sleep(0.001)
            assert len(started) == min(item + 2, 6)
    assert seen == list(range(6)) and not _ahead_threads()


def _relu_session() -> ort.InferenceSession:
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 4])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


def test_an_onnxruntime_error_in_the_thread_reaches_the_caller_after_the_items_before_it():
    session = _relu_session()
    feeds = [np.ones((2, 4), np.float32), -np.ones((1, 4), np.float32), np.ones((2, 3), np.float32)]  # bad shape
    got = []
    with pytest.raises(ort_engine.ORT_ERRORS, match="[Ii]nvalid"), \
            OneAhead(session.run(["y"], {"x": x})[0] for x in feeds) as items:
        for y in items:
            items.ahead()
            got.append(y)
    assert [g.tolist() for g in got] == [[[1.0] * 4] * 2, [[0.0] * 4]]
    assert not _ahead_threads()


def test_a_caller_that_stops_early_or_raises_leaves_no_thread():
    with OneAhead(iter(range(100))) as items:
        assert next(items) == 0
        items.ahead()
    assert not _ahead_threads()
    with pytest.raises(KeyError), OneAhead(iter(range(100))) as items:
        for item in items:
            items.ahead()
            raise KeyError(item)
    assert not _ahead_threads()
