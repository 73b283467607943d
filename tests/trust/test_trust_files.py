"""Output files: the user's normal mode (not mkstemp's 0600), and the output path checked before any work."""

import os
import stat
from pathlib import Path

import numpy as np
import onnx
import pytest
import qtool
from onnx import TensorProto, helper, numpy_helper
from qtool.files import OutputPathError, check_output_path, file_mode, make_readable
from qtool.testing.models import calibration_file, small_model


@pytest.fixture
def umask():
    """Set a umask for the test and restore the old one."""
    old = os.umask(0o022)
    yield lambda mask: os.umask(mask)
    os.umask(old)


def big_model(path) -> Path:
    """An Add of a 4 KiB initializer: big enough to go to external data."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1024])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1024])
    big = numpy_helper.from_array(np.ones(1024, np.float32), "big")
    onnx.save_model(helper.make_model(helper.make_graph([helper.make_node("Add", ["x", "big"], ["y"])], "g", [x], [y],
                                                         [big])), path)
    return Path(path)


def mode(path) -> int:
    return stat.S_IMODE(Path(path).stat().st_mode)


@pytest.mark.parametrize("mask, expected", [(0o022, 0o644), (0o027, 0o640), (0o002, 0o664)])
def test_write_atomic_and_save_follow_the_umask(tmp_path, umask, mask, expected):
    umask(mask)
    assert file_mode() == expected
    assert mode(qtool.write_atomic(tmp_path / "a.txt", "x")) == expected
    graph = qtool.load(small_model(tmp_path / "m.onnx"))
    assert mode(qtool.save(graph, tmp_path / "out.onnx")) == expected
    qtool.save(qtool.load(big_model(tmp_path / "big.onnx")), tmp_path / "ext.onnx", external_data=True)
    assert mode(tmp_path / "ext.onnx") == mode(tmp_path / "ext.onnx.data") == expected
    (tmp_path / "plugin.bin").write_bytes(b"")
    os.chmod(tmp_path / "plugin.bin", 0o600)
    assert mode(make_readable(tmp_path / "plugin.bin")) == expected


@pytest.mark.parametrize("platform", ["onnxruntime", "tensorrt", "text", "aimet"])
def test_every_file_a_platform_writes_is_readable_by_others(tmp_path, umask, platform):
    model = small_model(tmp_path / "m.onnx")
    calib = calibration_file(qtool.load(model), tmp_path / "c.npz")
    result = qtool.quantize(model, platform, calib, output=tmp_path / "out" / "q.onnx",
                            save_state=tmp_path / "out" / "state.json")
    written = sorted((tmp_path / "out").iterdir())
    assert len(written) >= 2 and {p.name for p in result.files} <= {p.name for p in written}
    assert {p.name: mode(p) for p in written} == {p.name: 0o644 for p in written}


def test_output_path_checks(tmp_path):
    model = small_model(tmp_path / "m.onnx")
    (tmp_path / "file").write_text("")
    cases = {
        tmp_path: "is a folder",
        model: "would overwrite the input",
        tmp_path / "m": "would overwrite the input",  # the .onnx suffix is added
        tmp_path / "file" / "q.onnx": "is a file, not a folder",
        Path("/proc/qtool/q.onnx"): "cannot write in /proc",
    }
    for path, message in cases.items():
        with pytest.raises(OutputPathError, match=message):
            check_output_path(path, inputs=[model])
    assert check_output_path(tmp_path / "new" / "deeper" / "q.onnx", inputs=[model])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file", "m.onnx"]


def test_quantize_checks_the_output_before_calibration(tmp_path):
    model = small_model(tmp_path / "m.onnx")
    before = model.read_bytes()
    (tmp_path / "taken").write_text("")
    np.savez(tmp_path / "c.npz", input=np.full((2, 1, 3, 8, 8), np.nan, np.float32))  # unusable: never read
    with pytest.raises(OutputPathError, match="taken is a file"):
        qtool.quantize(model, "onnxruntime", tmp_path / "c.npz", output=tmp_path / "taken" / "q.onnx")
    with pytest.raises(OutputPathError, match="state file .*would overwrite the input"):
        qtool.quantize(model, "onnxruntime", tmp_path / "c.npz", output=tmp_path / "q.onnx", save_state=model)
    for output, state in (("q.onnx", "q.onnx"), ("q", "q.onnx"), ("q", "./q")):  # the model would replace the state
        with pytest.raises(OutputPathError, match="state file .*is the output model's path"):
            qtool.quantize(model, "onnxruntime", tmp_path / "c.npz", output=tmp_path / output,
                           save_state=tmp_path / state)
    assert model.read_bytes() == before and not (tmp_path / "q.onnx").exists()


def test_a_killed_runs_temporary_data_file_never_joins_the_next_output(tmp_path):
    """kill -9 during an export left .q.onnx.data.tmp; the next run's data file took it in (onnx appends to the
    file it names): every run writes its own temporary file now."""
    weight = numpy_helper.from_array(np.random.default_rng(0).standard_normal((64, 64)).astype(np.float32), "w")
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 64])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 64])], initializer=[weight])
    model = tmp_path / "m.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), model)
    calib = [{"x": np.random.default_rng(i).standard_normal((4, 64)).astype(np.float32)} for i in range(4)]
    clean = qtool.quantize(model, "onnxruntime", calib, output=tmp_path / "a" / "q.onnx",
                           export={"external_data": True})
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / ".q.onnx.data.tmp").write_bytes(b"left by a killed run" * 5000)
    again = qtool.quantize(model, "onnxruntime", calib, output=tmp_path / "b" / "q.onnx",
                           export={"external_data": True})
    assert [p.name for p in again.files] == ["q.onnx", "q.onnx.data"]
    assert again.files[1].read_bytes() == clean.files[1].read_bytes()


def test_a_name_too_long_for_its_temporary_file_is_refused_before_any_work(tmp_path):
    model = small_model(tmp_path / "m.onnx")
    for name in ("a" * 250 + ".onnx", "b" * 240 + ".onnx"):  # itself too long with .data; its temporary file's
        with pytest.raises(OutputPathError, match="name too long: the temporary file written first needs"):
            qtool.quantize(model, "onnxruntime", tmp_path / "missing.npz", output=tmp_path / name)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]


def test_the_state_is_written_after_the_model(tmp_path, monkeypatch):
    """An export stopped midway (Ctrl-C, a refusal) leaves the old state beside the old model, not a new state
    beside it."""
    import qtool.state

    model = small_model(tmp_path / "m.onnx")
    calib = calibration_file(qtool.load(model), tmp_path / "c.npz")
    order = []
    saved = qtool.state.save_state
    monkeypatch.setattr(qtool.state, "save_state", lambda *a, **k: order.append("state") or saved(*a, **k))
    platform = qtool.get_platform("onnxruntime")
    export = type(platform).export
    monkeypatch.setattr(type(platform), "export", lambda self, *a, **k: order.append("model") or export(self, *a, **k))
    qtool.quantize(model, "onnxruntime", calib, output=tmp_path / "q.onnx", save_state=tmp_path / "s.json")
    assert order == ["model", "state"]


def test_a_model_and_its_data_replace_the_old_pair_under_the_folders_lock(tmp_path):
    """Two runs writing one output at once left one's model beside the other's data: the pair is renamed into place
    under an exclusive lock of the folder, so a run waits while another holds it."""
    import fcntl
    import threading

    weight = numpy_helper.from_array(np.random.default_rng(0).standard_normal((64, 64)).astype(np.float32), "w")
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 64])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 64])], initializer=[weight])
    model = onnx.helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    out = tmp_path / "out"
    out.mkdir()
    held = os.open(out, os.O_RDONLY)
    fcntl.flock(held, fcntl.LOCK_EX)
    writer = threading.Thread(target=qtool.save_model_proto, args=(model, out / "q.onnx"),
                              kwargs={"external_data": True})
    writer.start()
    writer.join(0.5)
    assert writer.is_alive() and not (out / "q.onnx").exists()  # written, waiting for the lock to rename
    os.close(held)
    writer.join(10)
    assert sorted(p.name for p in out.iterdir()) == ["q.onnx", "q.onnx.data"]
