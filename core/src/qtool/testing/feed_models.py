"""Models that cannot be fed stacked samples, for calibration tests: a stateful recurrent step with inputs
``x [T, F]``, ``h``, ``c`` ``[1, 1, H]``, and a CNN whose batch of 1 is baked into a channel-shuffle Reshape.

Built from plain ops (MatMul, Add, Sigmoid, Tanh, Conv, Reshape...), so that they need no recurrent kernel.
"""

from __future__ import annotations

import os

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def _save(nodes, inputs, outputs, params, path: str | os.PathLike, name: str) -> str:
    opsets = [helper.make_opsetid("", 17)]
    model = helper.make_model(helper.make_graph(nodes, name, inputs, outputs, params), opset_imports=opsets,
                              ir_version=helper.find_min_ir_version_for(opsets))
    onnx.checker.check_model(model, full_check=True)
    onnx.save_model(model, path)
    return str(path)


def _params(rng, shapes: dict[str, tuple], scale: float) -> list[onnx.TensorProto]:
    return [numpy_helper.from_array(rng.normal(0, scale, shape).astype(np.float32), name)
            for name, shape in shapes.items()]


def _ints(values: dict[str, list[int]]) -> list[onnx.TensorProto]:
    return [numpy_helper.from_array(np.array(v, np.int64), name) for name, v in values.items()]


def recurrent_step_model(path: str | os.PathLike, features: int = 6, hidden: int = 8, classes: int = 5,
                         seed: int = 0) -> str:
    """One LSTM-like step over T frames: gates from the frames and the state (MatMul, Add, Sigmoid, Tanh);
    outputs per-frame scores ``y [T, classes]`` (a last MatMul) and the new state ``h_out``, ``c_out``."""
    f, h, k = features, hidden, classes
    rng = np.random.default_rng(seed)
    params = _params(rng, {"W": (f, 4 * h), "R": (h, 4 * h), "b": (4 * h,), "Wout": (4 * h, k)}, 0.4)
    params += _ints({"flat": [1, h], "cell": [1, 1, 4 * h], "quarters": [h] * 4})
    node = helper.make_node
    nodes = [
        node("MatMul", ["x", "W"], ["xw"]), node("Reshape", ["h", "flat"], ["h2"]), node("MatMul", ["h2", "R"], ["hr"]),
        node("Add", ["xw", "hr"], ["s"]), node("Add", ["s", "b"], ["gates"]),
        node("ReduceMean", ["gates"], ["mean"], axes=[0], keepdims=1), node("Reshape", ["mean", "cell"], ["g3"]),
        node("Split", ["g3", "quarters"], ["i", "f", "g", "o"], axis=2),
        node("Sigmoid", ["i"], ["si"]), node("Sigmoid", ["f"], ["sf"]), node("Tanh", ["g"], ["tg"]),
        node("Sigmoid", ["o"], ["so"]), node("Mul", ["sf", "c"], ["keep"]), node("Mul", ["si", "tg"], ["new"]),
        node("Add", ["keep", "new"], ["c_out"]), node("Tanh", ["c_out"], ["tc"]), node("Mul", ["so", "tc"], ["h_out"]),
        node("Tanh", ["gates"], ["act"]), node("MatMul", ["act", "Wout"], ["y"]),
    ]
    value = helper.make_tensor_value_info
    inputs = [value("x", TensorProto.FLOAT, ["T", f]), value("h", TensorProto.FLOAT, [1, 1, h]),
              value("c", TensorProto.FLOAT, [1, 1, h])]
    outputs = [value("y", TensorProto.FLOAT, ["T", k]), value("h_out", TensorProto.FLOAT, [1, 1, h]),
               value("c_out", TensorProto.FLOAT, [1, 1, h])]
    return _save(nodes, inputs, outputs, params, path, "recurrent_step")


def recurrent_feed(seed: int, features: int = 6, hidden: int = 8) -> dict[str, np.ndarray]:
    """One call of :func:`recurrent_step_model`: 4 to 8 frames, a state in [-1, 1]."""
    rng = np.random.default_rng(seed)
    return {"x": rng.standard_normal((4 + seed % 5, features)).astype(np.float32),
            "h": rng.uniform(-1, 1, (1, 1, hidden)).astype(np.float32),
            "c": rng.uniform(-1, 1, (1, 1, hidden)).astype(np.float32)}


def shuffle_batch1_model(path: str | os.PathLike, seed: int = 1, batch: int | str = 1) -> str:
    """Input ``x [batch, 3, 6, 6]``; Conv, a channel shuffle through Reshape to ``[1, 2, 4, 6, 6]`` (batch 1 baked
    in, whatever the input declares), Conv, pooling and a MatMul to ``y [batch, 4]``."""
    rng = np.random.default_rng(seed)
    params = _params(rng, {"w1": (8, 3, 3, 3), "b1": (8,), "w2": (8, 8, 1, 1), "b2": (8,), "fc": (8, 4)}, 0.3)
    params += _ints({"split": [1, 2, 4, 6, 6], "merge": [1, 8, 6, 6]})
    node = helper.make_node
    nodes = [node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]), node("Relu", ["c1"], ["r1"]),
             node("Reshape", ["r1", "split"], ["s5"]), node("Transpose", ["s5"], ["t5"], perm=[0, 2, 1, 3, 4]),
             node("Reshape", ["t5", "merge"], ["shuffled"]), node("Conv", ["shuffled", "w2", "b2"], ["c2"]),
             node("Relu", ["c2"], ["r2"]), node("GlobalAveragePool", ["r2"], ["p"]), node("Flatten", ["p"], ["flat"]),
             node("MatMul", ["flat", "fc"], ["y"])]
    value = helper.make_tensor_value_info
    return _save(nodes, [value("x", TensorProto.FLOAT, [batch, 3, 6, 6])],
                 [value("y", TensorProto.FLOAT, [batch, 4])], params, path, "shuffle_batch1")
