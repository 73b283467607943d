"""Running graphs: input checks, unsupported ops, op failures, outputs, freeing, hooks, devices."""

from __future__ import annotations

import gc
import weakref

import ml_dtypes
import numpy as np
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper
from qtool import QtoolError
from qtool.executor import ExecutorError, InputError, OpExecutionError, TorchExecutor, UnsupportedOpsError
from qtool.ir import from_model_proto


def make_graph(nodes, inputs, outputs, inits=(), opset=17, extra_opsets=()):
    graph = helper.make_graph(nodes, "g", inputs, outputs, list(inits))
    opsets = [helper.make_opsetid("", opset), *(helper.make_opsetid(d, v) for d, v in extra_opsets)]
    return from_model_proto(helper.make_model(graph, opset_imports=opsets))


def chain_graph():
    """x [batch, 4] float, m [batch, 4] int64 -> a=Relu(x) -> b=Neg(a) -> c=Exp(b) -> y=Add(c, cast(m))."""
    nodes = [helper.make_node("Relu", ["x"], ["a"], "relu"), helper.make_node("Neg", ["a"], ["b"], "neg"),
             helper.make_node("Exp", ["b"], ["c"], "exp"), helper.make_node("Cast", ["m"], ["mf"], "cast", to=1),
             helper.make_node("Add", ["c", "mf"], ["y"], "add")]
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4]),
              helper.make_tensor_value_info("m", TensorProto.INT64, ["batch", 4])]
    return make_graph(nodes, inputs, [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])


X = np.arange(8, dtype=np.float32).reshape(2, 4) - 3
M = np.ones((2, 4), dtype=np.int64)
EXPECTED = np.exp(-np.maximum(X, 0)) + 1


def test_list_dict_and_torch_inputs_agree():
    executor = TorchExecutor(chain_graph())
    np.testing.assert_allclose(executor.forward([X, M])[0], EXPECTED, rtol=1e-6)
    np.testing.assert_allclose(executor.forward({"m": M, "x": X})[0], EXPECTED, rtol=1e-6)
    out = executor.forward_torch({"x": torch.from_numpy(X), "m": torch.from_numpy(M)})
    assert list(out) == ["y"] and isinstance(out["y"], torch.Tensor)
    np.testing.assert_allclose(out["y"].numpy(), EXPECTED, rtol=1e-6)


def test_a_sequence_output_comes_back_as_a_list_of_arrays():
    """forward() on a SplitToSequence's output used to fail ('list' object has no attribute 'detach')."""
    graph = make_graph([helper.make_node("SplitToSequence", ["x"], ["s"], axis=1)],
                       [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
                       [helper.make_tensor_sequence_value_info("s", TensorProto.FLOAT, None)])

    (pieces,) = TorchExecutor(graph).forward({"x": X})

    assert isinstance(pieces, list) and len(pieces) == 4
    assert all(np.array_equal(piece, X[:, k:k + 1]) for k, piece in enumerate(pieces))


@pytest.mark.parametrize("feeds,message", [
    ({"x": X}, "missing input 'm' (expected int64 [batch, 4])"),
    ({"x": X, "m": M, "z": X}, "unknown input 'z'; the model's inputs are: x, m"),
    ([X], "1 input(s) given, the model takes 2: x, m"),
    ({"x": X[0], "m": M}, "input 'x' has rank 1 [4], expected float32 [batch, 4]"),
    ({"x": X.astype(np.float64), "m": M}, "input 'x' has dtype float64, expected float32 [batch, 4]"),
    ({"x": np.zeros((2, 5), np.float32), "m": M}, "input 'x' has shape [2, 5], expected float32 [batch, 4]"),
    ({"x": torch.from_numpy(X), "m": M}, "input 'x': forward() takes numpy arrays"),
])
def test_bad_inputs_get_one_clear_error(feeds, message):
    with pytest.raises(InputError) as info:
        TorchExecutor(chain_graph()).forward(feeds)
    assert message in str(info.value)
    assert isinstance(info.value, QtoolError)


def test_bad_torch_input_dtype_is_named():
    with pytest.raises(InputError, match="input 'm' has dtype int32, expected int64"):
        TorchExecutor(chain_graph()).forward_torch({"x": torch.from_numpy(X), "m": torch.ones(2, 4, dtype=torch.int32)})


def test_first_axis_may_differ_from_a_static_batch():
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])]
    graph = make_graph([helper.make_node("Relu", ["x"], ["y"], "relu")], inputs,
                       [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    assert TorchExecutor(graph).forward([X])[0].shape == (2, 4)


def test_op_failure_names_the_node():
    """A Reshape to a fixed batch-1 shape cannot take a batch of 2."""
    shape = numpy_helper.from_array(np.array([1, 4], np.int64), "shape")
    graph = make_graph([helper.make_node("Reshape", ["x", "shape"], ["y"], "fixed_reshape")],
                       [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                       [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], [shape])
    with pytest.raises(OpExecutionError, match=r"node 'fixed_reshape' \(Reshape\) failed: RuntimeError"):
        TorchExecutor(graph).forward([X])


def test_unsupported_ops_are_reported_before_running():
    nodes = [helper.make_node("Relu", ["x"], ["a"], "relu"),
             helper.make_node("Frobnicate", ["a"], ["b"], "frob1", domain="com.example"),
             helper.make_node("Frobnicate", ["b"], ["c"], "frob2", domain="com.example"),
             helper.make_node("Wibble", ["c"], ["y"], "wib")]
    graph = make_graph(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                       [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                       opset=13, extra_opsets=[("com.example", 1)])
    with pytest.raises(UnsupportedOpsError) as info:
        TorchExecutor(graph)
    assert str(info.value) == ("unsupported op(s), no executor kernel and unknown to ONNX Runtime: "
                               "Wibble (node wib); com.example::Frobnicate (nodes frob1, frob2)")
    assert info.value.missing == {("", "Wibble"): ["wib"], ("com.example", "Frobnicate"): ["frob1", "frob2"]}


def test_intermediate_outputs_run_only_what_they_need():
    executor = TorchExecutor(chain_graph())
    ran = []
    executor.add_hook(lambda op, ins, outs: ran.append(op.name))
    a, b = executor.forward({"x": X}, output_names=["a", "b"])  # m is not needed for these
    np.testing.assert_array_equal(a, np.maximum(X, 0))
    np.testing.assert_array_equal(b, -np.maximum(X, 0))
    assert ran == ["relu", "neg"]
    with pytest.raises(ExecutorError, match="unknown output 'nope'"):
        executor.forward([X, M], output_names=["nope"])


def test_intermediates_are_freed_after_their_last_reader():
    executor = TorchExecutor(chain_graph())
    refs, alive_at_add = {}, {}

    def hook(op, inputs, outputs):
        if op.name == "add":  # a (relu) and b (neg) have no reader left; c (exp) is add's input
            gc.collect()
            alive_at_add.update({name: ref() is not None for name, ref in refs.items()})
        refs[op.name] = weakref.ref(outputs[0])

    executor.add_hook(hook)
    executor.forward([X, M])
    assert alive_at_add == {"relu": False, "neg": False, "exp": True, "cast": True}


def test_hooks_run_in_order_and_can_be_removed():
    executor = TorchExecutor(chain_graph())
    calls = []
    first = executor.add_hook(lambda op, ins, outs: calls.append(("first", op.name)))
    executor.add_hook(lambda op, ins, outs: calls.append(("second", op.name)))
    executor.forward([X, M])
    assert calls[:2] == [("first", "relu"), ("second", "relu")] and len(calls) == 10
    first.remove()
    first.remove()
    calls.clear()
    executor.forward([X, M])
    assert [who for who, _ in calls] == ["second"] * 5


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_missing_cuda_is_a_clear_error():
    with pytest.raises(ExecutorError, match="device 'cuda' requested but CUDA is not available"):
        TorchExecutor(chain_graph(), device="cuda")


def test_unknown_device_is_a_clear_error():
    with pytest.raises(ExecutorError, match="unknown device 'gpu0'"):
        TorchExecutor(chain_graph(), device="gpu0")


@pytest.mark.parametrize("dtype", [ml_dtypes.bfloat16, ml_dtypes.float8_e4m3fn])
def test_bfloat16_and_float8_weights_inputs_and_outputs_keep_their_bits(dtype):
    """ml_dtypes' arrays reach torch bit for bit (numpy cannot hand them over) and come back as ml_dtypes."""
    rng = np.random.default_rng(0)
    elem = {ml_dtypes.bfloat16: TensorProto.BFLOAT16, ml_dtypes.float8_e4m3fn: TensorProto.FLOAT8E4M3FN}[dtype]
    w = rng.normal(0, 0.5, (4, 3)).astype(dtype)
    nodes = [helper.make_node("Cast", ["x"], ["xf"], "up", to=TensorProto.FLOAT),
             helper.make_node("Cast", ["w"], ["wf"], "wup", to=TensorProto.FLOAT),
             helper.make_node("MatMul", ["xf", "wf"], ["m"], "mm"),
             helper.make_node("Cast", ["m"], ["y"], "down", to=elem)]
    graph = make_graph(nodes, [helper.make_tensor_value_info("x", elem, [2, 4])],
                       [helper.make_tensor_value_info("y", elem, [2, 3])], [numpy_helper.from_array(w, "w")])
    x = rng.normal(0, 0.5, (2, 4)).astype(dtype)
    (y,) = TorchExecutor(graph).forward({"x": x})
    assert y.dtype == np.dtype(dtype)
    expected = (x.astype(np.float32) @ w.astype(np.float32)).astype(dtype)
    np.testing.assert_array_equal(y.astype(np.float32), expected.astype(np.float32))


def test_an_input_of_a_narrow_type_given_in_that_type_is_held_in_its_container():
    """An int4 input given as an ml_dtypes int4 array (as onnx's own test data holds it) is the executor's int8
    container, not an error that read 'has dtype int4, expected int4'."""
    from qtool.executor.feeds import numpy_feeds

    graph = from_model_proto(helper.make_model(helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])], "g", [helper.make_tensor_value_info("x", TensorProto.INT4, [3])],
        [helper.make_tensor_value_info("y", TensorProto.INT4, [3])])))
    (held,) = numpy_feeds({"x": np.array([-8, 0, 7], dtype=ml_dtypes.int4)}, graph.inputs).values()
    assert held.dtype == np.int8 and held.tolist() == [-8, 0, 7]
    with pytest.raises(InputError, match="input 'x' has dtype float32, expected int4"):
        numpy_feeds({"x": np.zeros(3, np.float32)}, graph.inputs)
