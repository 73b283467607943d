"""Models of onnx's own node tests that used to crash qtool where nothing in them is quantized: a sequence output
(its values are a list, not an array; one of tensors of several shapes), a Scan over a 1-D input (a slice of it is
a 0-d array), a model of ai.onnx.ml ops only (no ONNX-domain opset to convert). Each quantizes, with no compute op
to count, says that nothing is where it holds no control-flow body, and ONNX Runtime loads what is written."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import qtool
from qtool.testing.node_tests import node_test_cases

CASES = ["test_if_seq", "test_scan9_scalar", "test_split_to_sequence_2", "test_ai_onnx_ml_array_feature_extractor"]


@pytest.mark.parametrize("name", CASES)
def test_a_model_with_nothing_to_quantize_runs_through(name, tmp_path):
    (case,) = [case for case in node_test_cases() if case.name == name]
    onnx.save(case.model, tmp_path / "model.onnx")
    names = [value.name for value in case.model.graph.input]
    feeds = [dict(zip(names, case.data_sets[0][0], strict=True))]

    result = qtool.quantize(tmp_path / "model.onnx", "onnxruntime", feeds, calib_layout="feeds",
                            output=tmp_path / "q.onnx")

    assert result.summary["coverage"]["compute_ops"] == 0
    bodies = any(op.has_subgraphs for op in result.graph.operations.values())
    assert [d.code for d in result.diagnostics if d.code.startswith("coverage.")] == ([] if bodies else
                                                                                     ["coverage.none"])
    ort.InferenceSession(str(result.files[0]), providers=["CPUExecutionProvider"])


def test_a_model_of_no_op_is_told_so(tmp_path):
    """Outputs that are the model's input and an initializer, no node: the warning listed its op types as '()' and
    said to name more of them in dispatch.quantize_op_types, which could change nothing."""
    graph = onnx.helper.make_graph(
        [], "g", [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["batch", 4])],
        [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["batch", 4]),
         onnx.helper.make_tensor_value_info("c", onnx.TensorProto.FLOAT, [4])],
        [onnx.numpy_helper.from_array(np.arange(4, dtype=np.float32), "c")])
    onnx.save(onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17)]), tmp_path / "m.onnx")

    result = qtool.quantize(tmp_path / "m.onnx", "onnxruntime", {"x": np.ones((2, 4), np.float32)},
                            output=tmp_path / "q.onnx")

    (warning,) = [d for d in result.diagnostics if d.code == "coverage.none"]
    assert warning.message == ("nothing is quantized: the model has no op (its outputs are its inputs or constants), "
                               "so it has nothing to quantize; the written model computes as the input model does")
    session = ort.InferenceSession(str(result.files[0]), providers=["CPUExecutionProvider"])
    assert [o.name for o in session.get_outputs()] == ["x", "c"]


def test_an_output_listed_twice_is_checked_and_written_twice(tmp_path):
    """ONNX Runtime runs a model listing output 'y' twice; qtool's simulation gave one array for the two names, so
    the agreement check (--check-agreement, --min-snr, --optimize) failed in an IndexError and analyse with a
    traceback (zip() argument 3 is shorter)."""
    rng = np.random.default_rng(0)
    y = onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, ["batch", 4])
    graph = onnx.helper.make_graph(
        [onnx.helper.make_node("MatMul", ["x", "w"], ["y"], name="mm")], "g",
        [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["batch", 8])], [y, y],
        [onnx.numpy_helper.from_array(rng.standard_normal((8, 4)).astype(np.float32), "w")])
    onnx.save(onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17)]), tmp_path / "m.onnx")

    result = qtool.quantize(tmp_path / "m.onnx", "onnxruntime", rng.standard_normal((16, 8)).astype(np.float32),
                            check_agreement=True, output=tmp_path / "q.onnx")

    assert result.summary["agreement"]["min_cosine"] > 0.999
    session = ort.InferenceSession(str(result.files[0]), providers=["CPUExecutionProvider"])
    assert [o.name for o in session.get_outputs()] == ["y", "y"]
