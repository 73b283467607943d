"""JSON ranges: {"act_quant_info": {tensor: amax}} with amax = 127 * scale, read back exactly."""

import json

import pytest
import qtool
from qtool.testing import quantize_by_hand
from qtool_tensorrt import TensorRTError, read_ranges, write_ranges


def test_ranges_are_127_times_the_scale(qtool_calibrated_graph, tmp_path):
    path = write_ranges(qtool_calibrated_graph, tmp_path / "r.json")
    info = json.loads(path.read_text())["act_quant_info"]
    entries = list(qtool.quantized_tensors(qtool_calibrated_graph, roles=["activation"]))
    assert list(info) == [t.tensor for t in entries]
    for t in entries:
        assert info[t.tensor] == pytest.approx(127 * float(t.scale), rel=1e-12)
        assert info[t.tensor] == pytest.approx(float(t.range[1]), rel=1e-12)


def test_read_ranges_round_trips_bit_for_bit(qtool_calibrated_graph, qtool_small_model, tmp_path):
    path = write_ranges(qtool_calibrated_graph, tmp_path / "r.json")
    fresh = quantize_by_hand(qtool.load(qtool_small_model), activation=qtool.QuantScheme.integer(8, quant_min=-127))
    report = read_ranges(path, fresh)
    assert report["missing"] == [] and report["unused"] == []
    scales = {t.tensor: t.scale.tobytes() for t in qtool.quantized_tensors(fresh, roles=["activation"])}
    assert scales == {t.tensor: t.scale.tobytes()
                      for t in qtool.quantized_tensors(qtool_calibrated_graph, roles=["activation"])}
    assert write_ranges(fresh, tmp_path / "again.json").read_text() == path.read_text()


@pytest.mark.parametrize(("content", "message"), [
    ("{", "not a readable JSON ranges file"),
    ('{"ranges": {}}', "expected an object with key 'act_quant_info'"),
    ('{"act_quant_info": {"input": -1}}', r"act_quant_info\['input'\] = -1: amax must be a positive number"),
    ('{"act_quant_info": {"input": true}}', r"act_quant_info\['input'\] = True"),
])
def test_bad_ranges_files_are_named(qtool_calibrated_graph, tmp_path, content, message):
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(TensorRTError, match=f"bad.json: {message}"):
        read_ranges(path, qtool_calibrated_graph)


def test_missing_file_is_named(qtool_calibrated_graph, tmp_path):
    with pytest.raises(TensorRTError, match="nothing.json: not a readable"):
        read_ranges(tmp_path / "nothing.json", qtool_calibrated_graph)
