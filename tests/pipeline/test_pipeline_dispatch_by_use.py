"""Dispatch by use: a float tensor that reaches a Conv or MatMul is data, whatever its ancestry (issue 11).

Each model is quantized for onnxruntime with defaults; the exported file is read
back and run in a real ORT session.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import qtool
from onnx import TensorProto, helper, numpy_helper
from qtool.cli.main import main

RNG = np.random.default_rng(0)
VOCAB, LENGTH = 12, 16


def _model(path, nodes, inputs, outputs, initializers):
    params = [numpy_helper.from_array(np.asarray(v), k) for k, v in initializers.items()]
    model = helper.make_model(helper.make_graph(nodes, "g", inputs, outputs, params),
                              opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return path


def _weights(*shape):
    return (RNG.standard_normal(shape) / np.sqrt(shape[0])).astype(np.float32)


def one_hot_model(path):
    """int32 tokens -> Equal -> Cast float (one-hot) -> Conv -> two MatMuls (issue 11's classifier front end)."""
    nodes = [
        helper.make_node("Unsqueeze", ["tokens", "last"], ["t3"], name="unsqueeze"),
        helper.make_node("Equal", ["t3", "vocab"], ["hit"], name="equal"),
        helper.make_node("Cast", ["hit"], ["one_hot"], name="cast", to=TensorProto.FLOAT),
        helper.make_node("Transpose", ["one_hot"], ["channels"], name="to_channels", perm=[0, 2, 1]),
        helper.make_node("Conv", ["channels", "conv_w", "conv_b"], ["features"], name="conv", pads=[1, 1]),
        helper.make_node("ReduceMax", ["features"], ["pooled"], name="pool", axes=[2], keepdims=0),
        helper.make_node("MatMul", ["pooled", "dense1_w"], ["hidden"], name="dense1"),
        helper.make_node("MatMul", ["hidden", "dense2_w"], ["logits"], name="dense2"),
    ]
    return _model(path, nodes, [helper.make_tensor_value_info("tokens", TensorProto.INT32, ["n", LENGTH])],
                  [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["n", 4])],
                  {"last": np.array([2], np.int64), "vocab": np.arange(VOCAB, dtype=np.int32),
                   "conv_w": _weights(8, VOCAB, 3), "conv_b": _weights(8), "dense1_w": _weights(8, 16),
                   "dense2_w": _weights(16, 4)})


def embedding_model(path):
    """Gather on int64 ids from an embedding table, then a MatMul."""
    nodes = [helper.make_node("Gather", ["table", "ids"], ["embedded"], name="embed"),
             helper.make_node("MatMul", ["embedded", "proj_w"], ["y"], name="proj")]
    return _model(path, nodes, [helper.make_tensor_value_info("ids", TensorProto.INT64, ["n", LENGTH])],
                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", LENGTH, 6])],
                  {"table": _weights(VOCAB, 8), "proj_w": _weights(8, 6)})


def shape_heavy_model(path):
    """Flatten through Shape/Gather/Concat/Reshape and a scale computed from the shape in float."""
    nodes = [
        helper.make_node("Shape", ["x"], ["dims"], name="shape"),
        helper.make_node("Gather", ["dims", "zero"], ["batch_size"], name="batch", axis=0),
        helper.make_node("Concat", ["batch_size", "minus_one"], ["target"], name="flat_shape", axis=0),
        helper.make_node("Reshape", ["x", "target"], ["flat"], name="flatten"),
        helper.make_node("MatMul", ["flat", "fc_w"], ["projected"], name="fc"),
        helper.make_node("Gather", ["dims", "one"], ["channel_count"], name="channels", axis=0),
        helper.make_node("Cast", ["channel_count"], ["channels_f"], name="channels_float", to=TensorProto.FLOAT),
        helper.make_node("Sqrt", ["channels_f"], ["root_value"], name="root"),
        helper.make_node("Div", ["projected", "root_value"], ["y"], name="scale"),
    ]
    return _model(path, nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 4, 6])],
                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 5])],
                  {"zero": np.array([0], np.int64), "one": np.array(1, np.int64),
                   "minus_one": np.array([-1], np.int64), "fc_w": _weights(24, 5)})


def _dequantized_inputs(model: onnx.ModelProto, op_name: str) -> list[bool]:
    """For each input of node ``op_name``: True when a DequantizeLinear produces it."""
    producers = {out: node.op_type for node in model.graph.node for out in node.output}
    node = next(n for n in model.graph.node if n.name == op_name)
    return [producers.get(name) == "DequantizeLinear" for name in node.input]


def _quantize(path, calib, tmp_path):
    result = qtool.quantize(path, "onnxruntime", calib, output=tmp_path / "q.onnx")
    model = onnx.load(result.files[0])
    return result, model, ort.InferenceSession(str(result.files[0]), providers=["CPUExecutionProvider"])


def _close(quantized: np.ndarray, reference: np.ndarray, min_snr_db: float) -> None:
    """The quantized output within ``min_snr_db`` of the float one (signal-to-noise ratio)."""
    noise = np.mean((quantized - reference) ** 2)
    assert 10 * np.log10(np.mean(reference**2) / noise) >= min_snr_db


def test_one_hot_front_end_is_quantized_and_runs_through_dequantize_linear(tmp_path):
    path = one_hot_model(tmp_path / "one_hot.onnx")
    tokens = [{"tokens": RNG.integers(0, VOCAB, (4, LENGTH)).astype(np.int32)} for _ in range(8)]

    result, model, session = _quantize(path, tokens, tmp_path)

    ops = result.graph.operations
    assert all(ops[name].quant.quantized for name in ("conv", "dense1", "dense2"))
    assert ops["equal"].quant.reason == "shape/index computation"
    assert _dequantized_inputs(model, "conv")[:2] == [True, True]
    assert _dequantized_inputs(model, "dense1") == [True, True]
    assert _dequantized_inputs(model, "dense2") == [True, True]
    reference = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feed = {"tokens": RNG.integers(0, VOCAB, (16, LENGTH)).astype(np.int32)}
    _close(session.run(None, feed)[0], reference.run(None, feed)[0], 20)


def test_embedding_lookup_feeds_a_quantized_matmul(tmp_path):
    path = embedding_model(tmp_path / "embedding.onnx")
    ids = [{"ids": RNG.integers(0, VOCAB, (2, LENGTH)).astype(np.int64)} for _ in range(8)]

    result, model, session = _quantize(path, ids, tmp_path)

    assert result.graph.operations["proj"].quant.quantized
    assert _dequantized_inputs(model, "proj") == [True, True]
    reference = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feed = {"ids": RNG.integers(0, VOCAB, (3, LENGTH)).astype(np.int64)}
    _close(session.run(None, feed)[0], reference.run(None, feed)[0], 20)


def test_shape_chains_stay_float_and_the_model_runs(tmp_path):
    path = shape_heavy_model(tmp_path / "shapes.onnx")
    samples = [{"x": RNG.standard_normal((3, 4, 6)).astype(np.float32)} for _ in range(8)]

    result, model, session = _quantize(path, samples, tmp_path)

    ops = result.graph.operations
    for name in ("shape", "batch", "flat_shape", "channels", "channels_float", "root"):
        assert ops[name].quant.reason == "shape/index computation", name
    assert ops["fc"].quant.quantized and ops["flatten"].quant.inputs[1] is None
    assert _dequantized_inputs(model, "fc") == [True, True]
    assert _dequantized_inputs(model, "flat_shape") == [False, False]
    reference = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feed = {"x": RNG.standard_normal((5, 4, 6)).astype(np.float32)}
    quantized = session.run(None, feed)[0]
    assert quantized.shape == (5, 5)
    _close(quantized, reference.run(None, feed)[0], 20)


def test_result_summary_carries_the_coverage(tmp_path):
    path = one_hot_model(tmp_path / "one_hot.onnx")
    tokens = [{"tokens": RNG.integers(0, VOCAB, (4, LENGTH)).astype(np.int32)} for _ in range(4)]

    result = qtool.quantize(path, "onnxruntime", tokens)

    assert result.summary["coverage"] == {"compute_ops": 3, "compute_ops_quantized": 3, "float_reasons": {}}
    assert not [d for d in result.diagnostics if d.code == "coverage.low"]


def test_quantize_warns_when_most_compute_stays_float(tmp_path, capsys):
    path = one_hot_model(tmp_path / "one_hot.onnx")
    calib = tmp_path / "tokens.npz"
    np.savez(calib, tokens=RNG.integers(0, VOCAB, (8, LENGTH)).astype(np.int32))
    config = tmp_path / "config.toml"
    config.write_text('[dispatch]\nexclude = ["dense*"]\n')

    code = main(["quantize", str(path), "--platform", "onnxruntime", "--calib", str(calib), "--config", str(config),
                 "-o", str(tmp_path / "q.onnx")])

    out = " ".join(capsys.readouterr().out.split())
    assert code == 0
    assert "1 of 3 compute ops quantized" in out
    assert "warning [coverage.low] only 1 of 3 compute ops" in out
    assert "Biggest reasons: 2 x excluded by dispatch.exclude 'dense*'" in out


def contrib_front_end_model(path):
    """An ONNX Runtime-optimized encoder's front end: EmbedLayerNormalization (com.microsoft) on int32 token ids,
    SkipLayerNormalization, then a MatMul. ONNX knows neither contrib op, and the model declares no inner types."""
    hidden, positions = 8, LENGTH
    nodes = [
        helper.make_node("EmbedLayerNormalization", ["ids", "", "words", "positions", "", "gamma", "beta"],
                         ["embedded", "mask_index"], name="embed", domain="com.microsoft", epsilon=1e-5),
        helper.make_node("SkipLayerNormalization", ["embedded", "embedded", "gamma", "beta"], ["normed"],
                         name="skip_norm", domain="com.microsoft", epsilon=1e-5),
        helper.make_node("MatMul", ["normed", "proj_w"], ["y"], name="proj"),
    ]
    params = {"words": _weights(VOCAB, hidden), "positions": _weights(positions, hidden),
              "gamma": np.ones(hidden, np.float32), "beta": np.zeros(hidden, np.float32), "proj_w": _weights(hidden, 6)}
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("ids", TensorProto.INT32, ["n", LENGTH])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", LENGTH, 6])],
                              [numpy_helper.from_array(v, k) for k, v in params.items()])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17),
                                                      helper.make_opsetid("com.microsoft", 1)]), path)
    return path


def test_contrib_ops_on_token_ids_are_typed_from_onnxruntimes_schemas(tmp_path):
    path = contrib_front_end_model(tmp_path / "contrib.onnx")
    ids = [{"ids": RNG.integers(0, VOCAB, (2, LENGTH)).astype(np.int32)} for _ in range(8)]

    result, model, session = _quantize(path, ids, tmp_path)

    variables = result.graph.variables
    assert variables["embedded"].dtype == np.float32 and variables["mask_index"].dtype == np.int32
    assert variables["normed"].dtype == np.float32
    assert result.graph.operations["proj"].quant.quantized
    assert _dequantized_inputs(model, "proj") == [True, True]
    reference = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feed = {"ids": RNG.integers(0, VOCAB, (3, LENGTH)).astype(np.int32)}
    _close(session.run(None, feed)[0], reference.run(None, feed)[0], 20)


def test_a_model_without_compute_ops_warns_that_nothing_is_quantized(tmp_path, capsys):
    nodes = [helper.make_node("Mul", ["x", "scale"], ["scaled"], name="mul"),
             helper.make_node("Relu", ["scaled"], ["y"], name="relu")]
    value = [helper.make_tensor_value_info(name, TensorProto.FLOAT, ["n", 4]) for name in ("x", "y")]
    path = _model(tmp_path / "elementwise.onnx", nodes, value[:1], value[1:], {"scale": _weights(4)})
    calib = tmp_path / "x.npz"
    np.savez(calib, x=RNG.standard_normal((8, 4)).astype(np.float32))

    result = qtool.quantize(path, "onnxruntime", calib)

    (warning,) = [d for d in result.diagnostics if d.code == "coverage.none"]
    assert warning.severity is qtool.Severity.WARNING and "(Mul, Relu)" in warning.message
    assert main(["quantize", str(path), "--platform", "onnxruntime", "--calib", str(calib),
                 "-o", str(tmp_path / "q.onnx")]) == 0
    assert "warning [coverage.none] nothing is quantized" in " ".join(capsys.readouterr().out.split())
    one_hot = qtool.quantize(one_hot_model(tmp_path / "one_hot.onnx"),
                             "onnxruntime", [{"tokens": RNG.integers(0, VOCAB, (4, LENGTH)).astype(np.int32)}])
    assert not [d for d in one_hot.diagnostics if d.code.startswith("coverage.")]


def test_dense_layers_written_as_einsum_are_quantized_as_matmuls(tmp_path):
    """JAX and TensorFlow exports write dense layers as Einsum (``bsd,df->bsf``, a kernel stored ``fd``): they
    become MatMuls, quantized, and ORT runs them as integer kernels."""
    nodes = [helper.make_node("Einsum", ["x", "w1"], ["h"], name="dense1", equation="bsd,df->bsf"),
             helper.make_node("Relu", ["h"], ["r"], name="relu"),
             helper.make_node("Einsum", ["r", "w2"], ["y"], name="dense2", equation="bsf,of->bso")]
    path = _model(tmp_path / "einsum.onnx", nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 8])],
                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 3])],
                  {"w1": _weights(8, 16), "w2": _weights(3, 16)})
    samples = [{"x": RNG.standard_normal((1, 4, 8)).astype(np.float32)} for _ in range(8)]

    result, model, session = _quantize(path, samples, tmp_path)

    assert result.summary["coverage"]["compute_ops_quantized"] == 2
    assert _dequantized_inputs(model, "dense1") == [True, True] and _dequantized_inputs(model, "dense2") == [True, True]
    reference = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feed = {"x": RNG.standard_normal((1, 4, 8)).astype(np.float32)}
    _close(session.run(None, feed)[0], reference.run(None, feed)[0], 20)


def test_an_additive_attention_mask_of_minus_infinity_calibrates(tmp_path):
    """A causal mask given as a float input holds -inf: a value like another (a NaN would stop the run)."""
    nodes = [helper.make_node("MatMul", ["x", "wq"], ["q"], name="q_proj"),
             helper.make_node("MatMul", ["x", "wk"], ["k"], name="k_proj"),
             helper.make_node("Transpose", ["k"], ["kt"], name="kt", perm=[0, 2, 1]),
             helper.make_node("MatMul", ["q", "kt"], ["scores"], name="scores"),
             helper.make_node("Add", ["scores", "mask"], ["masked"], name="add_mask"),
             helper.make_node("Softmax", ["masked"], ["p"], name="softmax", axis=-1),
             helper.make_node("MatMul", ["p", "x"], ["y"], name="mix")]
    path = _model(tmp_path / "masked.onnx", nodes,
                  [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 8]),
                   helper.make_tensor_value_info("mask", TensorProto.FLOAT, [4, 4])],
                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 8])],
                  {"wq": _weights(8, 8), "wk": _weights(8, 8)})
    mask = np.triu(np.full((4, 4), -np.inf, np.float32), k=1)
    feeds = [{"x": RNG.standard_normal((1, 4, 8)).astype(np.float32), "mask": mask} for _ in range(8)]

    result = qtool.quantize(path, "onnxruntime", feeds, calib_layout="feeds", output=tmp_path / "q.onnx")

    session = ort.InferenceSession(str(result.files[0]), providers=["CPUExecutionProvider"])
    assert result.summary["coverage"]["compute_ops_quantized"] == 4
    assert result.summary["float_vs_quantized"]["outputs"]["y"]["sqnr_db"] > 20
    reference = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feed = {"x": RNG.standard_normal((1, 4, 8)).astype(np.float32), "mask": mask}
    _close(session.run(None, feed)[0], reference.run(None, feed)[0], 20)


def test_a_model_on_integers_alone_is_told_it_has_nothing_to_quantize(tmp_path):
    """No floating-point tensor anywhere (an integer model; onnx's StringNormalizer models alike): the warning said
    to name more op types in dispatch.quantize_op_types, which could change nothing."""
    nodes = [helper.make_node("Add", ["ids", "offset"], ["y"], name="add")]
    value = [helper.make_tensor_value_info(name, TensorProto.INT64, ["n", 4]) for name in ("ids", "y")]
    path = _model(tmp_path / "ints.onnx", nodes, value[:1], value[1:], {"offset": np.arange(4, dtype=np.int64)})

    result = qtool.quantize(path, "onnxruntime", [{"ids": np.arange(8, dtype=np.int64).reshape(2, 4)}],
                            calib_layout="feeds", output=tmp_path / "q.onnx")

    (warning,) = [d for d in result.diagnostics if d.code == "coverage.none"]
    assert "(Add) computes on no floating-point tensor, so it has nothing to quantize" in warning.message
    assert "dispatch.quantize_op_types" not in warning.message


def test_positions_computed_in_float_from_the_sequence_length_are_data(tmp_path):
    """A Conformer's relative positions (ESPnet's RelPositionalEncoding, torch.arange(T - 1, -T, -1.0) as the
    legacy exporter writes it, no inner types): Shape -> Cast float -> Range -> Sin -> MatMul. Range was taken for an
    index producer whatever its type, so the positions' MatMul stayed float as "shape/index computation"."""
    nodes = [
        helper.make_node("Shape", ["x"], ["dims"], name="shape"),
        helper.make_node("Gather", ["dims", "one"], ["length"], name="length", axis=0),
        helper.make_node("Cast", ["length"], ["length_f"], name="length_float", to=TensorProto.FLOAT),
        helper.make_node("Range", ["zero", "length_f", "step"], ["steps"], name="range"),
        helper.make_node("Unsqueeze", ["steps", "last"], ["column"], name="column"),
        helper.make_node("Mul", ["column", "frequencies"], ["angles"], name="angles"),
        helper.make_node("Sin", ["angles"], ["positions"], name="sin"),
        helper.make_node("MatMul", ["positions", "pos_w"], ["projected"], name="pos_proj"),
        helper.make_node("MatMul", ["x", "x_w"], ["h"], name="x_proj"),
        helper.make_node("Add", ["h", "projected"], ["y"], name="add"),
    ]
    path = _model(tmp_path / "positions.onnx", nodes,
                  [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, "t", 8])],
                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, "t", 8])],
                  {"one": np.array(1, np.int64), "zero": np.array(0, np.float32), "step": np.array(1, np.float32),
                   "last": np.array([1], np.int64), "frequencies": np.geomspace(1, 1e-3, 8).astype(np.float32),
                   "pos_w": _weights(8, 8), "x_w": _weights(8, 8)})
    feeds = [{"x": RNG.standard_normal((1, int(t), 8)).astype(np.float32)} for t in RNG.integers(5, 20, 8)]

    result = qtool.quantize(path, "onnxruntime", feeds, calib_layout="feeds", output=tmp_path / "q.onnx")

    ops = result.graph.operations
    assert ops["pos_proj"].quant.quantized and ops["length"].quant.reason == "shape/index computation"
    model = onnx.load(result.files[0])
    assert _dequantized_inputs(model, "pos_proj") == [True, True]
    session = ort.InferenceSession(str(result.files[0]), providers=["CPUExecutionProvider"])
    reference = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feed = {"x": RNG.standard_normal((1, 23, 8)).astype(np.float32)}
    _close(session.run(None, feed)[0], reference.run(None, feed)[0], 20)
