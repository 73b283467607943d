"""Models larger than memory: lazy loading of external data and quantization segment by segment
(qtool.by_blocks), on a small Llama-style decoder written with external data."""

from collections import Counter

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import qtool
from onnx import numpy_helper
from qtool.by_blocks import quantize_by_blocks
from qtool.executor import TorchExecutor
from qtool.ir import GraphError
from qtool.ir.external_data import is_mapped
from qtool.ir.segments import late_order, split
from qtool.testing.llama import LlamaConfig, decoder_feeds, write_llama
from qtool.testing.models import token_matmuls_model

CONFIG = LlamaConfig(vocab=256, hidden=64, intermediate=128, layers=2, heads=4)
BLOCK = 150_000  # bytes of parameters per segment: a few segments


@pytest.fixture(scope="module")
def decoder(tmp_path_factory):
    return write_llama(tmp_path_factory.mktemp("llama") / "llama.onnx", CONFIG)


def _calib(count=3, seed=1):
    rng = np.random.default_rng(seed)
    return [decoder_feeds(CONFIG, rng.integers(0, CONFIG.vocab, (1, 8))) for _ in range(count)]


def _initializers(path):
    return {t.name: numpy_helper.to_array(t, str(path.parent)) for t in onnx.load(path).graph.initializer}


def _run(path, feeds):
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, feeds)


def test_load_maps_external_weights_instead_of_reading_them(decoder):
    graph = qtool.load(decoder)
    weights = [v for v in graph.parameters() if v.value.nbytes >= 1024]
    assert weights and all(is_mapped(v.value) and not v.value.flags.writeable for v in weights)
    assert not any(is_mapped(v.value) for v in graph.parameters() if v.value.nbytes < 1024)  # stored inline
    feeds = decoder_feeds(CONFIG, np.arange(8)[None])
    np.testing.assert_allclose(TorchExecutor(graph).forward(feeds)[0], _run(decoder, feeds)[0], atol=1e-5)


def test_segments_cut_where_few_activations_cross(decoder):
    graph = qtool.load(decoder)
    segments = split(graph, BLOCK)
    assert len(segments) > 2
    assert [op for s in segments for op in s.ops] == late_order(graph)
    assert sorted(op.name for op in late_order(graph)) == sorted(op.name for op in graph.topological_order())
    inputs = {v.name for v in graph.inputs}
    for segment in segments[1:]:
        assert 0 < len([v for v in segment.inputs if v.name not in inputs]) <= 4
    assert len(split(graph, 2**40)) == 1  # a budget above the model: one segment, the whole model


@pytest.mark.parametrize("accuracy", [None, {"gptq": True}], ids=["rtn", "gptq"])
def test_by_blocks_writes_what_the_whole_model_path_writes(decoder, tmp_path, accuracy):
    calib = _calib()
    options = {"preset": "int4-weight-only", "calib_layout": "feeds", "accuracy": accuracy}
    blocks = quantize_by_blocks(decoder, "onnxruntime", calib, output=tmp_path / "blocks.onnx", block_bytes=BLOCK,
                                **options)
    whole = qtool.quantize(decoder, "onnxruntime", calib, output=tmp_path / "whole.onnx", **options)
    assert len(blocks.segments) > 2
    assert blocks.files == [tmp_path / "blocks.onnx", tmp_path / "blocks.onnx.data"]
    onnx.checker.check_model(str(blocks.files[0]))
    ops = Counter(n.op_type for n in onnx.load(blocks.files[0], load_external_data=False).graph.node)
    assert ops == Counter(n.op_type for n in onnx.load(whole.files[0]).graph.node)
    assert ops["MatMulNBits"] == 7 * CONFIG.layers + 1 and ops["GatherBlockQuantized"] == 1
    ours, theirs = _initializers(blocks.files[0]), _initializers(whole.files[0])
    assert ours.keys() == theirs.keys()
    assert all(np.array_equal(ours[name], theirs[name]) for name in ours)  # byte for byte
    feeds = decoder_feeds(CONFIG, np.arange(8)[None] * 3)
    for a, b in zip(_run(blocks.files[0], feeds), _run(whole.files[0], feeds), strict=True):
        np.testing.assert_array_equal(a, b)
    assert blocks.agreement["min_cosine"] > 0.9999 and "error" not in blocks.agreement


def test_gptq_by_blocks_changes_the_weights_rtn_writes(decoder, tmp_path):
    calib = _calib()
    written = {}
    for name, accuracy in (("rtn", None), ("gptq", {"gptq": True})):
        result = quantize_by_blocks(decoder, "onnxruntime", calib, output=tmp_path / f"{name}.onnx",
                                    preset="int4-weight-only", calib_layout="feeds", accuracy=accuracy,
                                    block_bytes=BLOCK)
        written[name] = _initializers(result.files[0])
    packed = [n for n in written["rtn"] if written["rtn"][n].dtype == np.uint8 and written["rtn"][n].ndim == 3]
    assert packed and any(not np.array_equal(written["rtn"][n], written["gptq"][n]) for n in packed)


def test_gptq_by_blocks_keeps_each_sample_of_a_shape_vector_apart(tmp_path):
    """A segment reads a shape vector (``Shape(x)``, made before the cut) beside its activations: GPTQ joined the
    samples into one batch, shape vectors too, and failed in the Reshape (a user-style probe's Llama export, 'only
    one dimension can be inferred'); each sample now runs on its own and the bytes are the whole-model path's."""
    model = token_matmuls_model(tmp_path / "model.onnx")
    assert [v.name for v in split(qtool.load(model), 100_000)[1].inputs] == ["f", "shape"]
    rng = np.random.default_rng(2)
    calib = [{"x": rng.standard_normal((1, 8, 64)).astype(np.float32)} for _ in range(3)]
    options = {"preset": "int4-weight-only", "calib_layout": "feeds", "accuracy": {"gptq": True}}
    blocks = quantize_by_blocks(model, "onnxruntime", calib, output=tmp_path / "blocks.onnx", block_bytes=100_000,
                                **options)
    whole = qtool.quantize(model, "onnxruntime", calib, output=tmp_path / "whole.onnx", **options)
    assert len(blocks.segments) == 2
    ours, theirs = _initializers(blocks.files[0]), _initializers(whole.files[0])
    assert ours.keys() == theirs.keys() and all(np.array_equal(ours[name], theirs[name]) for name in ours)


def test_adaround_by_blocks_keeps_each_sample_of_a_shape_vector_apart(tmp_path):
    """The same segment under AdaRound, which joined the feeds into one batch as GPTQ did: the segment's Reshape
    failed (a Llama segment's 'size of tensor a (64) must match the size of tensor b (32)'). Each feed runs on its
    own now, and ONNX Runtime runs the written model."""
    model = token_matmuls_model(tmp_path / "model.onnx")
    rng = np.random.default_rng(2)
    calib = [{"x": rng.standard_normal((1, 8, 64)).astype(np.float32)} for _ in range(3)]
    blocks = quantize_by_blocks(model, "onnxruntime", calib, output=tmp_path / "blocks.onnx", block_bytes=100_000,
                                calib_layout="feeds", accuracy={"adaround": {"iterations": 20}})
    assert len(blocks.segments) == 2
    session = ort.InferenceSession(str(blocks.files[0]), providers=["CPUExecutionProvider"])
    assert np.isfinite(session.run(None, calib[0])[0]).all()


def test_missing_external_data_is_one_line_and_writes_nothing(decoder, tmp_path):
    folder = tmp_path / "broken"
    folder.mkdir()
    model = folder / "llama.onnx"
    model.write_bytes(decoder.read_bytes())  # its data file is not beside it
    with pytest.raises(GraphError, match=r"llama.onnx: tensor 'embed_tokens.weight' external data "
                                         r"'llama.onnx.data': no such file") as caught:
        quantize_by_blocks(model, "onnxruntime", _calib(1), output=tmp_path / "out.onnx",
                           preset="int4-weight-only", calib_layout="feeds")
    assert "\n" not in str(caught.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["broken"]


def test_cli_by_blocks(decoder, tmp_path, capsys):
    from qtool.cli.main import main

    calib = tmp_path / "calib.npz"
    samples = _calib(2)
    np.savez(calib, **{k: np.concatenate([s[k] for s in samples]) for k in samples[0]})
    out = tmp_path / "q" / "llama.onnx"
    assert main(["quantize", str(decoder), "--platform", "onnxruntime", "--preset", "int4-weight-only",
                 "--calib", str(calib), "-o", str(out), "--by-blocks", "0.15"]) == 0
    printed = capsys.readouterr().out
    assert "segment 1/" in printed and "agrees with qtool's simulation" in printed
    ops = Counter(n.op_type for n in onnx.load(out, load_external_data=False).graph.node)
    assert ops["MatMulNBits"] == 7 * CONFIG.layers + 1
    assert main(["quantize", str(decoder), "--platform", "onnxruntime", "--calib", str(calib), "-o",
                 str(tmp_path / "x.onnx"), "--by-blocks", "1", "--save-state", str(tmp_path / "s.json")]) == 1
    assert "--by-blocks does not combine with --save-state" in capsys.readouterr().err


def _relu_mlp(path, width=32):
    """Gemm -> Relu -> Gemm -> Relu -> Gemm: with a block of one Gemm's weights, a segment ends after each fused
    Relu, whose output that segment quantizes and the next one quantizes again as its input."""
    rng = np.random.default_rng(0)
    weights = [numpy_helper.from_array(rng.standard_normal((width, width)).astype(np.float32) / 4, f"w{i}")
               for i in range(3)]
    nodes = [onnx.helper.make_node("Gemm", ["x", "w0"], ["h0"], name="gemm0"),
             onnx.helper.make_node("Relu", ["h0"], ["r0"], name="relu0"),
             onnx.helper.make_node("Gemm", ["r0", "w1"], ["h1"], name="gemm1"),
             onnx.helper.make_node("Relu", ["h1"], ["r1"], name="relu1"),
             onnx.helper.make_node("Gemm", ["r1", "w2"], ["y"], name="gemm2")]
    graph = onnx.helper.make_graph(nodes, "mlp", [onnx.helper.make_tensor_value_info("x", 1, ["n", width])],
                                   [onnx.helper.make_tensor_value_info("y", 1, ["n", width])], initializer=weights)
    onnx.save(onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17)]), path)
    return path


def test_a_tensor_quantized_on_both_sides_of_a_cut_is_written_once_per_side(tmp_path):
    model = _relu_mlp(tmp_path / "mlp.onnx")
    rng = np.random.default_rng(1)
    calib = [{"x": rng.standard_normal((4, 32)).astype(np.float32)} for _ in range(4)]
    result = quantize_by_blocks(model, "onnxruntime", calib, output=tmp_path / "q.onnx", block_bytes=5000,
                                calib_layout="feeds")
    assert len(result.segments) == 3
    written = onnx.load(result.files[0])
    onnx.checker.check_model(written, full_check=True)  # node and tensor names unique
    got = _run(result.files[0], calib[0])[0]
    expected = _run(model, calib[0])[0]
    assert 10 * np.log10(np.sum(expected ** 2) / np.sum((got - expected) ** 2)) > 30


def test_the_output_may_not_be_the_input_models_external_data(decoder, tmp_path):
    folder = tmp_path / "m"
    folder.mkdir()
    model, data = folder / "llama.onnx", folder / "llama.onnx.data"
    model.write_bytes(decoder.read_bytes())
    data.write_bytes((decoder.parent / "llama.onnx.data").read_bytes())
    before = data.read_bytes()
    for run in (lambda: qtool.quantize(model, "onnxruntime", _calib(1), output=data, calib_layout="feeds"),
                lambda: quantize_by_blocks(model, "onnxruntime", _calib(1), output=data, calib_layout="feeds"),
                lambda: qtool.quantize(model, "onnxruntime", _calib(1), output=folder / "llama", calib_layout="feeds")):
        with pytest.raises(qtool.QtoolError, match="would overwrite the input .*llama.onnx"):
            run()
    assert data.read_bytes() == before and sorted(p.name for p in folder.iterdir()) == ["llama.onnx",
                                                                                          "llama.onnx.data"]


def test_a_terminated_run_leaves_nothing_behind(decoder, tmp_path, capsys, monkeypatch):
    """SIGTERM (a job scheduler's stop, a timeout) after the first segment: exit 143, one line, and neither the
    half-written model, its data nor the segments' work folder left in the output's folder."""
    import os
    import signal

    import qtool.by_blocks as by_blocks
    from qtool.cli.main import main

    segment = by_blocks._quantize_segment

    def then_terminated(*args, **kwargs):
        done = segment(*args, **kwargs)
        os.kill(os.getpid(), signal.SIGTERM)
        return done

    monkeypatch.setattr(by_blocks, "_quantize_segment", then_terminated)
    calib, samples = tmp_path / "calib.npz", _calib(2)
    np.savez(calib, **{k: np.concatenate([s[k] for s in samples]) for k in samples[0]})
    out = tmp_path / "q"
    assert main(["quantize", str(decoder), "--platform", "onnxruntime", "--preset", "int4-weight-only",
                 "--calib", str(calib), "-o", str(out / "llama.onnx"), "--by-blocks", "0.15"]) == 143
    assert capsys.readouterr().err.strip().splitlines()[-1] == "qtool: terminated"
    assert not out.exists() or list(out.iterdir()) == []
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the handler goes with the command


def test_by_blocks_json_is_a_versioned_document(decoder, tmp_path, capsys):
    import json

    from qtool.cli.main import main

    calib, samples = tmp_path / "calib.npz", _calib(2)
    np.savez(calib, **{k: np.concatenate([s[k] for s in samples]) for k in samples[0]})
    assert main(["quantize", str(decoder), "--platform", "onnxruntime", "--preset", "int4-weight-only", "--calib",
                 str(calib), "-o", str(tmp_path / "q.onnx"), "--by-blocks", "0.15", "--json"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert document["schema_version"] == 1 and set(document["by_blocks"]) == {"files", "segments", "agreement",
                                                                               "seconds"}
    assert {"index", "ops", "quantized_ops", "min_cosine"} <= set(document["by_blocks"]["segments"][0])


def test_a_model_whose_tensors_all_stay_inline_gets_no_data_file(tmp_path):
    """Every tensor under the inline size: a 0-byte .onnx.data was written beside it (and 'wrote ... and its data'
    said); an earlier run's data file there is removed, as the model no longer reads it (a probe's finding)."""
    from qtool.testing.models import calibration_file, small_model

    model = small_model(tmp_path / "m.onnx")
    calib = calibration_file(qtool.load(model), tmp_path / "c.npz")
    stale = tmp_path / "q.onnx.data"
    stale.write_bytes(b"an earlier run's")
    result = quantize_by_blocks(model, "onnxruntime", calib, output=tmp_path / "q.onnx", block_bytes=1 << 20)
    assert result.files == [tmp_path / "q.onnx"] and not stale.exists()
    onnx.checker.check_model(str(result.files[0]))


def _exported_decoder_like(path, layers=6, width=32):
    """What a torch export of a decoder looks like to the cut: each layer's mask is computed from a graph input
    (Mul) and its norm weight is an Identity of one shared initializer (torch deduplicates equal weights), so
    the topological order puts every layer's mask and norm weight first and they cross every cut after it. The
    weights are in external data."""
    rng = np.random.default_rng(0)
    nodes, weights, h = [], [numpy_helper.from_array(np.ones(width, np.float32), "norm")], "x"
    for k in range(layers):
        weights.append(numpy_helper.from_array(rng.standard_normal((width, width)).astype(np.float32) / 6, f"w{k}"))
        weights.append(numpy_helper.from_array(np.float32(-(k + 1)), f"c{k}"))
        nodes += [onnx.helper.make_node("Mul", ["mask", f"c{k}"], [f"mask{k}"], name=f"mask{k}"),
                  onnx.helper.make_node("Identity", ["norm"], [f"norm{k}"], name=f"norm{k}"),
                  onnx.helper.make_node("MatMul", [h, f"w{k}"], [f"m{k}"], name=f"mm{k}"),
                  onnx.helper.make_node("Mul", [f"m{k}", f"norm{k}"], [f"n{k}"], name=f"scale{k}"),
                  onnx.helper.make_node("Add", [f"n{k}", f"mask{k}"], [f"h{k}"], name=f"add{k}")]
        h = f"h{k}"
    inputs = [onnx.helper.make_tensor_value_info(name, 1, ["n", width]) for name in ("x", "mask")]
    graph = onnx.helper.make_graph(nodes, "decoder", inputs, [onnx.helper.make_tensor_value_info(h, 1, ["n", width])],
                                   initializer=weights)
    onnx.save(onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17)]), path,
              save_as_external_data=True, location="decoder.onnx.data", size_threshold=1024)
    return path


def test_a_layers_own_mask_and_shared_weight_do_not_stop_the_cuts(tmp_path):
    model = _exported_decoder_like(tmp_path / "decoder.onnx")
    graph = qtool.load(model)
    segments = split(graph, 5000)  # a layer: its weight and a little more
    assert len(segments) == 6
    for segment in segments[1:]:
        assert [v.name for v in segment.inputs] == ["mask", f"h{segment.index - 1}"]
    rng = np.random.default_rng(1)
    calib = [{"x": rng.standard_normal((4, 32)).astype(np.float32), "mask": np.zeros((4, 32), np.float32)}
             for _ in range(4)]
    result = quantize_by_blocks(model, "onnxruntime", calib, output=tmp_path / "q.onnx", block_bytes=5000,
                                calib_layout="feeds")
    assert len(result.segments) == 6 and result.agreement["min_cosine"] > 0.999
