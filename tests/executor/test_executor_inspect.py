"""``qtool inspect``: op types, counts and support status of a model file."""

from __future__ import annotations

import json

import onnx
import pytest
from onnx import TensorProto, helper
from qtool.cli.main import main


def save_model(path, nodes, extra_opsets=()):
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    opsets = [helper.make_opsetid("", 17), *(helper.make_opsetid(d, 1) for d in extra_opsets)]
    onnx.save(helper.make_model(graph, opset_imports=opsets), path)
    return str(path)


@pytest.fixture
def supported(tmp_path):
    nodes = [helper.make_node("Relu", ["x"], ["a"], "r1"), helper.make_node("Relu", ["a"], ["b"], "r2"),
             helper.make_node("Sigmoid", ["b"], ["y"], "s")]
    return save_model(tmp_path / "ok.onnx", nodes)


@pytest.fixture
def unsupported(tmp_path):
    nodes = [helper.make_node("Relu", ["x"], ["a"], "r1"),
             helper.make_node("Frobnicate", ["a"], ["y"], "frob", domain="com.example")]
    return save_model(tmp_path / "custom.onnx", nodes, extra_opsets=["com.example"])


def test_table_lists_op_types_with_counts(supported, capsys):
    assert main(["inspect", supported]) == 0
    out = capsys.readouterr().out
    assert "input x: float32 [batch, 4]" in out
    rows = {line.split("│")[1].strip(): line for line in out.splitlines() if line.count("│") == 5}
    assert set(rows) == {"Relu", "Sigmoid"}
    assert "│     2 │ yes" in rows["Relu"]


def test_json_document(supported, capsys):
    assert main(["inspect", supported, "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["schema_version"] == 1 and doc["unsupported"] == []
    assert doc["ops"] == [{"domain": "", "op_type": "Relu", "count": 2, "supported": True},
                          {"domain": "", "op_type": "Sigmoid", "count": 1, "supported": True}]
    assert doc["inputs"] == [{"name": "x", "type": "float32 [batch, 4]"}]


def test_unsupported_ops_exit_1_and_are_named(unsupported, capsys):
    assert main(["inspect", unsupported]) == 1
    captured = capsys.readouterr()
    assert "com.example::Frobnicate (node frob)" in captured.err
    assert "│ no" in captured.out
    assert main(["inspect", unsupported, "--json"]) == 1
    doc = json.loads(capsys.readouterr().out)
    assert doc["unsupported"] == [{"domain": "com.example", "op_type": "Frobnicate", "nodes": ["frob"]}]


def test_missing_file_is_one_error_line(tmp_path, capsys):
    assert main(["inspect", str(tmp_path / "nope.onnx")]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("qtool: error:") and "nope.onnx: no such model file" in err and "\n" not in err
