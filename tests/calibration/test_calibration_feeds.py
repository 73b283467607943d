"""Calibration data fed as the model takes it: the feeds layout, readers, streams, transforms, limits, NaN/Inf."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import qtool
import torch
from onnxruntime.quantization import CalibrationDataReader
from qtool.calibration import CalibrationError, CalibrationWarning, load_calibration_data


def graph_with_inputs(**shapes) -> qtool.Graph:
    graph = qtool.Graph()
    for name, shape in shapes.items():
        graph.inputs.append(graph.add_variable(name, shape=list(shape), dtype=np.dtype(np.float32)))
    return graph


RECURRENT = graph_with_inputs(x=["T", 6], h=[1, 1, 4], c=[1, 1, 4])
FIXED = graph_with_inputs(x=[1, 3, 4, 4])
IMAGE = graph_with_inputs(x=["batch", 3, 4, 4])


def feed(seed: int, frames: int = 5) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"x": rng.standard_normal((frames, 6)).astype(np.float32),
            "h": rng.standard_normal((1, 1, 4)).astype(np.float32),
            "c": rng.standard_normal((1, 1, 4)).astype(np.float32)}


class Reader(CalibrationDataReader):
    """An ONNX Runtime reader as users write them: get_next() returns one feed dict, then None."""

    def __init__(self, feeds):
        self.feeds, self.calls = iter(feeds), 0

    def get_next(self):
        self.calls += 1
        return next(self.feeds, None)


def test_mismatched_leading_axes_suggest_the_feeds_layout(tmp_path):
    np.savez(tmp_path / "0.npz", **feed(0))
    with pytest.raises(CalibrationError, match=r"0\.npz: inputs hold different numbers of samples \(x: 5, h: 1, "
                                               r"c: 1\); .*--calib-layout feeds"):
        load_calibration_data(tmp_path, RECURRENT)
    with pytest.raises(CalibrationError, match="calibration item 0: .*different numbers.*calib_layout='feeds'"):
        load_calibration_data([feed(0)], RECURRENT)


def test_a_model_with_a_scalar_input_takes_feeds_unless_told_otherwise(tmp_path):
    """A rank-0 input (a temperature, a threshold) has no axis to batch samples over: by default each file or item
    is one model call; the samples layout asked for is refused in one line naming the input (it was an IndexError)."""
    scalar = graph_with_inputs(x=["N", 6], t=[])
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "0.npz", x=rng.standard_normal((5, 6)).astype(np.float32), t=np.float32(0.5))
    data = load_calibration_data(tmp_path / "0.npz", scalar)
    assert data.layout == "feeds" and [b["t"].shape for b in data] == [()]
    items = [{"x": rng.standard_normal((3, 6)).astype(np.float32), "t": np.float32(i)} for i in range(2)]
    assert [float(b["t"]) for b in load_calibration_data(items, scalar)] == [0.0, 1.0]
    with pytest.raises(CalibrationError, match=r"0\.npz: input 't' is a scalar \(rank 0\), with no axis to batch "
                                               r"samples over; .*--calib-layout feeds"):
        load_calibration_data(tmp_path / "0.npz", scalar, layout="samples")


def test_a_folder_of_feeds_is_one_call_per_file_with_shapes_as_they_are(tmp_path):
    for i, frames in enumerate((5, 9, 3)):  # sequence lengths vary
        np.savez(tmp_path / f"{i}.npz", **feed(i, frames))
    data = load_calibration_data(tmp_path, RECURRENT, layout="feeds")
    batches = list(data)
    assert len(data) == 3 and [b["x"].shape for b in batches] == [(5, 6), (9, 6), (3, 6)]
    assert all(b["h"].shape == (1, 1, 4) for b in batches)
    np.testing.assert_array_equal(batches[1]["c"], feed(1, 9)["c"])
    assert [s["x"].shape[0] for s in data.samples(2)] == [5, 9] and len(data.take(2)) == 2


def test_feeds_must_have_the_model_shapes_exactly(tmp_path):
    bad = {**feed(0), "h": np.zeros((1, 4), np.float32)}
    np.savez(tmp_path / "bad.npz", **bad)
    with pytest.raises(CalibrationError, match=r"bad\.npz: input 'h' has shape \[1, 4\], expected float32 "
                                               r"\[1, 1, 4\] \(one model call"):
        load_calibration_data(tmp_path / "bad.npz", RECURRENT, layout="feeds")
    with pytest.raises(CalibrationError, match=r"calibration item 0: input 'x' has shape \[5\], expected "
                                               r"float32 \[T, 6\]"):
        load_calibration_data([{**feed(0), "x": np.zeros(5, np.float32)}], RECURRENT, layout="feeds")
    with pytest.raises(CalibrationError, match=r"^calib_layout \(--calib-layout\): 'rows' is not one of samples, "
                                               "feeds"):
        load_calibration_data([feed(0)], RECURRENT, layout="rows")


def test_an_onnxruntime_reader_is_taken_as_is_and_read_lazily():
    reader = Reader([feed(i) for i in range(4)])
    data = load_calibration_data(reader, RECURRENT)  # a reader gives feeds
    assert data.layout == "feeds" and reader.calls == 1  # only the first feed is read (and checked) up front
    first = [b["x"].copy() for b in data]
    assert reader.calls == 5 and len(data) == 4
    again = [b["x"] for b in data]  # read again from the copy kept on disk, not from the exhausted reader
    assert reader.calls == 5
    for a, b, i in zip(first, again, range(4), strict=True):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(a, feed(i)["x"])


def test_a_generator_is_consumed_lazily():
    pulled = []

    def stream():
        for i in range(50):
            pulled.append(i)
            yield feed(i)

    data = load_calibration_data(stream(), RECURRENT, layout="feeds")
    assert pulled == [0] and data.count is None
    assert len(data.take(3)) == 3 and pulled == [0, 1, 2]
    seen = 0
    for _ in data:
        seen += 1
        assert len(pulled) == max(seen, 3)  # the first three come from disk; then one read per feed, never ahead
    assert seen == 50 and len(data) == 50


def test_a_stream_of_bfloat16_feeds_reads_back_as_bfloat16():
    """A stream is kept on disk to be read again: bfloat16 arrays came back as raw bytes ('V2') and a pass failed
    with 'numpy.void'."""
    import ml_dtypes

    graph = qtool.Graph()
    graph.inputs.append(graph.add_variable("x", shape=["n", 6], dtype=np.dtype(ml_dtypes.bfloat16)))
    feeds = [{"x": np.random.default_rng(i).standard_normal((2, 6)).astype(ml_dtypes.bfloat16)} for i in range(3)]
    data = load_calibration_data((f for f in feeds), graph, layout="feeds")
    for _ in range(2):  # the first pass reads the stream, the second the disk
        read = [batch["x"] for batch in data]
        assert [a.dtype for a in read] == [np.dtype(ml_dtypes.bfloat16)] * 3
        assert all(np.array_equal(a.view(np.uint16), f["x"].view(np.uint16)) for a, f in zip(read, feeds, strict=True))


def test_a_torch_dataloader_of_inputs_and_labels_with_a_transform():
    images = torch.randn(10, 3, 4, 4)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(images, torch.arange(10)), batch_size=4)
    with pytest.raises(CalibrationError, match=r"calibration item 0: a list of 2 values; give transform="):
        load_calibration_data(loader, IMAGE)
    data = load_calibration_data(loader, IMAGE, batch_size=3, transform=lambda item: {"x": item[0]})
    batches = list(data)
    assert [len(b["x"]) for b in batches] == [3, 3, 3, 1] and len(data) == 10
    np.testing.assert_array_equal(np.concatenate([b["x"] for b in batches]), images.numpy())
    with pytest.raises(CalibrationError, match="calibration item 0: transform failed: IndexError"):
        load_calibration_data(loader, IMAGE, transform=lambda item: item[5])


def test_max_samples_keeps_the_first_samples_or_feeds(tmp_path):
    x = np.random.default_rng(0).standard_normal((10, 3, 4, 4)).astype(np.float32)
    data = load_calibration_data(x, IMAGE, batch_size=4, max_samples=6)
    assert len(data) == 6 and [len(b["x"]) for b in data] == [4, 2]
    np.testing.assert_array_equal(np.concatenate([b["x"] for b in data]), x[:6])
    feeds = load_calibration_data(Reader([feed(i) for i in range(9)]), RECURRENT, max_samples=2)
    assert len(list(feeds)) == 2 and len(feeds) == 2
    for wrong in (0, "5", 2.5, True):  # "5" raised numpy's "'<' not supported between 'str' and 'int'"
        with pytest.raises(CalibrationError, match=r"max_samples \(--calib-samples\) must be a whole number of at "
                           rf"least 1, got {wrong!r}"):
            load_calibration_data(x, IMAGE, max_samples=wrong)


class CountingLoader:
    """A re-iterable of single samples, as a DataLoader is, counting the items it gives (each a decode)."""

    def __init__(self, x: np.ndarray) -> None:
        self.x, self.given = x, 0

    def __iter__(self):
        for sample in self.x:
            self.given += 1
            yield sample[None]


def test_samples_held_out_are_kept_as_calibration_reaches_them_not_read_again():
    """held_out() read a re-iterable again from its start: a DataLoader's first max_samples items were decoded twice
    (2080 items for max_samples=1000 of 2000; 1056 now)."""
    x = np.random.default_rng(0).standard_normal((40, 3, 4, 4)).astype(np.float32)
    loader = CountingLoader(x)
    data = load_calibration_data(loader, IMAGE, batch_size=4, max_samples=10)
    assert sum(len(b["x"]) for b in data) == 10
    read = loader.given
    held = data.held_out(8)
    assert loader.given == read <= 1 + 10 + 8  # the first item (checked at load), calibration's, those held out
    np.testing.assert_array_equal(np.concatenate([s["x"] for s in held]), x[10:18])
    np.testing.assert_array_equal(np.concatenate([s["x"] for s in data.held_out(12)]), x[10:22])  # more: read again


def test_a_nan_held_out_in_the_piece_that_ends_calibration_is_passed_over(tmp_path):
    """A NaN after the first max_samples was refused where it shared a piece (a file) with calibration's samples."""
    x = np.random.default_rng(0).standard_normal((20, 3, 4, 4)).astype(np.float32)
    x[12, 0, 0, 0] = np.nan
    np.save(tmp_path / "calib.npy", x)
    data = load_calibration_data(tmp_path / "calib.npy", IMAGE, max_samples=10)
    np.testing.assert_array_equal(np.concatenate([b["x"] for b in data]), x[:10])
    np.testing.assert_array_equal(np.concatenate([s["x"] for s in data.held_out(8)]), x[[10, 11, *range(13, 19)]])
    with pytest.raises(CalibrationError, match=r"calib\.npy: input 'x' sample 12 holds NaN"):
        load_calibration_data(tmp_path / "calib.npy", IMAGE, max_samples=13)


def test_a_model_with_a_fixed_batch_is_fed_one_sample_at_a_time(tmp_path):
    x = np.random.default_rng(0).standard_normal((5, 3, 4, 4)).astype(np.float32)
    np.savez(tmp_path / "calib.npz", x=x)
    data = load_calibration_data(tmp_path / "calib.npz", FIXED, batch_size=32)
    assert data.batch_size == 1 and [b["x"].shape for b in data] == [(1, 3, 4, 4)] * 5
    assert [s["x"].shape for s in data.samples(2)] == [(1, 3, 4, 4)] * 2
    two = graph_with_inputs(x=[2, 3])
    with pytest.raises(CalibrationError, match=r"3 samples do not fill batches of 2, .*\(--calib-samples 2 / "
                                               r"max_samples=2 takes the first 2\)"):
        load_calibration_data(np.zeros((3, 3), np.float32), two)
    held = load_calibration_data(np.zeros((5, 3), np.float32), two, max_samples=4)
    assert held.held_out(8) == []  # one sample after the first 4 fills no batch of 2: the model cannot take it
    assert [s["x"].shape for s in held.samples(8)] == [(2, 3)] * 2


def test_samples_skipped_for_nan_leave_a_short_last_batch_out_of_a_fixed_batch(tmp_path):
    x = np.random.default_rng(0).standard_normal((6, 3)).astype(np.float32)
    x[1, 0] = np.nan
    data = load_calibration_data(x, graph_with_inputs(x=[2, 3]), skip_nonfinite=True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        batches = list(data)
    assert [b["x"].shape for b in batches] == [(2, 3)] * 2  # 5 finite samples: two batches, one sample left
    assert "the last 1 sample(s) fill no batch of 2 once samples holding NaN were skipped: left out" in [
        str(w.message).split(": ", 1)[1] for w in caught if w.category is CalibrationWarning]


def test_nan_values_name_the_file_input_and_sample_and_infinities_are_values(tmp_path):
    x = np.random.default_rng(0).standard_normal((6, 3, 4, 4)).astype(np.float32)
    x[4, 1, 2, 3] = np.nan
    x[1, 0, 0, 0] = -np.inf  # an additive attention mask holds -inf: a value, not a fault
    np.savez(tmp_path / "calib.npz", x=x)
    with pytest.raises(CalibrationError, match=r"calib\.npz: input 'x' sample 4 holds NaN .*--calib-skip-nonfinite"):
        load_calibration_data(tmp_path / "calib.npz", IMAGE)  # files are read for NaN before any work
    assert len(list(load_calibration_data(np.delete(x, 4, axis=0), IMAGE))) == 1  # 5 samples, one batch
    bad = feed(3)
    bad["c"][0, 0, 2] = np.nan
    with pytest.raises(CalibrationError, match=r"calibration item 1: input 'c' holds NaN"):
        list(load_calibration_data([feed(0), bad], RECURRENT, layout="feeds"))


def test_nonfinite_samples_can_be_skipped_and_are_counted():
    x = np.random.default_rng(0).standard_normal((6, 3, 4, 4)).astype(np.float32)
    x[[1, 4], 0, 0, 0] = np.nan
    data = load_calibration_data(x, IMAGE, skip_nonfinite=True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        kept = np.concatenate([b["x"] for b in data])
    np.testing.assert_array_equal(kept, x[[0, 2, 3, 5]])
    assert data.skipped == 2 and len(data) == 4
    assert [str(w.message) for w in caught if w.category is CalibrationWarning] == [
        "calibration data: skipped 2 calibration sample(s) holding NaN"]


def test_feed_fingerprints_follow_the_feeds(tmp_path):
    prints = {load_calibration_data([feed(0), feed(1, 7)], RECURRENT, layout="feeds").fingerprint(),
              load_calibration_data(Reader([feed(0), feed(1, 7)]), RECURRENT).fingerprint()}
    assert len(prints) == 1
    assert load_calibration_data([feed(0), feed(2, 7)], RECURRENT, layout="feeds").fingerprint() not in prints


def test_quantize_reports_skipped_samples_as_a_diagnostic(tmp_path, capsys):
    """They reached the terminal as a raw Python warning (the source file and line, then the code line)."""
    from qtool.cli.main import main
    from qtool.testing.models import small_model

    model = small_model(tmp_path / "m.onnx")
    x = np.random.default_rng(0).standard_normal((6, 3, 8, 8)).astype(np.float32)
    x[2, 0, 0, 0] = np.nan
    np.savez(tmp_path / "c.npz", input=x)
    assert main(["quantize", str(model), "--platform", "onnxruntime", "--calib", str(tmp_path / "c.npz"),
                 "--calib-skip-nonfinite", "-o", str(tmp_path / "q.onnx")]) == 0
    captured = capsys.readouterr()
    assert "warning [calibration.data] " in captured.out and "skipped 1 calibration sample(s) holding NaN" in \
        captured.out
    assert "CalibrationWarning" not in captured.err + captured.out


@pytest.mark.parametrize("action", ["ignore", "error"])
def test_skipped_samples_are_reported_whatever_the_warning_filters(action, tmp_path):
    """A notebook's warnings.filterwarnings("ignore") hid the count; "error" failed the run."""
    import qtool
    from qtool.testing.models import small_model

    x = np.random.default_rng(0).standard_normal((6, 3, 8, 8)).astype(np.float32)
    x[2, 0, 0, 0] = np.nan
    with warnings.catch_warnings():
        warnings.simplefilter(action)
        result = qtool.quantize(small_model(tmp_path / "m.onnx"), "onnxruntime", x, skip_nonfinite=True)
    assert [d.code for d in result.diagnostics if "skipped 1" in d.message] == ["calibration.data"]


def test_inputs_that_share_a_named_dimension_must_agree_on_it(tmp_path):
    """ids [1, 3] with a mask [1, 2], both [batch, sequence] in the model: the first float run failed with ONNX
    Runtime's broadcast error, naming neither the item nor the inputs."""
    text = graph_with_inputs(ids=["batch", "sequence"], mask=["batch", "sequence"])
    good = [{"ids": np.zeros((1, n), np.float32), "mask": np.ones((1, n), np.float32)} for n in (3, 5)]
    assert len(list(load_calibration_data(good, text, layout="feeds"))) == 2
    bad = [good[0], {"ids": np.zeros((1, 3), np.float32), "mask": np.ones((1, 2), np.float32)}]
    with pytest.raises(CalibrationError, match=r"calibration item 1: inputs 'ids' and 'mask' disagree on the "
                                               r"dimension the model names 'sequence' \(3 and 2\)"):
        list(load_calibration_data(bad, text, layout="feeds"))
    np.savez(tmp_path / "c.npz", ids=np.zeros((4, 3), np.float32), mask=np.ones((4, 2), np.float32))
    with pytest.raises(CalibrationError, match=r"c\.npz: inputs 'ids' and 'mask' disagree .* 'sequence' \(3 and 2\)"):
        load_calibration_data(tmp_path / "c.npz", text)
