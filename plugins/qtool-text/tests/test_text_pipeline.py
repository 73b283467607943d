"""End to end: ``qtool quantize --platform text``, then the table read into a freshly planned graph."""

import qtool
from qtool.cli.main import main
from qtool.pipeline import plan
from qtool_text import read_table, table_text


def test_quantize_command_writes_a_table_that_reads_back(qtool_small_model, qtool_calibration_data, tmp_path):
    out = tmp_path / "out" / "model.onnx"
    assert main(["quantize", str(qtool_small_model), "--platform", "text", "--calib", str(qtool_calibration_data),
                 "-o", str(out)]) == 0
    table = out.with_suffix(".txt")
    assert sorted(p.name for p in out.parent.iterdir()) == ["model.txt"]
    fresh = plan(qtool_small_model, "text").graph
    report = read_table(table, fresh)
    assert report["missing"] == []
    assert table_text(fresh) == table.read_text()


def test_table_matches_the_pipelines_graph(qtool_small_model, qtool_calibration_data):
    result = qtool.quantize(qtool_small_model, "text", qtool_calibration_data)
    lines = [line.split() for line in table_text(result.graph).splitlines() if not line.startswith("#")]
    entries = list(qtool.quantized_tensors(result.graph))
    assert [(line[0], line[2]) for line in lines] == [(t.op.name, t.tensor) for t in entries]
    roles = {line[2]: line[3] for line in lines}
    assert roles["conv1.bias"] == "bias" and roles["fc.weight"] == "weight" and roles["input"] == "activation"
