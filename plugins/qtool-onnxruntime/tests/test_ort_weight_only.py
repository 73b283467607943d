"""Weight-only exports: MatMulNBits / GatherBlockQuantized (or blocked DequantizeLinear) run in real ORT sessions
and agree with qtool's simulation; the accuracy_level warning says what ORT really does."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import qtool
from ort_testkit import optimized_ops
from qtool.executor import TorchExecutor
from qtool.pipeline import plan as plan_for
from qtool.platform import ExportOptionError
from qtool.testing.decoder import TOKENS_INPUT, byte_tokens, tiny_decoder
from qtool_onnxruntime.session import cpu_session

LAYERS = {"embed": "GatherBlockQuantized", "block0.up": "MatMulNBits", "block0.down": "MatMulNBits",
          "block1.up": "MatMulNBits", "block1.down": "MatMulNBits", "head": "MatMulNBits"}


@pytest.fixture(scope="module")
def decoder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("weight_only")
    calib = folder / "calib.npz"
    np.savez(calib, **{TOKENS_INPUT: byte_tokens(8, 32)})
    return tiny_decoder(folder / "decoder.onnx"), calib


def _quantize(decoder, tmp_path, preset, config=None, **options):
    model, calib = decoder
    return qtool.quantize(model, "onnxruntime", calib, preset=preset, config=config, output=tmp_path / "q.onnx",
                          export_options=options, check_agreement=True)


def _relative(ours, theirs) -> float:
    return float(np.abs(ours - theirs).max() / np.abs(theirs).max())


@pytest.mark.parametrize("preset, embedding_bits, bits, zero_points", [
    ("int4-weight-only", 8, 4, True), ("int4-weight-only", 4, 4, True), ("int8-weight-only", 8, 8, False)])
def test_contrib_ops_run_exactly_at_accuracy_level_0(decoder, tmp_path, preset, embedding_bits, bits, zero_points):
    result = _quantize(decoder, tmp_path, preset, {"weight_only": {"embedding_bits": embedding_bits}},
                       accuracy_level=0)
    model = onnx.load(result.files[0])
    onnx.checker.check_model(model, full_check=True)
    nodes = {n.name: n for n in model.graph.node}
    assert {name: nodes[name].op_type for name in LAYERS} == LAYERS
    for name in LAYERS:
        attrs = {a.name: a.i for a in nodes[name].attribute}
        assert attrs["bits"] == (embedding_bits if name == "embed" else bits) and attrs["block_size"] == 32
        assert (len(nodes[name].input) > 3 and nodes[name].input[3] != "") == zero_points
    assert {o.domain for o in model.opset_import} == {"", "com.microsoft"}
    assert not any(n.op_type == "DequantizeLinear" for n in model.graph.node)
    # no float kernel, nothing differs from the simulation; 8 bits at level 0 run slower than float (said so)
    assert [d.code for d in result.diagnostics] == (["ort.perf.nbits-level"] if bits == 8 else [])
    assert all(op not in ("MatMul", "Gemm", "FusedGemm", "Gather") for op in optimized_ops(result.files[0], tmp_path))
    # the simulation and ORT's kernels agree, and both differ from the float model (it is quantized)
    tokens = byte_tokens(2, 32, offset=40)
    ran = cpu_session(result.files[0]).run(None, {TOKENS_INPUT: tokens})[0]
    simulated = TorchExecutor(result.graph).forward({TOKENS_INPUT: tokens})[0]
    original = cpu_session(decoder[0]).run(None, {TOKENS_INPUT: tokens})[0]
    assert _relative(ran, simulated) < 1e-5
    assert _relative(ran, original) > (1e-3 if bits == 4 else 1e-5)


def test_default_accuracy_level_is_0_and_exact(decoder, tmp_path):
    result = _quantize(decoder, tmp_path, "int4-weight-only")
    levels = {a.i for n in onnx.load(result.files[0]).graph.node for a in n.attribute if a.name == "accuracy_level"}
    assert levels == {0} and not result.diagnostics
    assert result.agreement["outputs"]["logits"]["max_relative"] < 1e-5


def test_accuracy_level_4_warns_and_differs_as_it_says(decoder, tmp_path):
    result = _quantize(decoder, tmp_path, "int4-weight-only", accuracy_level=4)
    assert [d.code for d in result.diagnostics] == ["ort.nbits-accuracy-level"]
    levels = {a.i for n in onnx.load(result.files[0]).graph.node for a in n.attribute if a.name == "accuracy_level"}
    assert levels == {4}
    relative = result.agreement["outputs"]["logits"]["max_relative"]
    assert 1e-4 < relative < 5e-2  # "about 1%"


def test_8_bit_layers_at_level_0_are_a_performance_note_and_level_4_is_not(decoder, tmp_path):
    """ORT's 8-bit MatMulNBits at accuracy_level 0 ran 1.3-21x slower than float (bench: 1024x1024 layers)."""
    (note,) = _quantize(decoder, tmp_path, "int8-weight-only").diagnostics
    assert (note.code, note.severity) == ("ort.perf.nbits-level", qtool.Severity.PERFORMANCE)
    assert note.message.startswith("5 MatMulNBits layer(s) with 8-bit weights at accuracy_level 0")
    codes = [d.code for d in _quantize(decoder, tmp_path, "int8-weight-only", accuracy_level=4).diagnostics]
    assert codes == ["ort.nbits-accuracy-level"]


def test_size_of_int4_export(decoder, tmp_path):
    result = _quantize(decoder, tmp_path, "int4-weight-only", {"weight_only": {"embedding_bits": 4}})
    weights = sum(t.ByteSize() for t in onnx.load(result.files[0]).graph.initializer)
    original = sum(t.ByteSize() for t in onnx.load(decoder[0]).graph.initializer)
    assert weights < 0.3 * original


def test_qdq_form_writes_blocked_dequantize_linear(decoder, tmp_path):
    result = _quantize(decoder, tmp_path, "int4-weight-only", weight_only_format="qdq")
    model = onnx.load(result.files[0])
    onnx.checker.check_model(model, full_check=True)
    assert model.opset_import[0].version == 21
    dqs = [n for n in model.graph.node if n.op_type == "DequantizeLinear"]
    assert len(dqs) == 6 and all({a.name: a.i for a in n.attribute}["block_size"] == 32 for n in dqs)
    assert not any(n.domain == "com.microsoft" for n in model.graph.node)
    assert result.agreement["outputs"]["logits"]["max_relative"] < 1e-5


def test_layers_that_do_not_fit_stay_qdq(decoder, tmp_path):
    """A Gemm whose bias is computed (not an initializer) cannot be MatMulNBits: it keeps a blocked
    DequantizeLinear (opset 21) and runs. (An alpha != 1 or a (1, N) bias no longer stops one: GraphSimplify folds
    the one into the weight and writes the other as its (N,) vector.)"""
    model = onnx.load(decoder[0])
    zero = onnx.numpy_helper.from_array(np.zeros(1, np.float32), "zero")
    model.graph.initializer.append(zero)
    down = next(node for node in model.graph.node if node.name == "block0.down")
    model.graph.node.insert(list(model.graph.node).index(down), onnx.helper.make_node(
        "Add", [down.input[2], "zero"], ["block0.down.bias_computed"], name="bias_plus_zero"))
    down.input[2] = "block0.down.bias_computed"
    path = tmp_path / "alpha.onnx"
    onnx.save(model, path)
    result = qtool.quantize(path, "onnxruntime", decoder[1], preset="int4-weight-only", output=tmp_path / "q.onnx",
                            export_options={"accuracy_level": 0}, check_agreement=True)
    written = onnx.load(result.files[0])
    types = {n.name: n.op_type for n in written.graph.node}
    assert types["block0.down"] == "Gemm" and types["block1.down"] == "MatMulNBits"
    assert written.opset_import[0].version == 21
    [note] = result.diagnostics
    assert note.code == "ort.perf.nbits-fallback" and "a Gemm with transA or a computed bias" in note.message
    assert result.agreement["outputs"]["logits"]["max_relative"] < 1e-5


@pytest.mark.parametrize("options, key", [({"accuracy_level": 5}, "accuracy_level"),
                                          ({"weight_only_format": "nbits"}, "weight_only_format")])
def test_bad_export_options_fail_before_work(decoder, tmp_path, options, key):
    with pytest.raises(ExportOptionError, match=key):
        _quantize(decoder, tmp_path, "int4-weight-only", **options)
    assert not (tmp_path / "q.onnx").exists()


def _nbits_weights(model: onnx.ModelProto) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """MatMulNBits by activation input: (packed codes, packed zero points)."""
    values = {t.name: onnx.numpy_helper.to_array(t) for t in model.graph.initializer}
    return {n.input[0]: (values[n.input[1]].ravel(), values[n.input[3]].ravel())
            for n in model.graph.node if n.op_type == "MatMulNBits"}


def test_int4_codes_and_zero_points_equal_ort_quantizers(decoder, tmp_path):
    """Round-to-nearest int4 (asymmetric, block 32) writes the codes and zero points of ORT's own
    matmul_nbits_quantizer (DEFAULT/MLAS), byte for byte: the benchmark's accuracy differences come from what
    each quantizes (and GPTQ/AWQ/HQQ), not from a different rounding rule."""
    import logging

    from onnxruntime.quantization import matmul_nbits_quantizer as ort_nbits

    ours = _nbits_weights(onnx.load(_quantize(decoder, tmp_path, "int4-weight-only").files[0]))
    logging.disable(logging.INFO)
    try:
        config = ort_nbits.DefaultWeightOnlyQuantConfig(block_size=32, is_symmetric=False)
        quantizer = ort_nbits.MatMulNBitsQuantizer(onnx.load(decoder[0]), block_size=32, is_symmetric=False,
                                                   algo_config=config)
        quantizer.process()
    finally:
        logging.disable(logging.NOTSET)
    theirs = _nbits_weights(quantizer.model.model)
    assert len(theirs) >= 3 and set(theirs) <= set(ours)  # ORT's quantizer takes MatMul only (not Gemm)
    for name, (codes, zero_points) in theirs.items():
        assert np.array_equal(ours[name][0], codes) and np.array_equal(ours[name][1], zero_points), name


def _ort_quantized(model_path, bits: int, block: int, symmetric: bool) -> onnx.ModelProto:
    import logging

    from onnxruntime.quantization import matmul_nbits_quantizer as ort_nbits

    logging.disable(logging.INFO)
    try:
        config = ort_nbits.DefaultWeightOnlyQuantConfig(block_size=block, is_symmetric=symmetric, bits=bits)
        quantizer = ort_nbits.MatMulNBitsQuantizer(onnx.load(model_path), block_size=block, is_symmetric=symmetric,
                                                   algo_config=config, bits=bits)
        quantizer.process()
    finally:
        logging.disable(logging.NOTSET)
    return quantizer.model.model


@pytest.mark.parametrize("bits", [4, 8])
def test_symmetric_blocks_use_every_code_as_ort_quantizers(decoder, tmp_path, bits):
    """Symmetric weight-only blocks use the full signed range, as ORT's matmul_nbits_quantizer (DEFAULT/MLAS) does:
    scale = the block's extreme / -2^(b-1), no zero points. qtool used [-7, 7] ([-127, 127]) and lost ~1 dB of
    output SNR to ORT's quantizer at every block size (found by a user-style probe). Codes and scales are ORT's
    (a float32 near-tie may round one code apart: ORT multiplies by the reciprocal scale), and the output is at
    least as close to float."""
    config = {"weight_only": {"enabled": True, "bits": bits, "symmetric": True, "block_size": 32,
                              "op_types": ["MatMul"]}}  # what ORT's quantizer takes
    result = qtool.quantize(decoder[0], "onnxruntime", decoder[1], config=config, output=tmp_path / "q.onnx",
                            check_agreement=True)
    assert result.agreement["outputs"]["logits"]["max_relative"] < 1e-5
    ours_model = onnx.load(result.files[0])
    theirs_model = _ort_quantized(decoder[0], bits, 32, symmetric=True)

    def layers(model):
        values = {t.name: onnx.numpy_helper.to_array(t) for t in model.graph.initializer}
        return {n.output[0]: (values[n.input[1]], values[n.input[2]], n.input[3:4]) for n in model.graph.node
                if n.op_type == "MatMulNBits"}

    ours, theirs = layers(ours_model), layers(theirs_model)
    assert len(theirs) >= 3 and set(theirs) == set(ours)
    differing = total = 0
    for name, (codes, scales, zero_points) in theirs.items():
        np.testing.assert_array_equal(ours[name][1].ravel(), scales.ravel(), err_msg=name)
        assert (scales < 0).any() and list(ours[name][2]) in ([], [""]) and list(zero_points) in ([], [""])
        differing += int((ours[name][0] != codes).sum())
        total += codes.size
    assert differing <= total * 1e-4, (differing, total)
    tokens = byte_tokens(4, 32, offset=40)
    reference = cpu_session(decoder[0]).run(None, {TOKENS_INPUT: tokens})[0]

    def snr(path):
        error = cpu_session(path).run(None, {TOKENS_INPUT: tokens})[0] - reference
        return float(10 * np.log10((reference ** 2).sum() / (error ** 2).sum()))

    onnx.save(theirs_model, tmp_path / "ort.onnx")
    assert snr(result.files[0]) >= snr(tmp_path / "ort.onnx") - 0.05


def test_accuracy_level_from_the_command_line(decoder, tmp_path):
    """--export-option accuracy_level=4 was refused: the value reached the check as the text '4'."""
    from qtool.cli.main import main

    model, calib = decoder
    assert main(["quantize", str(model), "--platform", "onnxruntime", "--preset", "int4-weight-only", "--calib",
                 str(calib), "--export-option", "accuracy_level=4", "-o", str(tmp_path / "q.onnx")]) == 0
    levels = {a.i for n in onnx.load(tmp_path / "q.onnx").graph.node for a in n.attribute if a.name == "accuracy_level"}
    assert levels == {4}


def test_the_summary_measures_the_written_model_as_a_default_session_runs_it(tmp_path):
    """int16 activations with blocked int8 weights: ORT rewrites each weight's DequantizeLinear -> MatMul into a
    MatMulNBits at its default accuracy level 4 (the activations to int8 per block inside the kernel). The summary
    measured it with level 0, exact: 38.4 dB where a user's session gives 34.8."""
    import onnxruntime as ort
    from qtool_onnxruntime.session import session_options

    model, tokens = tiny_decoder(tmp_path / "decoder.onnx"), byte_tokens(8, 32)
    result = qtool.quantize(model, "onnxruntime", {TOKENS_INPUT: tokens}, preset="a16w8", output=tmp_path / "q.onnx")
    float_model = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])

    def sqnr(options) -> float:
        written = ort.InferenceSession(str(tmp_path / "q.onnx"), options, providers=["CPUExecutionProvider"])
        pairs = [(float_model.run(None, {TOKENS_INPUT: tokens[i:i + 1]})[0].astype(np.float64),
                  written.run(None, {TOKENS_INPUT: tokens[i:i + 1]})[0]) for i in range(8)]
        return 10 * np.log10(sum((a**2).sum() for a, _ in pairs) / sum(((a - b) ** 2).sum() for a, b in pairs))

    default, exact = sqnr(ort.SessionOptions()), sqnr(session_options(exact=True))
    assert exact > default + 1  # the rewrite costs something here
    assert result.summary["float_vs_quantized"]["outputs"]["logits"]["sqnr_db"] == pytest.approx(default, abs=0.01)
    # and a warning says so (it named only the MatMulNBits qtool writes itself)
    [warning] = [d for d in result.diagnostics if d.code == "ort.nbits-accuracy-level"]
    assert warning.message.startswith("3 MatMul/Gemm layer(s) with weights stored in 2, 4 or 8 bits: ORT "
                                      "rewrites")
    options = ort.SessionOptions()
    options.optimized_model_filepath = str(tmp_path / "built.onnx")
    ort.InferenceSession(str(tmp_path / "q.onnx"), options, providers=["CPUExecutionProvider"])
    levels = [a.i for n in onnx.load(tmp_path / "built.onnx").graph.node if n.op_type == "MatMulNBits"
              for a in n.attribute if a.name == "accuracy_level"]
    assert levels == [4, 4, 4]


def _gemm(path, trans_b: int):
    rng = np.random.default_rng(0)
    weight = rng.standard_normal((32, 64) if trans_b else (64, 32)).astype(np.float32)
    graph = onnx.helper.make_graph(
        [onnx.helper.make_node("Gemm", ["x", "w", "b"], ["y"], transB=trans_b, name="dense")], "g",
        [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["n", 64])],
        [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, ["n", 32])],
        initializer=[onnx.numpy_helper.from_array(weight, "w"),
                     onnx.numpy_helper.from_array(np.zeros(32, np.float32), "b")])
    onnx.save(onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17)]), path)
    return path


@pytest.mark.parametrize("trans_b", [0, 1])
def test_qdq_weight_only_gemm_says_what_onnxruntime_runs(tmp_path, trans_b):
    """weight_only_format=qdq: ORT 1.32 makes a Gemm reading its weight as stored (transB 0, GPT-2's Conv1D) a
    MatMulNBits at accuracy level 4, and runs one with transB 1 as a float Gemm; the diagnostics said the first
    ran DequantizeLinear -> float Gemm -> QuantizeLinear (and a weight-only output has no QuantizeLinear)."""
    import onnxruntime as ort

    samples = [{"x": np.random.default_rng(i).standard_normal((2, 64)).astype(np.float32)} for i in range(4)]
    result = qtool.quantize(_gemm(tmp_path / "gemm.onnx", trans_b), "onnxruntime", samples,
                            preset="int4-weight-only", export_options={"weight_only_format": "qdq"},
                            output=tmp_path / "q.onnx")
    options = ort.SessionOptions()
    options.optimized_model_filepath = str(tmp_path / "built.onnx")
    ort.InferenceSession(str(tmp_path / "q.onnx"), options, providers=["CPUExecutionProvider"])
    built = {n.op_type for n in onnx.load(tmp_path / "built.onnx").graph.node}
    notes = {d.code: d.message for d in result.diagnostics}
    if trans_b == 0:
        assert "MatMulNBits" in built and "Gemm" not in built
        assert notes["ort.nbits-accuracy-level"].startswith("1 MatMul/Gemm layer(s)")
        assert notes["ort.perf.float-input"].startswith("runs as the MatMulNBits ONNX Runtime makes of its "
                                                        "DequantizeLinear -> Gemm")
    else:
        assert "Gemm" in built and "MatMulNBits" not in built
        assert "ort.nbits-accuracy-level" not in notes
        assert notes["ort.perf.float-input"].startswith("runs correctly through DequantizeLinear -> float Gemm, ")


def _embedding_model(path, width: int, weight_first: bool = False):
    """input_ids -> Gather(table [64, width]) -> MatMul(W [width, 32]) (or W^T @ x^T, weight first) -> y."""
    rng = np.random.default_rng(0)
    table = rng.standard_normal((64, width)).astype(np.float32)
    weight = rng.standard_normal((32, width) if weight_first else (width, 32)).astype(np.float32)
    nodes = [onnx.helper.make_node("Gather", ["table", "ids"], ["h"], name="embed")]
    if weight_first:
        nodes += [onnx.helper.make_node("Transpose", ["h"], ["ht"], perm=[1, 0], name="t"),
                  onnx.helper.make_node("MatMul", ["w", "ht"], ["y"], name="proj")]
        out = ["32", "n"]
    else:
        nodes.append(onnx.helper.make_node("MatMul", ["h", "w"], ["y"], name="proj"))
        out = ["n", "32"]
    graph = onnx.helper.make_graph(
        nodes, "e", [onnx.helper.make_tensor_value_info("ids", onnx.TensorProto.INT64, ["n"])],
        [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, out)],
        initializer=[onnx.numpy_helper.from_array(table, "table"), onnx.numpy_helper.from_array(weight, "w")])
    onnx.save(onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17)]), path)
    return path


def test_embedding_rows_that_are_not_whole_blocks(tmp_path):
    """A table whose rows are not a whole number of blocks became DequantizeLinear -> Gather, and ORT dequantized the
    whole table at every run (a one-token step 5.9x slower than float on a 32000x320 table at block 128), without a
    word (found by a user-style probe). It takes blocks of the largest power of two from 16 that divides its rows,
    with a warning, or stays float where none does, saying why."""
    samples = [{"ids": np.arange(i, i + 8, dtype=np.int64)} for i in range(4)]
    result = qtool.quantize(_embedding_model(tmp_path / "e48.onnx", 48), "onnxruntime", samples,
                            preset="int4-weight-only", output=tmp_path / "q48.onnx", check_agreement=True)
    nodes = {n.name: n for n in onnx.load(result.files[0]).graph.node}
    assert nodes["embed"].op_type == "GatherBlockQuantized"
    assert {a.name: a.i for a in nodes["embed"].attribute}["block_size"] == 16
    [note] = [d for d in result.diagnostics if d.code == "ort.gather-block-size"]
    assert note.severity is qtool.Severity.WARNING and note.message.startswith("embedding table in blocks of 16, "
                                                                               "not 32: its rows (48 values)")
    assert result.agreement["outputs"]["y"]["max_relative"] < 1e-5
    result = qtool.quantize(_embedding_model(tmp_path / "e40.onnx", 40), "onnxruntime", samples,
                            preset="int4-weight-only", output=tmp_path / "q40.onnx")
    nodes = {n.name: n for n in onnx.load(result.files[0]).graph.node}
    assert nodes["embed"].op_type == "Gather" and not any(n.op_type == "DequantizeLinear" for n in nodes.values())
    [reason] = [r for r in result.summary["ops"]["float_reasons"] if "embedding table 'table'" in r]
    assert "not a whole number of blocks of 32" in reason and "kept float" in reason


@pytest.mark.parametrize("case, why", [
    ("weight-first", "its weight comes first (W @ x), and MatMulNBits computes x @ W"),
    ("bits-3", "qtool writes MatMulNBits with 4- or 8-bit codes (a 3-bit grid is stored in the next wider "
               "DequantizeLinear type"),
    ("fp8", "its weight is fp8 e4m3 per-block(axis=0, size=32), and MatMulNBits takes 4- or 8-bit integer codes")])
def test_weight_only_fallback_notes_say_why_not_matmulnbits(tmp_path, case, why):
    """The PERFORMANCE note of a weight-only layer written as DequantizeLinear -> float op gave activation reasons
    ('input ... is not quantized'); it says why MatMulNBits could not take it (found by a user-style probe)."""
    model = _embedding_model(tmp_path / "m.onnx", 64, weight_first=case == "weight-first")
    weight = {"bits-3": {"bits": 3}, "fp8": {"format": "fp8_e4m3"}}.get(case)
    config = {"override": [{"op_name": "proj", "weight": weight}]} if weight else None
    result = qtool.quantize(model, "onnxruntime", preset="int4-weight-only", config=config,
                            output=tmp_path / "q.onnx")
    [note] = [d for d in result.diagnostics if d.op == "proj" and d.code == "ort.perf.nbits-fallback"]
    assert note.code == "ort.perf.nbits-fallback" and note.severity is qtool.Severity.PERFORMANCE
    assert why in note.message and "not quantized" not in note.message


@pytest.mark.parametrize("weight, rewritten", [
    ({"bits": 1, "signed": False, "symmetric": False}, True), ({"bits": 2}, True), ({"bits": 3}, True),
    ({"bits": 6, "symmetric": False}, True), ({"block_size": 24}, False)])
def test_weight_only_fallback_says_whether_onnxruntime_makes_it_matmulnbits(tmp_path, weight, rewritten):
    """ORT 1.32 makes a blocked DequantizeLinear -> MatMul a MatMulNBits at accuracy level 4 by the stored type
    (int2, int4, int8: 1-, 2-, 3- and 6-bit grids too) and leaves blocks of 24 alone; the notes said the opposite of
    both, from the scheme's bit width (found by a user-style probe)."""
    import onnxruntime as ort
    from qtool_onnxruntime.session import session_options

    config = {"override": [{"op_name": "proj", "weight": weight}]}
    result = qtool.quantize(_embedding_model(tmp_path / "m.onnx", 64), "onnxruntime", preset="int4-weight-only",
                            config=config, output=tmp_path / "q.onnx")
    assert ("MatMulNBits" in optimized_ops(result.files[0], tmp_path)) is rewritten
    feeds = {"ids": np.arange(8, dtype=np.int64)}
    default, exact = (ort.InferenceSession(str(result.files[0]), options, providers=["CPUExecutionProvider"])
                      .run(None, feeds)[0] for options in (ort.SessionOptions(), session_options(exact=True)))
    assert bool(np.abs(default - exact).max() > 0) is rewritten
    [note] = [d for d in result.diagnostics if d.op == "proj" and d.code == "ort.perf.nbits-fallback"]
    assert ("runs as the MatMulNBits ONNX Runtime makes" in note.message) is rewritten
    assert ("ort.nbits-accuracy-level" in {d.code for d in result.diagnostics}) is rewritten


def test_input_size_not_a_whole_number_of_blocks_is_said(tmp_path):
    """MatMulNBits pads the last block where K is not a multiple of the block size (a Qwen2-style K = 320 at block
    256 stored more than at block 128), without a word (found by a user-style probe): a warning counts such layers."""
    result = qtool.quantize(_embedding_model(tmp_path / "m.onnx", 48), "onnxruntime", preset="int4-weight-only",
                            output=tmp_path / "q.onnx")
    [note] = [d for d in result.diagnostics if d.code == "ort.nbits-padding"]
    assert note.severity is qtool.Severity.WARNING and note.op == "proj"
    assert note.message == ("1 MatMulNBits layer(s) whose input size K is not a whole number of blocks (K = 48, "
                            "blocks of 32): the last block is padded, so each column stores 64 codes for 48 weights "
                            "(33% more); blocks of 16 divide it")
    result = qtool.quantize(_embedding_model(tmp_path / "m64.onnx", 64), "onnxruntime", preset="int4-weight-only",
                            output=tmp_path / "q64.onnx")
    assert not result.diagnostics



def test_input_size_within_half_a_block_is_written_in_a_block_that_holds_it(tmp_path):
    """K = 64 at blocks of 256 is one block either way, but MatMulNBits was written with block_size 256 and 256 codes
    per column, 4x the codes (a 128-wide Llama at block 256: 0.65 MB of weights against 0.42 MB at block 128; found
    by a user-style probe). It is written in blocks of 64: the same codes and scales as at 64, nothing padded."""
    def packed(block):
        config = {"weight_only": {"block_size": block}}
        out = tmp_path / f"q{block}.onnx"
        qtool.quantize(_embedding_model(tmp_path / "m.onnx", 64), "onnxruntime", preset="int4-weight-only",
                       config=config, output=out)
        model = onnx.load(out)
        [node] = [n for n in model.graph.node if n.op_type == "MatMulNBits"]
        weights = {t.name: onnx.numpy_helper.to_array(t) for t in model.graph.initializer if t.name in node.input}
        attributes = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        return attributes["block_size"], [weights[name] for name in node.input[1:] if name in weights]

    block, arrays = packed(256)
    assert block == 64 and arrays[0].shape == (32, 1, 32)
    for ours, at_64 in zip(arrays, packed(64)[1], strict=True):
        np.testing.assert_array_equal(ours, at_64)
    result = qtool.quantize(_embedding_model(tmp_path / "m48.onnx", 48), "onnxruntime", preset="int4-weight-only",
                            config={"weight_only": {"block_size": 256}}, output=tmp_path / "q48.onnx")
    [note] = [d for d in result.diagnostics if d.code == "ort.nbits-padding"]
    assert "(K = 48, blocks of 64): the last block is padded, so each column stores 64 codes" in note.message

def test_a_stack_of_expert_weights_gathered_whole_says_how_it_runs(tmp_path):
    """A mixture-of-experts table [experts, in, out] gathered by routing ids: GatherBlockQuantized takes a 2-D table,
    so it runs as DequantizeLinear -> Gather, and the note says so in a sentence (it read 'it the whole table
    dequantized at every run'; found by a user-style probe)."""
    rng = np.random.default_rng(0)
    table = rng.standard_normal((4, 32, 16)).astype(np.float32)
    nodes = [onnx.helper.make_node("Gather", ["experts", "route"], ["w"], name="pick"),
             onnx.helper.make_node("MatMul", ["x", "w"], ["y"], name="expert")]
    graph = onnx.helper.make_graph(
        nodes, "moe", [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["n", 1, 32]),
                       onnx.helper.make_tensor_value_info("route", onnx.TensorProto.INT64, ["n"])],
        [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, ["n", 1, 16])],
        initializer=[onnx.numpy_helper.from_array(table, "experts")])
    path = tmp_path / "moe.onnx"
    onnx.save(onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 21)]), path)
    result = qtool.quantize(path, "onnxruntime", preset="int4-weight-only", output=tmp_path / "q.onnx")
    [note] = [d for d in result.diagnostics if d.op == "pick" and d.code == "ort.perf.nbits-fallback"]
    assert "; it runs as DequantizeLinear -> Gather, the whole table dequantized at every run" in note.message


def test_a_product_of_two_activations_under_weight_only_says_it_has_no_weight(tmp_path):
    """Weight-only quantizes weights: an attention-like product of two activations stays float because it has none
    (the reason read 'the configuration keeps all its tensors float', which the user never set; found by a probe)."""
    rng = np.random.default_rng(0)
    nodes = [onnx.helper.make_node("MatMul", ["x", "w"], ["h"], name="proj"),
             onnx.helper.make_node("Transpose", ["h"], ["ht"], perm=[1, 0], name="t"),
             onnx.helper.make_node("MatMul", ["h", "ht"], ["y"], name="scores")]
    graph = onnx.helper.make_graph(
        nodes, "att", [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["n", 64])],
        [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, ["n", "n"])],
        initializer=[onnx.numpy_helper.from_array(rng.standard_normal((64, 32)).astype(np.float32), "w")])
    path = tmp_path / "att.onnx"
    onnx.save(onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 21)]), path)
    plan = plan_for(path, "onnxruntime", preset="int4-weight-only")
    scores = plan.graph.operations["scores"]
    assert not scores.quant.quantized
    assert scores.quant.reason == "MatMul: no constant weight, and weight-only quantizes weights only"
    assert plan.graph.operations["proj"].quant.quantized


def test_int32_bias_mode_under_weight_only_is_said_to_be_ignored(tmp_path):
    """Weight-only keeps activations float, so no bias is int32: [bias] mode = "int32" was dropped with no word and
    explain's header read 'bias: int32' over a float bias (found by a user-style probe, D4)."""
    from qtool.config import resolve_config
    from qtool.platform import get_platform

    config = {"weight_only": {"enabled": True}, "bias": {"mode": "int32"}}
    samples = [{"x": np.random.default_rng(i).standard_normal((2, 64)).astype(np.float32)} for i in range(4)]
    result = qtool.quantize(_gemm(tmp_path / "gemm.onnx", 0), "onnxruntime", samples, config=config,
                            output=tmp_path / "q.onnx")
    [node] = onnx.load(tmp_path / "q.onnx").graph.node
    bias = {i.name: i for i in onnx.load(tmp_path / "q.onnx").graph.initializer}[node.input[5]]
    assert node.op_type == "MatMulNBits" and bias.data_type == onnx.TensorProto.FLOAT
    notes = {d.code: d.message for d in result.diagnostics}
    assert "ignored config: bias (mode)" in notes["config.weight-only-ignored"]
    resolved = resolve_config(get_platform("onnxruntime").default_config(), config)
    assert resolved.bias_mode == "float" and "\nbias: float\n" in resolved.describe()
    assert resolve_config({}, resolved.to_dict()).ignored == ()


@pytest.mark.parametrize("listed", [["W"], ["W", "b", "V"]], ids=["one", "all"])
def test_initializers_also_graph_inputs_are_quantized_and_the_interface_change_said(tmp_path, listed):
    """Initializers listed as graph inputs (IR 4 and later: defaults a caller may feed; exporters list every weight
    so with keep_initializers_as_inputs, and ONNX Runtime warns of each) are quantized as the constants they hold;
    the written model dropped those inputs without a word, and feeding W failed with 'Invalid input name: W'
    (found by a user-style probe). A WARNING names them now."""
    rng = np.random.default_rng(0)
    values = {"W": rng.standard_normal((64, 32)), "b": rng.standard_normal(32), "V": rng.standard_normal((32, 8))}
    shapes = {"x": ["n", 64], **{name: list(value.shape) for name, value in values.items()}}
    graph = onnx.helper.make_graph(
        [onnx.helper.make_node("MatMul", ["x", "W"], ["m"], name="mm"),
         onnx.helper.make_node("Add", ["m", "b"], ["a"], name="add"),
         onnx.helper.make_node("Relu", ["a"], ["r"], name="relu"),
         onnx.helper.make_node("MatMul", ["r", "V"], ["y"], name="out")], "g",
        [onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, shapes[name]) for name in ["x", *listed]],
        [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, ["n", 8])],
        initializer=[onnx.numpy_helper.from_array(v.astype(np.float32), k) for k, v in values.items()])
    model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, tmp_path / "m.onnx")
    samples = [{"x": rng.standard_normal((2, 64)).astype(np.float32)} for _ in range(4)]
    result = qtool.quantize(tmp_path / "m.onnx", "onnxruntime", samples, output=tmp_path / "q.onnx")
    assert result.summary["coverage"]["compute_ops_quantized"] == 2
    (warning,) = [d for d in result.diagnostics if d.code == "model.initializers-as-inputs"]
    assert warning.message.startswith(f"{len(listed)} initializer(s) of the model are also graph inputs ('W'")
    assert [i.name for i in onnx.load(result.files[0]).graph.input] == ["x"]



def _experts_model(path, weight_first: bool):
    """A mixture of experts' routed projection (Mixtral's experts, as transformers' batched_mm writes them): tokens
    x [n, 64] pick their expert's matrix, Gather(stack [4, 64, 32], ids) -> x @ W, or W @ x of a [4, 32, 64] stack."""
    rng = np.random.default_rng(0)
    stack = rng.standard_normal((4, 32, 64) if weight_first else (4, 64, 32)).astype(np.float32) / 8
    nodes = [onnx.helper.make_node("Gather", ["stack", "ids"], ["w"], axis=0, name="pick"),
             onnx.helper.make_node("Unsqueeze", ["x", "axes"], ["xu"], name="unsq")]
    nodes.append(onnx.helper.make_node("MatMul", ["w", "xu"] if weight_first else ["xu", "w"], ["y"], name="expert"))
    graph = onnx.helper.make_graph(
        nodes, "moe", [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["n", 64]),
                       onnx.helper.make_tensor_value_info("ids", onnx.TensorProto.INT64, ["n"])],
        [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, None)],
        initializer=[onnx.numpy_helper.from_array(stack, "stack"),
                     onnx.numpy_helper.from_array(np.array([-1 if weight_first else 1], np.int64), "axes")])
    onnx.save(onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17)]), path)
    return path


@pytest.mark.parametrize("weight_first", [False, True])
def test_routed_expert_stacks_get_the_projection_bits_blocked_along_their_sum(tmp_path, weight_first):
    """A stack of expert matrices is projection weights, not an embedding table: int4-weight-only wrote Mixtral's
    experts (most of its weights) at embedding_bits (8), and for x @ W blocked them along the output axis."""
    model = _experts_model(tmp_path / "moe.onnx", weight_first)
    rng = np.random.default_rng(1)
    feeds = [{"x": rng.standard_normal((16, 64)).astype(np.float32), "ids": rng.integers(0, 4, 16)} for _ in range(4)]
    qtool.quantize(model, "onnxruntime", feeds, calib_layout="feeds", preset="int4-weight-only",
                   output=tmp_path / "q.onnx")
    written = onnx.load(tmp_path / "q.onnx")
    [dq] = [n for n in written.graph.node if n.op_type == "DequantizeLinear"]
    codes = next(t for t in written.graph.initializer if t.name == dq.input[0])
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in dq.attribute}
    assert codes.data_type == onnx.TensorProto.UINT4
    assert (attrs["axis"], attrs["block_size"]) == (2 if weight_first else 1, 32)  # the axis the MatMul sums over
    ref, got = (cpu_session(m).run(None, feeds[0])[0] for m in (str(model), str(tmp_path / "q.onnx")))
    assert 10 * np.log10(np.sum(ref ** 2) / np.sum((ref - got) ** 2)) > 15  # 4-bit blocks of 32: about 20 dB
