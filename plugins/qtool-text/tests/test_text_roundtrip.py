"""Write, read into a fresh dispatched graph, write again: the same file, the same float32 parameters."""

import numpy as np
import pytest
import qtool
import torch
from qtool import QuantScheme
from qtool.quant import fake_quantize
from qtool.testing import quantize_by_hand
from qtool_text import read_table, table_text, write_table

SCHEMES = {
    "int8": dict(bias="int32"),
    "uint8-asym-act-int4-weights": dict(activation=QuantScheme.integer(8, signed=False, symmetric=False),
                                        weight=QuantScheme.integer(4, per_channel=True, channel_axis=0)),
    "fp8": dict(activation=QuantScheme.floating(4, 3), weight=QuantScheme.floating(5, 2)),
    "per-block-pow2": dict(weight=QuantScheme.integer(4, per_channel=True, channel_axis=1, block_size=2),
                           activation=QuantScheme.integer(8, power_of_2=True)),
}


def _both(model, **kwargs):
    calibrated = quantize_by_hand(qtool.load(model), **kwargs)
    fresh = quantize_by_hand(qtool.load(model), settled=False, **kwargs)
    return calibrated, fresh


def _params(graph):
    return [(t.op.name, t.side, t.index, t.scale.tobytes(), t.scale.shape, t.offset.tobytes())
            for t in qtool.quantized_tensors(graph)]


@pytest.mark.parametrize("kind", sorted(SCHEMES))
def test_round_trip_is_identical(qtool_small_model, tmp_path, kind):
    calibrated, fresh = _both(qtool_small_model, **SCHEMES[kind])
    assert list(qtool.quantized_tensors(fresh)) == []  # nothing settled before reading
    first = write_table(calibrated, tmp_path / "a.txt")
    report = read_table(first, fresh)
    assert report["missing"] == []
    assert report["set"] == [t.tensor for t in qtool.quantized_tensors(calibrated)]
    assert write_table(fresh, tmp_path / "b.txt").read_text() == first.read_text()
    assert _params(fresh) == _params(calibrated)


def test_each_line_says_what_a_person_needs(qtool_small_model):
    calibrated, _ = _both(qtool_small_model, bias="int32")
    lines = table_text(calibrated).splitlines()
    assert lines[0] == "# qtool-text format 1"
    rows = {line.split()[2]: line.split() for line in lines if not line.startswith("#")}
    conv = calibrated.operations["conv1"].quant
    scale = float(conv.inputs[0].scale)
    assert rows["input"] == ["conv1", "in:0", "input", "activation", "SYMMETRICAL|PER_TENSOR|LINEAR", "8",
                             "-128..127", "-", f"{-128 * scale:.6g}..{127 * scale:.6g}", str(conv.inputs[0].scale), "0"]
    weight = rows["conv1.weight"]
    assert weight[4:8] == ["SYMMETRICAL|PER_CHANNEL|LINEAR", "8", "-128..127", "0"]
    assert weight[9] == ",".join(str(s) for s in conv.inputs[1].scale) and weight[10] == "0,0,0,0"
    assert rows["conv1.bias"][3:7] == ["bias", "SYMMETRICAL|PER_CHANNEL|LINEAR", "32", "-2147483648..2147483647"]
    assert "relu_out" in rows and "conv2" not in {r[0] for r in rows.values() if r[2] == "relu_out"}


def test_names_with_spaces_are_quoted_and_read_back(qtool_small_model, tmp_path):
    graphs = [qtool.load(qtool_small_model) for _ in range(2)]
    for graph in graphs:
        graph.rename_variable(graph.variables["relu_out"], "relu out 'x'")
    calibrated, fresh = quantize_by_hand(graphs[0]), quantize_by_hand(graphs[1], settled=False)
    path = write_table(calibrated, tmp_path / "a.txt")
    assert "relu out" in path.read_text()
    read_table(path, fresh)
    assert write_table(fresh, tmp_path / "b.txt").read_text() == path.read_text()


def test_a_partial_table_reports_what_is_missing(qtool_small_model, tmp_path):
    calibrated, fresh = _both(qtool_small_model)
    path = write_table(calibrated, tmp_path / "a.txt")
    path.write_text("\n".join(line for line in path.read_text().splitlines() if " fc.weight " not in line))
    assert read_table(path, fresh)["missing"] == ["fc.weight"]


def test_reading_checks_dequantized_values(qtool_small_model, tmp_path):
    """The grid read back dequantizes the weights exactly as the original configs do."""
    calibrated, fresh = _both(qtool_small_model, weight=QuantScheme.integer(4, per_channel=True, channel_axis=0))
    read_table(write_table(calibrated, tmp_path / "a.txt"), fresh)
    w = torch.from_numpy(np.array(calibrated.variables["conv2.weight"].value))
    original, restored = (g.operations["conv2"].quant.inputs[1] for g in (calibrated, fresh))
    torch.testing.assert_close(fake_quantize(w, restored.scheme, restored.scale, restored.offset),
                               fake_quantize(w, original.scheme, original.scale, original.offset), rtol=0, atol=0)
