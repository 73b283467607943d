"""Quantization simulation: configs set by hand, checked against explicit numpy quantize/dequantize.

Power-of-2 scales keep every product and sum of the convolutions exact in
float32, so the executor and the reference must agree bit for bit.
"""

from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from onnx import TensorProto, helper, numpy_helper
from op_harness import TEST_DEVICE
from qtool.executor import ExecutorError, OpExecutionError, TorchExecutor
from qtool.executor.fake_quant import dynamic_params
from qtool.ir import from_model_proto
from qtool.quant import OpQuantConfig, QuantizationState, QuantScheme, TensorQuantizationConfig, compute_scale_offset

ACT = QuantScheme.integer(8, symmetric=False, power_of_2=True)
WEIGHT = QuantScheme.integer(8, per_channel=True, channel_axis=0, power_of_2=True)
BIAS = QuantScheme.integer(32, per_channel=True, channel_axis=0)
RANGES = {"x": (-3.0, 3.0), "c1": (-4.0, 4.0), "r1": (0.0, 4.0), "y": (-6.0, 6.0)}

rng = np.random.default_rng(0)
W1, B1 = (rng.standard_normal((4, 3, 3, 3)) * 0.3).astype(np.float32), (rng.standard_normal(4) * 0.1).astype(np.float32)
W2, B2 = (rng.standard_normal((2, 4, 1, 1)) * 0.5).astype(np.float32), (rng.standard_normal(2) * 0.1).astype(np.float32)


def conv_relu_conv_graph():
    """x -> conv1 -> c1 -> relu -> r1 -> conv2 -> y."""
    nodes = [helper.make_node("Conv", ["x", "W1", "B1"], ["c1"], "conv1", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c1"], ["r1"], "relu"),
             helper.make_node("Conv", ["r1", "W2", "B2"], ["y"], "conv2")]
    inits = [numpy_helper.from_array(a, n) for n, a in (("W1", W1), ("B1", B1), ("W2", W2), ("B2", B2))]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    return from_model_proto(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))


def activation(tensor: str, scheme: QuantScheme = ACT) -> TensorQuantizationConfig:
    tqc = TensorQuantizationConfig(scheme)
    tqc.set_params(*compute_scale_offset(scheme, *RANGES[tensor]))
    return tqc


def weight(value: np.ndarray) -> TensorQuantizationConfig:
    tqc = TensorQuantizationConfig(WEIGHT, role="weight")
    axes = tuple(range(1, value.ndim))
    tqc.set_params(*compute_scale_offset(WEIGHT, value.min(axes), value.max(axes)))
    return tqc


def bias(source: TensorQuantizationConfig, w: TensorQuantizationConfig) -> TensorQuantizationConfig:
    tqc = TensorQuantizationConfig(BIAS, role="bias")
    tqc.make_passive(lambda: (source.scale * w.scale, np.zeros(w.scale.shape, np.int32)))
    return tqc


def annotate(graph, first_input: TensorQuantizationConfig | None = None):
    """int8 configs on both convs' inputs, weights, biases and outputs; Relu stays float.

    A DYNAMIC input has no scale to derive an int32 bias from: that bias stays float.
    """
    ops = graph.operations
    for name, source, w_value, out in (("conv1", "x", W1, "c1"), ("conv2", "r1", W2, "y")):
        a_in = first_input if name == "conv1" and first_input is not None else activation(source)
        w = weight(w_value)
        b = bias(a_in, w) if a_in.scale is not None else None
        ops[name].quant = OpQuantConfig([a_in, w, b], [activation(out)])
    return graph


def fq(x: np.ndarray, tqc: TensorQuantizationConfig, scale=None, offset=None) -> np.ndarray:
    """numpy quantize/dequantize with round-half-even, per tensor or on axis 0."""
    scheme = tqc.scheme
    scale = np.asarray(tqc.scale if scale is None else scale, np.float32)
    offset = np.asarray(tqc.offset if offset is None else offset, np.float32)
    if scale.ndim:
        scale, offset = (p.reshape(-1, *[1] * (x.ndim - 1)) for p in (scale, offset))
    q = np.clip(np.round(x / scale) + offset, scheme.quant_min, scheme.quant_max)
    return ((q - offset) * scale).astype(np.float32)


def conv(x, w, b, padding=0) -> np.ndarray:
    return F.conv2d(*(torch.from_numpy(np.array(a)) for a in (x, w, b)), padding=padding).numpy()


def reference(graph, x: np.ndarray, float_ops=(), first_input=None) -> np.ndarray:
    """The annotated model computed step by step in numpy (convolutions by torch on the quantized values)."""
    h = x
    for name, padding in (("conv1", 1), ("conv2", 0)):
        a_in, w, b = graph.operations[name].quant.inputs
        out = graph.operations[name].quant.outputs[0]
        w_value, b_value = (graph.operations[name].inputs[i].value for i in (1, 2))
        if name in float_ops:
            h = conv(h, w_value, b_value, padding)
        else:
            h_q = first_input(h) if name == "conv1" and first_input else fq(h, a_in)
            b_q = b_value if b is None else fq(b_value, b)
            h = fq(conv(h_q, fq(w_value, w), b_q, padding), out)
        if name == "conv1":
            h = np.maximum(h, 0)
    return h


@pytest.fixture
def x():
    return np.random.default_rng(1).uniform(-3.5, 3.5, (2, 3, 8, 8)).astype(np.float32)


def test_simulation_equals_numpy_reference(x):
    graph = annotate(conv_relu_conv_graph())
    got = TorchExecutor(graph, TEST_DEVICE).forward([x])[0]
    np.testing.assert_array_equal(got, reference(graph, x))
    scale, offset = graph.operations["conv2"].quant.outputs[0].scale, graph.operations["conv2"].quant.outputs[0].offset
    assert np.allclose(got / scale + offset, np.round(got / scale + offset)), "output is off the int8 grid"


def test_quantize_false_runs_float(x, ort_outputs):
    graph = annotate(conv_relu_conv_graph())
    executor = TorchExecutor(graph, TEST_DEVICE)
    executor.quantize = False
    got = executor.forward([x])[0]
    np.testing.assert_allclose(got, reference(graph, x, float_ops=("conv1", "conv2")), rtol=1e-5, atol=1e-5)
    assert not np.array_equal(got, reference(graph, x))
    assert executor.fake_quant_sites() == []


def test_float_ops_keep_one_op_float(x):
    graph = annotate(conv_relu_conv_graph())
    executor = TorchExecutor(graph, TEST_DEVICE)
    executor.float_ops = {"conv1"}
    got = executor.forward([x])[0]
    np.testing.assert_array_equal(got, reference(graph, x, float_ops=("conv1",)))
    assert {site.op for site in executor.fake_quant_sites()} == {"conv2"}
    executor.float_ops.clear()
    np.testing.assert_array_equal(executor.forward([x])[0], reference(graph, x))


def test_hooks_see_inputs_and_outputs_as_quantized(x):
    graph = annotate(conv_relu_conv_graph())
    executor = TorchExecutor(graph, TEST_DEVICE)
    seen = {}
    handle = executor.add_hook(lambda op, ins, outs: seen.setdefault(op.name, (ins, outs)))
    executor.forward([x])
    assert list(seen) == ["conv1", "relu", "conv2"]
    (x_in, w_in, b_in), (c1,) = seen["conv1"]
    a_in, w, b = graph.operations["conv1"].quant.inputs
    np.testing.assert_array_equal(x_in.cpu().numpy(), fq(x, a_in))
    np.testing.assert_array_equal(w_in.cpu().numpy(), fq(W1, w))
    np.testing.assert_array_equal(b_in.cpu().numpy(), fq(B1, b))
    np.testing.assert_array_equal(c1.cpu().numpy(), fq(c1.cpu().numpy(), graph.operations["conv1"].quant.outputs[0]))
    assert seen["relu"][0][0] is c1
    handle.remove()
    seen.clear()
    executor.forward([x])
    assert seen == {}


def test_weights_are_quantized_once_until_refresh(x):
    graph = annotate(conv_relu_conv_graph())
    executor = TorchExecutor(graph, TEST_DEVICE)
    weights = []
    executor.add_hook(lambda op, ins, outs: weights.append(ins[1]) if op.name == "conv1" else None)
    executor.forward([x])
    executor.forward([x])
    assert weights[0] is weights[1]
    w = graph.operations["conv1"].quant.inputs[1]
    w.set_params(w.scale * 4, w.offset)
    executor.refresh()
    executor.forward([x])
    np.testing.assert_array_equal(weights[2].cpu().numpy(), fq(W1, w))
    assert not np.array_equal(weights[2].cpu().numpy(), weights[0].cpu().numpy())


def test_baked_weights_are_used_as_stored(x):
    graph = annotate(conv_relu_conv_graph())
    w = graph.operations["conv1"].quant.inputs[1]
    w.set_params(w.scale, w.offset, state=QuantizationState.BAKED)  # W1 itself is off the grid: not requantized
    executor = TorchExecutor(graph, TEST_DEVICE)
    weights = []
    executor.add_hook(lambda op, ins, outs: weights.append(ins[1]) if op.name == "conv1" else None)
    executor.forward([x])
    np.testing.assert_array_equal(weights[0].cpu().numpy(), W1)
    assert not any(s.op == "conv1" and s.index == 1 for s in executor.fake_quant_sites())


def test_reader_overlapped_with_producer_is_not_requantized(x):
    """Relu reads c1 with conv1's output config; conv2 reads r1 with relu's output config."""
    graph = annotate(conv_relu_conv_graph())
    conv1, relu, conv2 = (graph.operations[n] for n in ("conv1", "relu", "conv2"))
    relu_in, relu_out = TensorQuantizationConfig(ACT), TensorQuantizationConfig(ACT)
    relu_in.overlap(conv1.quant.outputs[0])
    relu_out.overlap(conv2.quant.inputs[0])
    relu.quant = OpQuantConfig([relu_in], [relu_out])
    sub = TensorQuantizationConfig(ACT)
    sub.overlap(relu_out)
    conv2.quant.inputs[0] = sub
    executor = TorchExecutor(graph, TEST_DEVICE)
    sites = {(s.op, s.side, s.index) for s in executor.fake_quant_sites()}
    assert ("conv1", "output", 0) in sites and ("relu", "output", 0) in sites
    assert ("relu", "input", 0) not in sites and ("conv2", "input", 0) not in sites
    np.testing.assert_array_equal(executor.forward([x])[0], reference(graph, x))
    executor.float_ops = {"relu"}  # relu no longer quantizes r1, so conv2 must
    assert ("conv2", "input", 0) in {(s.op, s.side, s.index) for s in executor.fake_quant_sites()}
    np.testing.assert_array_equal(executor.forward([x])[0], reference(graph, x))


def test_dynamic_activation_takes_its_range_from_each_tensor():
    scheme = QuantScheme.integer(8, symmetric=False, power_of_2=True, dynamic=True)
    dynamic = TensorQuantizationConfig(scheme, state=QuantizationState.ACTIVATED)
    graph = annotate(conv_relu_conv_graph(), first_input=dynamic)
    executor = TorchExecutor(graph, TEST_DEVICE)

    def own_range(h):
        return fq(h, dynamic, *compute_scale_offset(scheme, h.min(), h.max()))

    for spread in (1.0, 20.0):
        x = np.random.default_rng(2).uniform(-spread, spread, (2, 3, 8, 8)).astype(np.float32)
        np.testing.assert_array_equal(executor.forward([x])[0], reference(graph, x, first_input=own_range))
    assert any(s.kind == "dynamic" for s in executor.fake_quant_sites())


def test_fp8_activation_matches_ml_dtypes(x):
    scheme = QuantScheme.floating(4, 3)
    fp8 = TensorQuantizationConfig(scheme)
    fp8.set_params(*compute_scale_offset(scheme, -3.0, 3.0))
    graph = annotate(conv_relu_conv_graph(), first_input=fp8)

    def to_fp8(h):
        scale = np.float32(fp8.scale)
        top = float(ml_dtypes.finfo(ml_dtypes.float8_e4m3fn).max)  # saturate as the scheme does
        codes = np.clip(h / scale, -top, top).astype(ml_dtypes.float8_e4m3fn)
        return (codes.astype(np.float32) * scale).astype(np.float32)

    got = TorchExecutor(graph, TEST_DEVICE).forward([x])[0]
    np.testing.assert_array_equal(got, reference(graph, x, first_input=to_fp8))


@pytest.mark.parametrize("scheme", [
    QuantScheme.integer(8, per_channel=True, channel_axis=1, dynamic=True),
    QuantScheme.integer(4, block_size=2, channel_axis=1, dynamic=True),
], ids=["per_channel", "per_block"])
def test_dynamic_ranges_follow_the_granularity(scheme):
    x = torch.from_numpy(np.random.default_rng(3).standard_normal((2, 5, 3)).astype(np.float32))
    scale, offset = dynamic_params(x, scheme)
    blocks = [[0], [1], [2], [3], [4]] if scheme.block_size is None else [[0, 1], [2, 3], [4]]
    for b, channels in enumerate(blocks):
        part = x[:, channels].numpy()
        if scheme.block_size is None:
            lo, hi = part.min(), part.max()
            want = compute_scale_offset(scheme, lo, hi)[0]
            assert scale[b].item() == pytest.approx(float(want))
        else:  # one range per block and per position of the other axes
            lo, hi = part.min(1), part.max(1)
            want = compute_scale_offset(scheme, lo, hi)[0]
            np.testing.assert_allclose(scale[:, b].numpy(), want)
    assert offset.shape == scale.shape


def test_config_without_parameters_is_named(x):
    graph = annotate(conv_relu_conv_graph(), first_input=TensorQuantizationConfig(ACT, QuantizationState.ACTIVATED))
    with pytest.raises(ExecutorError, match="op 'conv1', tensor 'x': cannot apply .* has no scale/offset"):
        TorchExecutor(graph, TEST_DEVICE).forward([x])


def test_failing_fake_quant_names_the_node(x):
    scheme = QuantScheme.integer(8, per_channel=True, channel_axis=1)
    wrong = TensorQuantizationConfig(scheme)
    wrong.set_params(np.ones(5, np.float32), np.zeros(5, np.int32))  # y has 2 channels
    graph = annotate(conv_relu_conv_graph())
    graph.operations["conv2"].quant.outputs[0] = wrong
    with pytest.raises(OpExecutionError, match=r"node 'conv2' \(Conv\) failed with quantization simulated"):
        TorchExecutor(graph, TEST_DEVICE).forward([x])


def test_config_that_cannot_be_prepared_is_named(x):
    graph = annotate(conv_relu_conv_graph())
    w = graph.operations["conv1"].quant.inputs[1]
    w.set_params(np.ones(7, np.float32), np.zeros(7, np.int32))  # W1 has 4 output channels
    with pytest.raises(ExecutorError, match="op 'conv1', tensor 'W1': cannot apply its quantization config"):
        TorchExecutor(graph, TEST_DEVICE).forward([x])
