"""validate(): errors for schemes without an AIMET encoding, warnings for narrow code ranges."""

import pytest
import qtool
from qtool import QuantScheme, Severity
from qtool.testing import quantize_by_hand, retarget


def _found(graph, platform="aimet"):
    return [(d.severity, d.code, d.op, d.tensor) for d in qtool.get_platform(platform).validate(graph)]


def test_platform_defaults_validate_clean(qtool_small_model):
    graph = quantize_by_hand(qtool.load(qtool_small_model), QuantScheme.integer(8, signed=False, symmetric=False),
                             QuantScheme.integer(8, per_channel=True, channel_axis=0), bias="int32")
    assert _found(graph) == [] and _found(graph, "aimet-1.0") == []


@pytest.mark.parametrize(("tensor", "scheme", "message"), [
    ("input", QuantScheme.floating(4, 3), "a float format has none"),
    ("relu_out", QuantScheme.integer(8, dynamic=True), "dynamic scales"),
    ("add_out", QuantScheme.integer(3), "3-bit codes"),
    ("conv2_out", QuantScheme.integer(8, per_channel=True, channel_axis=1), "activation encodings are per tensor"),
    ("conv1.weight", QuantScheme.integer(8, per_channel=True, channel_axis=1), "per-channel on axis 1"),
    ("fc.weight", QuantScheme.integer(4, per_channel=True, channel_axis=1, block_size=2), "per-block"),
])
def test_schemes_without_an_encoding_are_errors(qtool_calibrated_graph, tensor, scheme, message):
    retarget(qtool_calibrated_graph, tensor, scheme)
    (d,) = qtool.get_platform("aimet").validate(qtool_calibrated_graph)
    assert (d.severity, d.code, d.tensor) == (Severity.ERROR, "aimet.scheme", tensor)
    assert message in d.message and d.op in qtool_calibrated_graph.operations


def test_narrow_range_is_a_warning(qtool_calibrated_graph):
    retarget(qtool_calibrated_graph, "flat_out", QuantScheme.integer(8, quant_min=-127))
    (d,) = qtool.get_platform("aimet").validate(qtool_calibrated_graph)
    assert (d.severity, d.code, d.op, d.tensor) == (Severity.WARNING, "aimet.narrow-range", "fc", "flat_out")
    assert "255 of 256" in d.message and "written on the full grid that holds them" in d.message


def test_tensor_read_float_by_some_readers_is_a_warning():
    """Pre-norm block: x is read by LayerNormalization (float) and by the residual Add (quantized). Its one encoding
    quantizes it for the LayerNorm too on the target, which qtool's simulation did not say."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper
    from qtool.ir import from_model_proto

    node = helper.make_node
    model = helper.make_model(helper.make_graph(
        [node("Shape", ["x"], ["shape"], name="shape"),
         node("LayerNormalization", ["x", "gain", "shift"], ["norm"], name="ln", axis=-1),
         node("MatMul", ["norm", "w"], ["proj"], name="mm"), node("Add", ["proj", "x"], ["y"], name="residual")],
        "prenorm", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 4]),
         helper.make_tensor_value_info("shape", TensorProto.INT64, [3])],
        [numpy_helper.from_array(np.ones(4, np.float32), name) for name in ("gain", "shift")]
        + [numpy_helper.from_array(np.eye(4, dtype=np.float32), "w")]))
    graph = quantize_by_hand(from_model_proto(model), QuantScheme.integer(8, signed=False, symmetric=False),
                             QuantScheme.integer(8, per_channel=True, channel_axis=1))
    (d,) = qtool.get_platform("aimet").validate(graph)
    assert (d.severity, d.code, d.op, d.tensor) == (Severity.WARNING, "aimet.float-readers", "ln", "x")
    assert "float at ln (quantized at residual)" in d.message  # Shape reads the shape alone: not listed


def test_two_encodings_for_one_tensor_is_an_error(qtool_calibrated_graph):
    reader = qtool_calibrated_graph.operations["conv2"].quant.inputs[0]
    reader.set_params(reader.scale * 2, reader.offset)
    assert _found(qtool_calibrated_graph, "aimet-1.0") == [(Severity.ERROR, "aimet.conflict", "conv2", "relu_out")]


def test_weight_first_matmul_takes_its_rows_as_output_channels():
    """W @ x: per-channel on the rows of W is what qtool.ops and ONNX Runtime use; AIMET lists it so too."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper
    from qtool.ir import from_model_proto

    weight = numpy_helper.from_array(np.ones((6, 4), np.float32), "w")
    model = helper.make_model(helper.make_graph(
        [helper.make_node("MatMul", ["w", "x"], ["y"], name="mm")], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 4, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 6, 3])], [weight]))
    graph = quantize_by_hand(from_model_proto(model), QuantScheme.integer(8, signed=False, symmetric=False), None)
    graph.operations["mm"].quant.inputs[0] = qtool.TensorQuantizationConfig(
        QuantScheme.integer(8, per_channel=True, channel_axis=0), role="weight")
    assert _found(graph) == []
    retarget(graph, "w", QuantScheme.integer(8, per_channel=True, channel_axis=1))
    assert [d[1:] for d in _found(graph)] == [("aimet.scheme", "mm", "w")]


def test_ops_from_outside_onnx_domain_are_a_warning(tmp_path):
    """ONNX Runtime's contrib ops are written as they are; QNN's converter reads them only through an op package."""
    import onnx
    from onnx import TensorProto, helper

    nodes = [helper.make_node("Gelu", ["x"], ["g"], name="gelu1", domain="com.microsoft"),
             helper.make_node("Gelu", ["g"], ["y"], name="gelu2", domain="com.microsoft")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])])
    opsets = [helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)]
    onnx.save(helper.make_model(graph, opset_imports=opsets), tmp_path / "gelu.onnx")

    (d,) = qtool.get_platform("aimet").validate(qtool.load(tmp_path / "gelu.onnx"))
    assert (d.severity, d.code, d.op) == (Severity.WARNING, "aimet.foreign-op", "gelu1")
    assert "2 op(s) com.microsoft::Gelu are written as they are" in d.message
