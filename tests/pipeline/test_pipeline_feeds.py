"""Models that cannot be fed stacked samples quantize end to end on onnxruntime: a stateful recurrent model
(inputs [T, F] and state [1, 1, H]) from a folder of feeds, an ONNX Runtime reader and a generator; a model
whose batch of 1 is baked into a channel-shuffle Reshape, with defaults."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import qtool
from onnxruntime.quantization import CalibrationDataReader
from qtool.calibration import CalibrationError
from qtool.cli.main import main
from qtool.testing.feed_models import recurrent_feed as feed
from qtool.testing.feed_models import recurrent_step_model, shuffle_batch1_model


class Reader(CalibrationDataReader):
    def __init__(self, count: int):
        self.feeds = iter([feed(i) for i in range(count)])

    def get_next(self):
        return next(self.feeds, None)


def quantized_inputs(path, op_type: str) -> list[bool]:
    """For each ``op_type`` node of the exported file: do all its inputs come through DequantizeLinear?"""
    graph = onnx.load(str(path)).graph
    dequantized = {out for n in graph.node if n.op_type == "DequantizeLinear" for out in n.output}
    return [all(i in dequantized for i in n.input[:2]) for n in graph.node if n.op_type == op_type]


def check_export(path, model, sample) -> None:
    assert quantized_inputs(path, "MatMul") and all(quantized_inputs(path, "MatMul"))
    quantized = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, sample)
    reference = ort.InferenceSession(model, providers=["CPUExecutionProvider"]).run(None, sample)
    for got, want in zip(quantized, reference, strict=True):
        assert got.shape == want.shape
        assert 10 * np.log10(np.sum(want**2) / np.sum((got - want) ** 2)) > 25  # SQNR in dB


@pytest.fixture(scope="module")
def recurrent(tmp_path_factory) -> str:
    return recurrent_step_model(tmp_path_factory.mktemp("model") / "recurrent.onnx")


def test_a_recurrent_model_calibrates_from_a_folder_of_feeds_on_the_command_line(recurrent, tmp_path, capsys):
    folder = tmp_path / "feeds"
    folder.mkdir()
    for i in range(16):
        np.savez(folder / f"{i:02d}.npz", **feed(i))
    output = tmp_path / "q.onnx"
    assert main(["quantize", recurrent, "--platform", "onnxruntime", "--calib", str(folder), "-o", str(output)]) != 0
    assert "--calib-layout feeds" in capsys.readouterr().err
    assert not output.exists()
    assert main(["quantize", recurrent, "--platform", "onnxruntime", "--calib", str(folder), "-o", str(output),
                 "--calib-layout", "feeds", "--calib-samples", "12"]) == 0
    check_export(output, recurrent, feed(10))


@pytest.mark.parametrize("source", ["reader", "generator"])
def test_a_recurrent_model_calibrates_from_a_reader_and_a_generator(recurrent, tmp_path, source):
    data = Reader(12) if source == "reader" else (feed(i) for i in range(12))
    output = tmp_path / "q.onnx"
    result = qtool.quantize(recurrent, "onnxruntime", data, output=output,
                            calib_layout=None if source == "reader" else "feeds")
    calibration = next(r for r in result.pass_runs if r.name == "RuntimeCalibration")
    assert calibration.details["samples"] == 12 and calibration.details["batches"] == 12
    check_export(output, recurrent, feed(11))


@pytest.mark.parametrize("source", ["reader", "generator"])
def test_a_stream_an_earlier_call_used_up_is_refused_saying_so_and_its_data_reused_as_loaded(recurrent, tmp_path,
                                                                                            source):
    """A second call with the same generator or reader said only 'the calibration data holds no samples'; an
    earlier result's .calibration is the way to reuse what the stream gave, and keeps the settings it was loaded
    with (max_samples and calib_layout given with it were dropped without a word)."""
    data = Reader(10) if source == "reader" else (feed(i) for i in range(10))
    first = qtool.quantize(recurrent, "onnxruntime", data, calib_layout="feeds")
    used_up = "get_next\\(\\) returned None: a Reader is read once" if source == "reader" else "generator gave no item"
    with pytest.raises(CalibrationError, match=f"{used_up}.*an earlier result's .calibration"):
        qtool.quantize(recurrent, "onnxruntime", data, calib_layout="feeds")
    again = qtool.quantize(recurrent, "onnxruntime", first.calibration, output=tmp_path / "again.onnx")
    check_export(tmp_path / "again.onnx", recurrent, feed(3))
    assert again.calibration is first.calibration
    with pytest.raises(CalibrationError, match=r"already loaded calibration data .* got max_samples=4: pass the data"):
        qtool.quantize(recurrent, "onnxruntime", first.calibration, max_samples=4)


def test_already_loaded_data_for_another_model_is_refused_before_any_work(recurrent, tmp_path):
    """It failed in calibration, with ONNX Runtime's 'Required inputs ... are missing from input feed'."""
    from qtool.testing.models import small_model

    loaded = qtool.quantize(recurrent, "onnxruntime", [feed(i) for i in range(4)], calib_layout="feeds").calibration
    with pytest.raises(CalibrationError, match=r"already loaded for a model with inputs .*this model's are"):
        qtool.quantize(small_model(tmp_path / "m.onnx"), "onnxruntime", loaded)


def test_samples_held_out_read_a_stream_no_further_than_they_need(recurrent):
    """max_samples=6 and the 8 samples held out after them: the generator gave a 15th item, lost to its caller."""
    pulled = []
    stream = (pulled.append(i) or feed(i) for i in range(40))
    qtool.quantize(recurrent, "onnxruntime", stream, calib_layout="feeds", max_samples=6)
    assert len(pulled) == 6 + 8


def test_stacked_samples_of_a_recurrent_model_are_refused_with_the_feeds_hint(recurrent):
    with pytest.raises(CalibrationError, match="different numbers of samples.*calib_layout='feeds'"):
        qtool.quantize(recurrent, "onnxruntime", [feed(0)])


@pytest.mark.parametrize("declared", [1, "batch"])
def test_a_fixed_batch_1_model_quantizes_with_defaults(tmp_path, declared):
    """Batch 1 declared by the input, or only baked into the shuffle's Reshape (the input says 'batch')."""
    model = shuffle_batch1_model(tmp_path / "shuffle.onnx", batch=declared)
    x = np.random.default_rng(2).standard_normal((12, 3, 6, 6)).astype(np.float32)
    np.savez(tmp_path / "calib.npz", x=x)
    output = tmp_path / "q.onnx"
    result = qtool.quantize(model, "onnxruntime", tmp_path / "calib.npz", output=output)
    calibration = next(r for r in result.pass_runs if r.name == "RuntimeCalibration")
    assert calibration.details["samples"] == 12 and calibration.details["batches"] == 12
    assert all(quantized_inputs(output, "Conv")) and len(quantized_inputs(output, "Conv")) == 2
    check_export(output, model, {"x": x[:1]})
