"""Calibration data in: .npz, directories, Python iterables; checks that name the input and the file."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tracemalloc

import numpy as np
import pytest
import qtool
from qtool.calibration import CalibrationError, load_calibration_data
from qtool.testing.models import small_model


def graph_with_inputs(**shapes) -> qtool.Graph:
    graph = qtool.Graph()
    for name, shape in shapes.items():
        graph.inputs.append(graph.add_variable(name, shape=list(shape), dtype=np.dtype(np.float32)))
    return graph


IMAGE = graph_with_inputs(x=["batch", 3, 4, 4])
PAIR = graph_with_inputs(a=["batch", 2], b=[1, 3])


def images(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, 3, 4, 4)).astype(np.float32)


def joined(data) -> dict[str, np.ndarray]:
    batches = list(data)
    return {k: np.concatenate([b[k] for b in batches]) for k in batches[0]}


# -- .npz ------------------------------------------------------------------------------------------
def test_npz_of_one_unnamed_array_for_a_single_input(tmp_path):
    np.savez(tmp_path / "calib.npz", images(10))  # np.savez names it arr_0
    data = load_calibration_data(tmp_path / "calib.npz", IMAGE, batch_size=4)
    assert len(data) == 10
    assert [b["x"].shape[0] for b in data] == [4, 4, 2]
    np.testing.assert_array_equal(joined(data)["x"], images(10))


def test_npz_whose_only_array_names_another_input_is_refused(tmp_path):
    """It was taken without a word: data saved for another model ('img' for 'x') calibrated this one."""
    np.savez(tmp_path / "calib.npz", img=images(10))
    with pytest.raises(CalibrationError, match=r"calib\.npz: no array for input 'x' \(found: img; expected"):
        load_calibration_data(tmp_path / "calib.npz", IMAGE, batch_size=4)


def test_a_single_npy_file(tmp_path):
    np.save(tmp_path / "calib.npy", images(3))
    data = load_calibration_data(tmp_path / "calib.npy", IMAGE)
    assert len(data) == 3
    np.testing.assert_array_equal(joined(data)["x"], images(3))


def test_npz_keyed_by_input_names_and_a_missing_one(tmp_path):
    np.savez(tmp_path / "pair.npz", a=np.zeros((5, 2), np.float32), b=np.ones((5, 3), np.float32), label=np.arange(5))
    data = load_calibration_data(tmp_path / "pair.npz", PAIR, batch_size=2)
    assert len(data) == 5 and set(next(iter(data))) == {"a", "b"}
    np.savez(tmp_path / "half.npz", a=np.zeros((5, 2), np.float32))
    with pytest.raises(CalibrationError, match=r"half\.npz: no array for input 'b' .*float32 \[N, 3\]"):
        load_calibration_data(tmp_path / "half.npz", PAIR)


def test_shape_mismatch_names_input_file_and_expected_shape(tmp_path):
    np.savez(tmp_path / "wrong.npz", x=np.zeros((2, 3, 5, 4), np.float32))
    with pytest.raises(CalibrationError) as info:
        load_calibration_data(tmp_path / "wrong.npz", IMAGE)
    message = str(info.value)
    assert "wrong.npz" in message and "'x'" in message and "[2, 3, 5, 4]" in message and "[N, 3, 4, 4]" in message


def test_dtype_mismatch_names_input_and_file(tmp_path):
    np.savez(tmp_path / "f64.npz", x=images(2).astype(np.float64))
    with pytest.raises(CalibrationError, match=r"f64\.npz: input 'x' has dtype float64, expected float32"):
        load_calibration_data(tmp_path / "f64.npz", IMAGE)


@pytest.mark.parametrize("kind", ["float16", "bfloat16"])
def test_float32_data_feeds_a_float16_or_bfloat16_input_cast_as_read(tmp_path, kind):
    """numpy saves no bfloat16 (it comes back as raw bytes), and a float16 model's data is often float32: both are
    cast to the input's type; raw bytes are refused with what to give instead."""
    import ml_dtypes

    dtype = np.dtype(ml_dtypes.bfloat16 if kind == "bfloat16" else np.float16)
    graph = qtool.Graph()
    graph.inputs.append(graph.add_variable("x", shape=["batch", 3, 4, 4], dtype=dtype))
    np.savez(tmp_path / "f32.npz", x=images(2))
    (batch,) = list(load_calibration_data(tmp_path / "f32.npz", graph))
    assert batch["x"].dtype == dtype and np.array_equal(batch["x"], images(2).astype(dtype))
    np.savez(tmp_path / "raw.npz", x=images(2).astype(dtype))
    if kind == "bfloat16":  # saved as 'V2'
        with pytest.raises(CalibrationError, match=r"has dtype \|V2, expected bfloat16 .* give float32 arrays"):
            load_calibration_data(tmp_path / "raw.npz", graph)
    np.savez(tmp_path / "f64.npz", x=images(2).astype(np.float64))
    with pytest.raises(CalibrationError, match="has dtype float64"):
        load_calibration_data(tmp_path / "f64.npz", graph)


def test_float32_data_beyond_float16s_range_is_refused_naming_the_sample(tmp_path):
    """Cast to float16, 1e5 read as an infinity, which calibration takes for a mask (the tensor kept float), with
    only numpy's RuntimeWarning on stderr; a mask's own value (float32's lowest) still becomes -inf."""
    graph = qtool.Graph()
    graph.inputs.append(graph.add_variable("x", shape=["batch", 3, 4, 4], dtype=np.dtype(np.float16)))
    data = images(4)
    data[2, 1, 0, 3] = 1e5
    np.savez(tmp_path / "big.npz", x=data)
    with pytest.raises(CalibrationError, match=r"big.npz: input 'x' sample 2 holds 100000, beyond float16's largest "
                                               r"65504: cast to the input's type it would be infinite"):
        list(load_calibration_data(tmp_path / "big.npz", graph))
    data[2, 1, 0, 3] = np.finfo(np.float32).min
    (batch,) = list(load_calibration_data({"x": data}, graph))
    assert batch["x"][2, 1, 0, 3] == -np.inf


def test_unequal_sample_counts_are_an_error(tmp_path):
    np.savez(tmp_path / "uneven.npz", a=np.zeros((4, 2), np.float32), b=np.zeros((3, 3), np.float32))
    with pytest.raises(CalibrationError, match="different numbers of samples"):
        load_calibration_data(tmp_path / "uneven.npz", PAIR)


# -- directories --------------------------------------------------------------------------------------
def test_directory_of_samples_and_batches_in_name_order(tmp_path):
    x = images(9)
    np.save(tmp_path / "b_single.npy", x[4])  # one sample, without the sample axis
    np.save(tmp_path / "a_batch.npy", x[:4])
    np.savez(tmp_path / "c_rest.npz", x=x[5:])
    (tmp_path / "notes.txt").write_text("not data")
    data = load_calibration_data(tmp_path, IMAGE, batch_size=3)
    assert len(data) == 9 and [b["x"].shape[0] for b in data] == [3, 3, 3]
    np.testing.assert_array_equal(joined(data)["x"], x)


def test_directory_reads_one_file_at_a_time(tmp_path):
    for i in range(16):
        np.save(tmp_path / f"{i:02d}.npy", images(256, seed=i))  # 48 KiB each, 768 KiB in all
    data = load_calibration_data(tmp_path, IMAGE, batch_size=8)
    total = 16 * images(256).nbytes
    tracemalloc.start()
    try:
        count = sum(b["x"].shape[0] for b in data)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert count == 16 * 256 and peak < total / 4, (peak, total)


def _peak_while(work) -> int:
    tracemalloc.start()
    try:
        work()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("save", [np.save, lambda path, x: np.savez(path, x=x)], ids=["npy", "npz"])
def test_one_large_file_is_read_in_pieces_of_join_bytes(tmp_path, monkeypatch, save):
    """One file of many samples was read whole by each pass: a 2.4 GB .npz loaded (2.9 GB peak, 22.7 s for
    --calib-samples 100), a mapped 3 GB .npy checked for NaN whole (a 750 MB mask, 3.7 GB peak); now it is mapped
    and read in runs of about JOIN_BYTES, as far as a pass goes."""
    from qtool.calibration import data as calibration_data

    monkeypatch.setattr(calibration_data, "JOIN_BYTES", 64 * images(1).nbytes)
    x = images(8192)  # 1.5 MiB
    path = tmp_path / f"big.{'npy' if save is np.save else 'npz'}"
    save(path, x)
    count = lambda data: sum(len(b["x"]) for b in data)  # noqa: E731
    peak = _peak_while(lambda: count(load_calibration_data(path, IMAGE, batch_size=32)))
    assert peak < x.nbytes / 16, (peak, x.nbytes)
    x[5000, 0, 0, 0] = np.nan  # after the samples used: held out, passed over
    save(path, x)
    data = load_calibration_data(path, IMAGE, batch_size=32, max_samples=100)
    assert count(data) == 100 and len(data.held_out(8)) == 8
    with pytest.raises(CalibrationError, match=r"big\.np[yz]: input 'x' sample 5000 holds NaN"):
        load_calibration_data(path, IMAGE)


def _mapped_file_kib() -> int:
    """Pages of mapped files this process holds (Linux's RssFile), in KiB."""
    status = dict(line.split(":", 1) for line in open("/proc/self/status"))
    return int(status["RssFile"].split()[0])


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="reads Linux's /proc/self/status")
def test_pages_of_a_large_file_leave_the_resident_size_as_calibration_goes(tmp_path, monkeypatch):
    """One mapping of a 3 GB .npy kept every page a pass read: 2.9 GB resident at its end (of file cache, but what
    /usr/bin/time reports); each run of rows has a mapping of its own now, gone once the pass is past it."""
    from qtool.calibration import data as calibration_data

    monkeypatch.setattr(calibration_data, "JOIN_BYTES", 64 * images(1).nbytes)
    np.save(tmp_path / "big.npy", np.ones((16384, 3, 4, 4), np.float32))  # 3 MiB
    before, held = _mapped_file_kib(), 0
    for batch in load_calibration_data(tmp_path / "big.npy", IMAGE, batch_size=32):
        assert batch["x"].sum() == batch["x"].size  # read every page
        held = max(held, _mapped_file_kib() - before)
    assert held < 1024, held  # KiB: a few runs of 12 KiB, not the 3 MiB file


def test_a_compressed_npz_is_read_as_numpy_reads_it(tmp_path):
    np.savez_compressed(tmp_path / "calib.npz", x=images(10))
    np.testing.assert_array_equal(joined(load_calibration_data(tmp_path / "calib.npz", IMAGE))["x"], images(10))


def test_a_bad_file_in_a_directory_is_named_before_anything_runs(tmp_path):
    np.save(tmp_path / "00.npy", images(2))
    np.save(tmp_path / "01.npy", np.zeros((2, 3, 4), np.float32))
    with pytest.raises(CalibrationError, match=r"01\.npy: input 'x' has shape \[2, 3, 4\]"):
        load_calibration_data(tmp_path, IMAGE)
    (tmp_path / "02.npz").write_bytes(b"not a zip")
    with pytest.raises(CalibrationError, match=r"02\.npz: not a readable numpy file"):
        load_calibration_data(tmp_path / "02.npz", IMAGE)


def test_a_nan_in_the_last_file_is_named_before_anything_runs(tmp_path):
    """Found only once calibration reached it (24 files, NaN in the last: after 5.8 s); files are read for NaN at
    load now, up to the samples used (those after --calib-samples are held out and passed over)."""
    for i in range(4):
        np.save(tmp_path / f"{i:02d}.npy", images(8, seed=i))
    late = images(8, seed=9)
    late[5, 1, 2, 3] = np.nan
    np.save(tmp_path / "04.npy", late)
    with pytest.raises(CalibrationError, match=r"04\.npy: input 'x' sample 5 holds NaN"):
        load_calibration_data(tmp_path, IMAGE)
    assert len(load_calibration_data(tmp_path, IMAGE, max_samples=32)) == 32
    with pytest.warns(qtool.calibration.CalibrationWarning, match="skipped 1 calibration sample"):
        assert sum(len(b["x"]) for b in load_calibration_data(tmp_path, IMAGE, skip_nonfinite=True)) == 39


def test_data_whose_every_sample_is_skipped_for_nan_says_so(tmp_path):
    np.save(tmp_path / "nan.npy", np.full((3, 3, 4, 4), np.nan, np.float32))
    with pytest.raises(CalibrationError, match=r"nan\.npy: every calibration sample \(3\) holds NaN and was skipped"):
        load_calibration_data(tmp_path / "nan.npy", IMAGE, skip_nonfinite=True)
    stream = (images(2) * np.nan for _ in range(2))
    with pytest.raises(CalibrationError, match="every calibration sample \\(4\\) holds NaN"):
        list(load_calibration_data(stream, IMAGE, skip_nonfinite=True))


def test_entries_of_a_folder_that_are_no_files_are_named(tmp_path):
    np.save(tmp_path / "00.npy", images(2))
    (tmp_path / "01.npy").symlink_to(tmp_path / "gone.npy")
    with pytest.raises(CalibrationError, match=r"01\.npy: a symbolic link to nothing in the calibration folder"):
        load_calibration_data(tmp_path, IMAGE)
    (tmp_path / "01.npy").unlink()
    (tmp_path / "01.npy").symlink_to("01.npy")
    with pytest.raises(CalibrationError, match=r"01\.npy: a symbolic link loop"):
        load_calibration_data(tmp_path, IMAGE)
    (tmp_path / "01.npy").unlink()
    (tmp_path / "01.npy").mkdir()
    with pytest.raises(CalibrationError, match=r"01\.npy: not a file \(a folder\)"):
        load_calibration_data(tmp_path, IMAGE)


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("setpriv") is None,
                    reason="drops root's override of file modes with setpriv")
def test_a_folder_that_cannot_be_listed_is_named(tmp_path):
    """A PermissionError traceback from iterdir(); root without CAP_DAC_OVERRIDE meets the mode as a user does."""
    folder = tmp_path / "calib"
    folder.mkdir()
    np.save(folder / "00.npy", images(2))
    os.chown(folder, 65534, 65534)
    folder.chmod(0)
    code = ("import numpy as np, qtool; from qtool.calibration import load_calibration_data\n"
            "g = qtool.Graph(); g.inputs.append(g.add_variable('x', shape=['n', 3, 4, 4], dtype=np.dtype('float32')))\n"
            f"load_calibration_data({str(folder)!r}, g)")
    run = subprocess.run(["setpriv", "--bounding-set", "-dac_override,-dac_read_search", sys.executable, "-c", code],
                         capture_output=True, text=True, timeout=120)
    folder.chmod(0o755)
    assert run.returncode == 1
    assert f"CalibrationError: {folder}: cannot list the calibration folder (Permission denied)" in run.stderr


def test_arrays_that_feed_no_input_are_warned_of(tmp_path):
    np.savez(tmp_path / "c.npz", x=images(4), junk=np.zeros(3), labels=np.zeros(4))
    data = load_calibration_data(tmp_path / "c.npz", IMAGE)
    with pytest.warns(qtool.calibration.CalibrationWarning) as told:
        assert len(list(data)) == 1
    assert sorted(str(w.message) for w in told) == [
        f"{tmp_path / 'c.npz'}: array 'junk' feeds no input of the model ('x'): ignored",
        f"{tmp_path / 'c.npz'}: array 'labels' feeds no input of the model ('x'): ignored"]


def test_npy_files_cannot_feed_several_inputs(tmp_path):
    np.save(tmp_path / "a.npy", np.zeros((1, 2), np.float32))
    with pytest.raises(CalibrationError, match="inputs a, b; use .npz files"):
        load_calibration_data(tmp_path, PAIR)


@pytest.mark.parametrize("make", ["empty_dir", "missing", "onnx_file"])
def test_unusable_paths(tmp_path, make):
    target = {"empty_dir": tmp_path, "missing": tmp_path / "nope", "onnx_file": tmp_path / "m.onnx"}[make]
    if make == "onnx_file":
        target.write_bytes(b"")
    with pytest.raises(CalibrationError, match=str(target.name)):
        load_calibration_data(target, IMAGE)


# -- Python iterables ---------------------------------------------------------------------------------------
def test_iterables_of_dicts_arrays_and_generators():
    x = images(5)
    from_dicts = load_calibration_data([{"x": s} for s in x], IMAGE, batch_size=2)
    from_arrays = load_calibration_data(list(x[:, None]), IMAGE, batch_size=2)
    from_generator = load_calibration_data(({"x": s} for s in x), IMAGE, batch_size=2)
    assert from_generator.count is None  # a stream's length is known once read
    for data in (from_dicts, from_arrays, from_generator, from_generator):  # a generator is kept: twice works
        np.testing.assert_array_equal(joined(data)["x"], x)
        assert len(data) == 5


def test_lists_and_python_numbers_take_the_inputs_type():
    """A nested list or a Python number has no type of its own: numpy read 2.0 and [[0.1, ...]] as float64, refused
    for every float32 input (a temperature given as 2.0). Values the input's type would change stay refused."""
    graph = qtool.Graph()
    for name, shape, dtype in (("x", ["batch", 2], np.float32), ("t", [], np.float32), ("ids", ["batch", 2], np.int16)):
        graph.inputs.append(graph.add_variable(name, shape=shape, dtype=np.dtype(dtype)))
    (batch,) = load_calibration_data([{"x": [[0.1, 0.2]], "t": 2.0, "ids": [[1, 2]]}], graph, layout="feeds")
    assert {name: array.dtype for name, array in batch.items()} == {"x": np.float32, "t": np.float32,
                                                                    "ids": np.int16}
    assert batch["t"] == 2.0 and batch["ids"].tolist() == [[1, 2]]
    for ids, found in (([[1.5, 2]], "float64"), ([[70000, 2]], "int64")):
        with pytest.raises(CalibrationError, match=rf"item 0: input 'ids' has dtype {found}, expected int16"):
            load_calibration_data([{"x": [[0.1, 0.2]], "t": 2.0, "ids": ids}], graph, layout="feeds")


def test_an_iterable_item_is_checked_and_named():
    with pytest.raises(CalibrationError, match=r"calibration item 1: input 'x' has shape \[3, 4\]"):
        load_calibration_data([images(1)[0], np.zeros((3, 4), np.float32)], IMAGE)
    with pytest.raises(CalibrationError, match="calibration item 0: the model has inputs a, b; give a dict"):
        load_calibration_data([np.zeros((1, 2), np.float32)], PAIR)
    with pytest.raises(CalibrationError, match="not a file, a directory or an iterable"):
        load_calibration_data(3, IMAGE)
    with pytest.raises(CalibrationError, match="no samples"):
        load_calibration_data([], IMAGE)


def test_a_stream_that_raises_is_an_error_not_an_end(tmp_path):
    """A generator failing halfway with a RuntimeError (the type onnxruntime raises too) stops the run naming the
    item; it used to read as the stream's end after onnxruntime's fallback, and five samples calibrated a model
    that was written."""
    def feeds():
        for i in range(10):
            if i == 5:
                raise RuntimeError("disk gone")
            yield {"input": np.random.default_rng(i).standard_normal((1, 3, 8, 8)).astype(np.float32)}

    model = small_model(tmp_path / "m.onnx")
    with pytest.raises(qtool.QtoolError, match="calibration item 5: reading it raised RuntimeError: disk gone"):
        qtool.quantize(model, "onnxruntime", feeds(), calib_layout="feeds", output=tmp_path / "q.onnx")
    assert not (tmp_path / "q.onnx").exists()


def test_a_tensor_numpy_cannot_hold_is_named():
    import torch

    for tensor, why in ((torch.zeros(2, 3, 4, 4, dtype=torch.bfloat16), "TypeError"),
                        (torch.zeros(2, 3, 4, 4, device="meta"), "NotImplementedError")):
        with pytest.raises(CalibrationError, match=f"input 'x' is no tensor qtool can calibrate with \\({why}"):
            load_calibration_data({"x": tensor}, IMAGE)


def test_dynamic_sizes_cut_batches_where_the_shape_changes():
    graph = graph_with_inputs(tokens=["batch", "seq"])
    items = [np.zeros((2, 5), np.float32), np.zeros((1, 5), np.float32), np.zeros((3, 7), np.float32)]
    data = load_calibration_data(items, graph, batch_size=4)
    assert [b["tokens"].shape for b in data] == [(3, 5), (3, 7)]


def test_a_batch_joined_from_many_chunks_stops_growing_at_join_bytes(monkeypatch):
    """Samples given one by one are joined (a copy) into batches holding about JOIN_BYTES at most; one chunk of
    many samples is still cut into batch_size samples (views, no copy)."""
    from qtool.calibration import data as calibration_data

    monkeypatch.setattr(calibration_data, "JOIN_BYTES", 5 * images(1).nbytes)
    one_by_one = load_calibration_data([{"x": sample[None]} for sample in images(12)], IMAGE, batch_size=8)
    assert [len(batch["x"]) for batch in one_by_one] == [5, 5, 2]
    np.testing.assert_array_equal(joined(one_by_one)["x"], images(12))
    assert [len(batch["x"]) for batch in load_calibration_data(images(12), IMAGE, batch_size=8)] == [8, 4]


# -- samples and fingerprints ----------------------------------------------------------------------------
def test_samples_have_a_sample_axis_of_one():
    samples = load_calibration_data(images(5), IMAGE).samples(3)
    assert len(samples) == 3 and all(s["x"].shape == (1, 3, 4, 4) for s in samples)
    np.testing.assert_array_equal(samples[2]["x"][0], images(5)[2])


def test_fingerprint_depends_on_the_samples_not_on_batching_or_containers(tmp_path):
    x = images(6)
    for i, sample in enumerate(x):
        np.save(tmp_path / f"{i}.npy", sample)
    prints = {load_calibration_data(x, IMAGE, batch_size=b).fingerprint() for b in (1, 4)}
    prints.add(load_calibration_data(tmp_path, IMAGE).fingerprint())
    assert len(prints) == 1 and len(prints.pop()) == 64
    changed = x.copy()
    changed[5, 0, 0, 0] += 1
    assert load_calibration_data(changed, IMAGE).fingerprint() != load_calibration_data(x, IMAGE).fingerprint()


def test_the_fingerprint_is_computed_only_when_asked():
    data = load_calibration_data(images(4), IMAGE)
    list(data)
    assert data._fingerprint is None  # a pass over the data hashes nothing: only a saved state needs the hash
    assert data.fingerprint() == load_calibration_data(images(4), IMAGE, batch_size=1).fingerprint()
