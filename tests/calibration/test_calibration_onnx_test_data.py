"""Calibration data in ONNX's own test-data layout (the Model Zoo's, onnx/backend/test/data's, onnx_test_runner's):
a model folder of test_data_set_N folders of input_K.pb TensorProtos, one model call each, read in numeric order,
checked file by file before any work, quantized as the same feeds given from Python are."""

from __future__ import annotations

import tracemalloc
import warnings
from pathlib import Path

import ml_dtypes
import numpy as np
import onnx
import onnxruntime as ort
import pytest
import qtool
from onnx import TensorProto, external_data_helper, helper, numpy_helper
from qtool.calibration import CalibrationError, CalibrationWarning, load_calibration_data
from qtool.cli.main import main

RNG = np.random.default_rng(0)


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> str:
    """x (float32 [batch, 8]) -> MatMul; ids (int64 [batch, 4]) -> Gather from a table -> ReduceMean; their Add ->
    Relu -> MatMul: two inputs of two dtypes that name a dynamic dimension alike."""
    inits = [numpy_helper.from_array(RNG.standard_normal(shape).astype(np.float32), name)
             for name, shape in (("W1", (8, 16)), ("table", (10, 16)), ("W2", (16, 4)))]
    nodes = [helper.make_node("MatMul", ["x", "W1"], ["h"], name="mm1"),
             helper.make_node("Gather", ["table", "ids"], ["e"], name="embed"),
             helper.make_node("ReduceMean", ["e"], ["m"], name="mean", axes=[1], keepdims=0),
             helper.make_node("Add", ["h", "m"], ["s"], name="add"),
             helper.make_node("Relu", ["s"], ["r"], name="relu"),
             helper.make_node("MatMul", ["r", "W2"], ["y"], name="mm2")]
    graph = helper.make_graph(nodes, "two_inputs",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 8]),
                               helper.make_tensor_value_info("ids", TensorProto.INT64, ["batch", 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])], inits)
    path = tmp_path_factory.mktemp("model") / "two_inputs.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), path)
    return str(path)


def feeds(index: int, batch: int = 2) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(index)
    return {"x": rng.standard_normal((batch, 8)).astype(np.float32) + index,
            "ids": rng.integers(0, 10, (batch, 4)).astype(np.int64)}


def write_pb(path: Path, array: np.ndarray, name: str = "") -> Path:
    path.write_bytes(numpy_helper.from_array(array, name).SerializeToString())
    return path


def write_set(folder: Path, arrays: dict[str, np.ndarray], named: bool = True) -> Path:
    """One test_data_set: input_K.pb in the model's input order (named or, as onnx's node tests are, unnamed) and an
    output_0.pb of expected outputs, which calibration does not read."""
    folder.mkdir(parents=True)
    for position, (name, array) in enumerate(arrays.items()):
        write_pb(folder / f"input_{position}.pb", array, name if named else "")
    write_pb(folder / "output_0.pb", np.zeros((1, 4), np.float32), "y")
    return folder


def model_folder(tmp_path: Path, indices=(0, 1, 2, 10)) -> Path:
    folder = tmp_path / "two_inputs"
    for index in indices:
        write_set(folder / f"test_data_set_{index}", feeds(index), named=index % 2 == 0)
    return folder


def graph_of(path: str) -> qtool.Graph:
    return qtool.load(path)


# -- reading ----------------------------------------------------------------------------------------------------------
def test_every_set_is_one_call_read_in_numeric_order(model, tmp_path):
    folder = model_folder(tmp_path)  # sets 0 and 2 named, 1 and 10 unnamed (fed by position)
    data = load_calibration_data(folder, graph_of(model))
    assert data.layout == "feeds" and len(data) == 4  # feeds without being asked: a set is one model call
    batches = list(data)
    for batch, index in zip(batches, (0, 1, 2, 10), strict=True):
        for name, array in feeds(index).items():
            np.testing.assert_array_equal(batch[name], array)
    assert [b.sources[0].where for b in batches] == [str(folder / f"test_data_set_{i}") for i in (0, 1, 2, 10)]
    one = load_calibration_data(folder / "test_data_set_10", graph_of(model))  # one set: one call
    assert len(one) == 1 and np.array_equal(next(iter(one))["ids"], feeds(10)["ids"])
    assert len(load_calibration_data(folder, graph_of(model), max_samples=3)) == 3  # the first three sets


def test_sets_are_read_one_at_a_time(model, tmp_path):
    folder = tmp_path / "many"
    for index in range(16):
        write_set(folder / f"test_data_set_{index}", feeds(index, batch=1024))  # 48 KiB each
    data = load_calibration_data(folder, graph_of(model))
    total = 16 * sum(a.nbytes for a in feeds(0, batch=1024).values())
    tracemalloc.start()
    try:
        count = sum(len(b["x"]) for b in data)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert count == 16 * 1024 and peak < total / 4, (peak, total)


def test_typed_fields_external_data_and_bfloat16_are_read_as_onnx_reads_them(tmp_path):
    graph = qtool.Graph()
    for name, dtype in (("a", np.float32), ("b", np.int64), ("c", ml_dtypes.bfloat16)):
        graph.inputs.append(graph.add_variable(name, shape=[2, 3], dtype=np.dtype(dtype)))
    values = np.arange(6, dtype=np.float32).reshape(2, 3)
    folder = tmp_path / "test_data_set_0"
    folder.mkdir()
    typed = helper.make_tensor("a", TensorProto.FLOAT, [2, 3], values.ravel().tolist())  # float_data, no raw_data
    (folder / "input_0.pb").write_bytes(typed.SerializeToString())
    external = numpy_helper.from_array(values.astype(np.int64), "b")
    (folder / "b.bin").write_bytes(external.raw_data)
    external_data_helper.set_external_data(external, "b.bin")
    external.ClearField("raw_data")
    external.data_location = TensorProto.EXTERNAL
    (folder / "input_1.pb").write_bytes(external.SerializeToString())
    write_pb(folder / "input_2.pb", values.astype(ml_dtypes.bfloat16), "c")
    batch = next(iter(load_calibration_data(folder, graph)))
    assert not typed.raw_data and batch["c"].dtype == ml_dtypes.bfloat16
    for name in "abc":
        np.testing.assert_array_equal(batch[name].astype(np.float32), values)


def test_a_tensor_that_feeds_no_input_is_warned_of_and_ignored(model, tmp_path):
    folder = model_folder(tmp_path, indices=(0, 1))
    for index in (0, 1):
        write_pb(folder / f"test_data_set_{index}" / "input_2.pb", np.zeros(3, np.float32), "labels")
    write_pb(folder / "test_data_set_1" / "input_3.pb", np.zeros(3, np.float32))  # unnamed, past the inputs
    data = load_calibration_data(folder, graph_of(model))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert len(list(data)) == 2
    assert sorted(str(w.message) for w in caught if w.category is CalibrationWarning) == [
        f"{folder / 'test_data_set_0' / 'input_2.pb'} and 1 more file(s): tensor 'labels' feeds no input of the "
        "model ('x', 'ids'): ignored",
        f"{folder / 'test_data_set_1' / 'input_3.pb'}: unnamed tensor 3 (past the inputs) feeds no input of the "
        "model ('x', 'ids'): ignored"]


# -- bad data: one line naming the file and the input, before any work --------------------------------------------
def _dtype(set3: Path) -> None:
    write_pb(set3 / "input_1.pb", feeds(3)["ids"].astype(np.int32), "ids")


def _shape(set3: Path) -> None:
    write_pb(set3 / "input_0.pb", np.zeros((2, 7), np.float32))


def _shared(set3: Path) -> None:
    write_pb(set3 / "input_1.pb", np.zeros((3, 4), np.int64), "ids")


def _garbage(set3: Path) -> None:
    (set3 / "input_0.pb").write_bytes(b"not a tensor at all\n")


def _model_proto(set3: Path) -> None:
    (set3 / "input_0.pb").write_bytes(Path(MODEL[0]).read_bytes())


def _truncated(set3: Path) -> None:
    tensor = numpy_helper.from_array(feeds(3)["x"], "x")
    tensor.raw_data = tensor.raw_data[:-4]
    (set3 / "input_0.pb").write_bytes(tensor.SerializeToString())


def _external_missing(set3: Path) -> None:
    tensor = numpy_helper.from_array(feeds(3)["x"], "x")
    external_data_helper.set_external_data(tensor, "x.bin")
    tensor.ClearField("raw_data")
    tensor.data_location = TensorProto.EXTERNAL
    (set3 / "input_0.pb").write_bytes(tensor.SerializeToString())


def _missing(set3: Path) -> None:
    (set3 / "input_1.pb").unlink()


def _twice(set3: Path) -> None:
    write_pb(set3 / "input_1.pb", feeds(3)["x"], "x")


def _nan(set3: Path) -> None:
    x = feeds(3)["x"]
    x[1, 2] = np.nan
    write_pb(set3 / "input_0.pb", x, "x")


MODEL: list[str] = []  # the model's path, for _model_proto
BAD = {
    "dtype": (_dtype, "test_data_set_3/input_1.pb: input 'ids' has dtype int32, expected int64 [batch, 4]"),
    "shape": (_shape, "test_data_set_3/input_0.pb: input 'x' has shape [2, 7], expected float32 [batch, 8] (one "
                      "model call, calibration layout 'feeds')"),
    "shared dim": (_shared, "test_data_set_3: inputs 'x' and 'ids' disagree on the dimension the model names "
                            "'batch' (2 and 3)"),
    "not a tensor": (_garbage, "test_data_set_3/input_0.pb: not a serialized onnx TensorProto (Error parsing "
                               "message"),
    "a model": (_model_proto, "test_data_set_3/input_0.pb: not a serialized onnx TensorProto (it states no data "
                              "type)"),
    "truncated": (_truncated, "test_data_set_3/input_0.pb: an onnx TensorProto whose data cannot be read "
                              "(ValueError: cannot reshape array of size 15 into shape (2,8))"),
    "external": (_external_missing, "test_data_set_3/input_0.pb: an onnx TensorProto whose data cannot be read "
                                    "(ValidationError: Data of TensorProto ( tensor name: x) should be stored in"),
    "missing": (_missing, "test_data_set_3: no array for input 'ids' (found: x; expected int64 [batch, 4])"),
    "twice": (_twice, "test_data_set_3/input_1.pb: feeds input 'x', which input_0.pb feeds already"),
    "nan": (_nan, "test_data_set_3: input 'x' holds NaN"),
}


@pytest.mark.parametrize("case", BAD, ids=list(BAD))
def test_bad_data_is_one_line_naming_the_file_and_input_before_any_work(model, tmp_path, case):
    MODEL[:] = [model]
    folder = model_folder(tmp_path, indices=(0, 1, 2, 4, 5))
    set3 = write_set(folder / "test_data_set_3", feeds(3))
    spoil, message = BAD[case]
    spoil(set3)
    ran, output = [], tmp_path / "q.onnx"
    with pytest.raises(CalibrationError) as raised:
        qtool.quantize(model, "onnxruntime", folder, output=output, finished=ran.append)
    line = str(raised.value)
    assert "\n" not in line and line.startswith(str(folder)) and message in line, line
    assert ran == [] and not output.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["two_inputs"]


def test_the_samples_layout_and_a_mixed_folder_are_refused(model, tmp_path):
    folder = model_folder(tmp_path, indices=(0,))
    with pytest.raises(CalibrationError, match=r"two_inputs: ONNX test data \(each test_data_set_\* one model call "
                                               r"with the model's own shapes\) is read in the feeds layout, not "
                                               r"'samples': leave --calib-layout \(calib_layout=\) out$"):
        load_calibration_data(folder, graph_of(model), layout="samples")
    assert load_calibration_data(folder, graph_of(model), layout="feeds").layout == "feeds"
    np.savez(folder / "extra.npz", **feeds(0))
    with pytest.raises(CalibrationError, match=r"two_inputs: holds both ONNX test data \(test_data_set_\* folders\) "
                                               r"and \.npy/\.npz files; give a folder of one kind"):
        load_calibration_data(folder, graph_of(model))
    (folder / "extra.npz").unlink()
    (folder / "test_data_set_7").write_text("")
    with pytest.raises(CalibrationError, match=r"test_data_set_7: not a folder"):
        load_calibration_data(folder, graph_of(model))
    with pytest.raises(CalibrationError, match=r"input_0\.pb: calibration data must be an \.npz or \.npy file, a "
                                               r"directory of them, or ONNX test data \(test_data_set_\* folders"):
        load_calibration_data(folder / "test_data_set_0" / "input_0.pb", graph_of(model))  # give its folder


# -- end to end -----------------------------------------------------------------------------------------------------
def _initializers(path) -> dict[str, np.ndarray]:
    return {t.name: numpy_helper.to_array(t) for t in onnx.load(str(path)).graph.initializer}


def test_quantize_from_test_data_gives_the_scales_of_the_same_feeds_from_python(model, tmp_path):
    folder = model_folder(tmp_path)
    from_sets = qtool.quantize(model, "onnxruntime", folder, output=tmp_path / "sets.onnx")
    as_dicts = [feeds(i) for i in (0, 1, 2, 10)]
    qtool.quantize(model, "onnxruntime", as_dicts, calib_layout="feeds", output=tmp_path / "dicts.onnx")
    assert from_sets.calibration.layout == "feeds" and len(from_sets.calibration) == 4
    got, want = _initializers(tmp_path / "sets.onnx"), _initializers(tmp_path / "dicts.onnx")
    assert got.keys() == want.keys() and any("scale" in name for name in got)
    for name in got:
        np.testing.assert_array_equal(got[name], want[name], err_msg=name)
    sample = feeds(5, batch=3)
    quantized = ort.InferenceSession(str(tmp_path / "sets.onnx"), providers=["CPUExecutionProvider"]).run(None, sample)
    reference = ort.InferenceSession(model, providers=["CPUExecutionProvider"]).run(None, sample)
    assert quantized[0].shape == (3, 4)
    assert 10 * np.log10(np.sum(reference[0] ** 2) / np.sum((quantized[0] - reference[0]) ** 2)) > 20


def test_the_command_line_takes_a_folder_of_sets(model, tmp_path, capsys):
    folder = model_folder(tmp_path)
    output = tmp_path / "q.onnx"
    assert main(["quantize", model, "--platform", "onnxruntime", "--calib", str(folder), "--calib-layout", "samples",
                 "-o", str(output)]) == 1
    err = capsys.readouterr().err
    assert f"qtool: error: {folder}: ONNX test data" in err and "leave --calib-layout" in err and not output.exists()
    assert main(["quantize", model, "--platform", "onnxruntime", "--calib", str(folder), "-o", str(output)]) == 0
    assert output.is_file()
    ort.InferenceSession(str(output), providers=["CPUExecutionProvider"]).run(None, feeds(1))


# -- onnx's own test data -------------------------------------------------------------------------------------------
ONNX_DATA = Path(onnx.__file__).parent / "backend" / "test" / "data"
# the onnx 1.23 wheel ships no node/ tests; its pytorch-converted/test_Conv2d is x float [2, 3, 7, 5] -> Conv
ONNX_FOLDERS = sorted(ONNX_DATA.glob("pytorch-converted/test_Conv2d"))


@pytest.mark.skipif(not ONNX_FOLDERS, reason="this onnx wheel ships no test_Conv2d folder")
@pytest.mark.parametrize("folder", ONNX_FOLDERS, ids=[f"{p.parent.name}/{p.name}" for p in ONNX_FOLDERS])
def test_a_folder_of_onnx_backend_test_data_quantizes_from_its_own_set(folder, tmp_path):
    """As onnx ships them: unnamed input_K.pb, the model's inputs by position, output_0.pb the expected output."""
    output = tmp_path / "q.onnx"
    result = qtool.quantize(folder / "model.onnx", "onnxruntime", folder / "test_data_set_0", output=output)
    assert len(result.calibration) == 1
    graph = onnx.load(str(folder / "model.onnx")).graph
    stored = {t.name for t in graph.initializer}
    names = [i.name for i in graph.input if i.name not in stored]
    inputs = {name: numpy_helper.to_array(onnx.load_tensor(str(file)))
              for name, file in zip(names, sorted((folder / "test_data_set_0").glob("input_*.pb")), strict=True)}
    expected = numpy_helper.to_array(onnx.load_tensor(str(folder / "test_data_set_0" / "output_0.pb")))
    got = ort.InferenceSession(str(output), providers=["CPUExecutionProvider"]).run(None, inputs)[0]
    assert any(n.op_type == "QuantizeLinear" for n in onnx.load(str(output)).graph.node)
    assert 10 * np.log10(np.sum(expected**2) / np.sum((got - expected) ** 2)) > 25
