"""Graph IR: ONNX import/export round trips, folding, errors and use-def mutation helpers."""

import gc
import glob
import os

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import qtool
import torch
from onnx import TensorProto, helper, numpy_helper
from qtool.ir import GraphError, from_model_proto, to_model_proto

LIGHT_MODELS = sorted(glob.glob(os.path.join(os.path.dirname(onnx.__file__), "backend/test/data/light/*.onnx")))


def run_ort(path_or_proto, feeds):
    data = path_or_proto.SerializeToString() if isinstance(path_or_proto, onnx.ModelProto) else str(path_or_proto)
    return ort.InferenceSession(data, providers=["CPUExecutionProvider"]).run(None, feeds)


def test_light_models_are_bundled():
    assert len(LIGHT_MODELS) == 9


@pytest.mark.parametrize("path", LIGHT_MODELS, ids=os.path.basename)
def test_light_models_round_trip_with_identical_outputs(path, tmp_path):
    graph = qtool.load(path)
    assert not any(op.op_type in ("Constant", "ConstantOfShape") for op in graph.operations.values())
    assert all(v.name not in {p.name for p in graph.parameters()} for v in graph.inputs)  # IR-3 inputs folded
    out = qtool.save(graph, tmp_path / "m.onnx")
    onnx.checker.check_model(onnx.load(out), full_check=True)
    feeds = {graph.inputs[0].name: np.random.default_rng(0).random((1, 3, 224, 224), dtype=np.float32)}
    for a, b in zip(run_ort(path, feeds), run_ort(out, feeds)):
        np.testing.assert_array_equal(a, b)


class SmallNet(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3, padding=1)
        self.fc = torch.nn.Linear(4 * 8 * 8, 5)

    def forward(self, x):
        return torch.softmax(self.fc(torch.relu(self.conv(x)).flatten(1)), dim=-1)


@pytest.fixture
def torch_model(tmp_path):
    path = tmp_path / "small.onnx"
    torch.onnx.export(SmallNet().eval(), (torch.randn(2, 3, 8, 8),), str(path), dynamo=False, opset_version=17,
                      input_names=["image"], output_names=["probs"], dynamic_axes={"image": {0: "batch"}})
    model = onnx.load(str(path))
    model = onnx.shape_inference.infer_shapes(model)
    helper.set_model_props(model, {"author": "qtool tests"})
    model.doc_string = "a doc"
    onnx.save(model, str(path))
    return path


def test_torch_model_round_trip_keeps_everything(torch_model, tmp_path):
    original = onnx.load(str(torch_model))
    graph = qtool.load(torch_model)
    assert graph.inputs[0].shape == ["batch", 3, 8, 8]
    exported = onnx.load(str(qtool.save(graph, tmp_path / "out.onnx")))
    assert [o.version for o in exported.opset_import] == [o.version for o in original.opset_import]
    assert exported.ir_version == original.ir_version
    assert {p.key: p.value for p in exported.metadata_props} == {"author": "qtool tests"}
    assert exported.doc_string == "a doc" and exported.producer_name == original.producer_name
    assert [n.op_type for n in exported.graph.node] == [n.op_type for n in original.graph.node]
    assert [n.name for n in exported.graph.node] == [n.name for n in original.graph.node]
    assert {t.name for t in exported.graph.initializer} == {t.name for t in original.graph.initializer}
    assert exported.graph.input == original.graph.input and exported.graph.output == original.graph.output
    assert {v.name for v in exported.graph.value_info} == {v.name for v in original.graph.value_info}
    for a, b in zip(original.graph.node, exported.graph.node):
        assert a.attribute == b.attribute
    x = np.random.default_rng(1).random((3, 3, 8, 8), dtype=np.float32)
    np.testing.assert_array_equal(run_ort(original, {"image": x})[0], run_ort(exported, {"image": x})[0])


def _model(nodes, inputs, outputs, initializers=(), opset=17):
    graph = helper.make_graph(nodes, "g", inputs, outputs, initializer=list(initializers))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def test_constants_and_constant_of_shape_fold_into_parameters():
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])
    nodes = [
        helper.make_node("Constant", [], ["shape"], value=numpy_helper.from_array(np.array([2, 3], np.int64))),
        helper.make_node("ConstantOfShape", ["shape"], ["fill"],
                         value=numpy_helper.from_array(np.array([0.5], np.float32))),
        helper.make_node("Add", ["x", "fill"], ["y"]),
    ]
    graph = from_model_proto(_model(nodes, [x], [y]))
    assert [op.op_type for op in graph.operations.values()] == ["Add"]
    np.testing.assert_array_equal(graph.variables["fill"].value, np.full((2, 3), 0.5, np.float32))
    assert "shape" not in graph.variables  # only used by the folded op
    feeds = {"x": np.ones((2, 3), np.float32)}
    np.testing.assert_array_equal(run_ort(to_model_proto(graph), feeds)[0], np.full((2, 3), 1.5, np.float32))


def test_missing_file_and_corrupt_proto_name_the_file(tmp_path):
    with pytest.raises(GraphError, match="no such model file"):
        qtool.load(tmp_path / "absent.onnx")
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x08\x07garbage that is not a protobuf \xff\xff")
    with pytest.raises(GraphError, match="bad.onnx"):
        qtool.load(bad)


def test_subgraph_op_loads_with_its_branches(tmp_path):
    cond = helper.make_tensor_value_info("c", TensorProto.BOOL, [])
    out = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])
    branch = helper.make_graph(
        [helper.make_node("Constant", [], ["b"], value=numpy_helper.from_array(np.ones(1, np.float32)))],
        "branch", [], [helper.make_tensor_value_info("b", TensorProto.FLOAT, [1])])
    node = helper.make_node("If", ["c"], ["y"], name="the_if", then_branch=branch, else_branch=branch)
    path = tmp_path / "if.onnx"
    onnx.save(_model([node], [cond], [out]), str(path))
    graph = qtool.load(path)
    the_if = graph.operations["the_if"]
    assert the_if.has_subgraphs and the_if.subgraph_refs == [] and the_if.attributes["then_branch"] == branch
    assert to_model_proto(graph).graph.node[0] == onnx.load(path).graph.node[0]


def _chain():
    """x -> Relu(a) -> Identity(b) -> Sigmoid(c) -> y"""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])
    nodes = [helper.make_node("Relu", ["x"], ["t1"], name="a"), helper.make_node("Identity", ["t1"], ["t2"], name="b"),
             helper.make_node("Sigmoid", ["t2"], ["y"], name="c")]
    return from_model_proto(_model(nodes, [x], [y]))


def test_use_def_links_and_topological_order():
    graph = _chain()
    a, b, c = (graph.operations[n] for n in "abc")
    assert graph.variables["t1"].producer is a and graph.variables["t1"].consumers == [b]
    assert [op.name for op in graph.topological_order()] == ["a", "b", "c"]


def test_bypass_and_insert_keep_links_and_output_names():
    graph = _chain()
    graph.bypass_operation(graph.operations["b"])
    assert graph.operations["c"].inputs[0] is graph.variables["t1"]
    assert graph.variables["t1"].consumers == [graph.operations["c"]]
    graph.bypass_operation(graph.operations["c"])  # its output is the graph output: the name survives
    assert [v.name for v in graph.outputs] == ["y"] and graph.outputs[0].producer is graph.operations["a"]
    new = graph.insert_after(graph.variables["x"], "Neg")
    assert graph.operations["a"].inputs[0] is new.outputs[0]
    result = run_ort(to_model_proto(graph), {"x": np.array([-1, 2, -3, 4], np.float32)})[0]
    np.testing.assert_array_equal(result, [1, 0, 3, 0])


def test_topological_order_follows_every_mutation():
    graph = _chain()
    graph.topological_order().reverse()  # the caller's own list: the graph's order stays
    assert [op.name for op in graph.topological_order()] == ["a", "b", "c"]
    graph.insert_after(graph.variables["x"], "Neg", name="n")
    assert [op.name for op in graph.topological_order()] == ["n", "a", "b", "c"]
    graph.bypass_operation(graph.operations["b"])
    assert [op.name for op in graph.topological_order()] == ["n", "a", "c"]
    graph.set_input(graph.operations["c"], 0, graph.variables["x"])  # c reads the input now: ready first
    assert [op.name for op in graph.topological_order()] == ["c", "n", "a"]
    assert [op.name for op in graph.copy().topological_order()] == ["c", "n", "a"]


def test_replace_all_uses_and_cycle_detection():
    graph = _chain()
    graph.topological_order()  # asked before the change: the cycle is still found after it
    graph.replace_all_uses(graph.variables["t2"], graph.variables["t1"])
    assert graph.operations["c"].inputs[0] is graph.variables["t1"] and not graph.variables["t2"].consumers
    graph.set_input(graph.operations["a"], 0, graph.variables["y"])
    with pytest.raises(GraphError, match="cycle"):
        graph.topological_order()


def test_save_is_atomic_and_supports_external_data(tmp_path, torch_model):
    graph = qtool.load(torch_model)
    target = tmp_path / "ext" / "model.onnx"
    qtool.save(graph, target, external_data=True)
    assert (target.parent / "model.onnx.data").stat().st_size > 0
    assert sorted(p.name for p in target.parent.iterdir()) == ["model.onnx", "model.onnx.data"]
    x = np.random.default_rng(2).random((1, 3, 8, 8), dtype=np.float32)
    np.testing.assert_allclose(run_ort(target, {"image": x})[0], run_ort(torch_model, {"image": x})[0], rtol=1e-6)
    graph.operations[next(iter(graph.operations))].attributes["bad"] = object()  # cannot be serialized
    with pytest.raises(Exception):
        qtool.save(graph, tmp_path / "broken.onnx")
    assert not any(p.name.startswith(".broken") or p.name == "broken.onnx" for p in tmp_path.iterdir())


@pytest.mark.parametrize("named", ["model.onnx", "./model.onnx"])
def test_external_data_is_written_into_the_working_folder(tmp_path, torch_model, monkeypatch, named):
    """onnx looks its data location up from the working folder: an output there failed with 'External data file
    exists' on the temporary name reserved for it (a model over 2 GB after its whole calibration)."""
    graph = qtool.load(torch_model)
    monkeypatch.chdir(tmp_path)
    qtool.save(graph, named, external_data=True)
    written = {p.name for p in tmp_path.iterdir()} - {os.path.basename(torch_model)}
    assert written == {"model.onnx", "model.onnx.data"}  # no temporary file left either
    x = np.random.default_rng(2).random((1, 3, 8, 8), dtype=np.float32)
    np.testing.assert_allclose(run_ort(tmp_path / "model.onnx", {"image": x})[0],
                               run_ort(torch_model, {"image": x})[0], rtol=1e-6)


def test_set_parameter_value_copies_shared_parameters_and_keeps_float_values():
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])
    ys = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [2]) for n in ("y1", "y2")]
    w = numpy_helper.from_array(np.array([1.0, 2.0], np.float32), "w")
    nodes = [helper.make_node("Mul", ["x", "w"], ["y1"], name="m1"), helper.make_node("Add", ["x", "w"], ["y2"],
                                                                                      name="m2")]
    graph = from_model_proto(_model(nodes, [x], ys, [w]))
    m1, m2 = graph.operations["m1"], graph.operations["m2"]
    private = graph.set_parameter_value(m1, 1, np.array([1.5, 2.5]), quantized=True)
    assert private.name == "w_m1" and m1.inputs[1] is private and m2.inputs[1] is graph.variables["w"]
    assert private.value.dtype == np.float32 and private.float_value.tolist() == [1.0, 2.0]
    again = graph.set_parameter_value(m1, 1, np.array([1.0, 3.0]), quantized=True)
    assert again is private and private.float_value.tolist() == [1.0, 2.0]  # the float value is the original
    assert graph.variables["w"].value.tolist() == [1.0, 2.0] and graph.variables["w"].float_value is None
    with pytest.raises(GraphError, match="not a parameter"):
        graph.set_parameter_value(m1, 0, np.zeros(2))


def test_copy_of_a_deep_graph_is_independent_and_shares_the_weights():
    """Graph.copy never follows op-to-op links (a chain of 5000 ops is deeper than Python's recursion limit)."""
    depth = 5000
    nodes = [helper.make_node("Add", [f"t{i}", "bias"], [f"t{i + 1}"], name=f"add{i}") for i in range(depth)]
    graph_proto = helper.make_graph(nodes, "chain", [helper.make_tensor_value_info("t0", TensorProto.FLOAT, [4])],
                                    [helper.make_tensor_value_info(f"t{depth}", TensorProto.FLOAT, [4])],
                                    [numpy_helper.from_array(np.ones(4, np.float32), "bias")])
    graph = from_model_proto(helper.make_model(graph_proto, opset_imports=[helper.make_opsetid("", 17)]))
    copied = graph.copy()
    assert copied.variables["bias"].value is graph.variables["bias"].value  # shared, not copied
    last = copied.operations[f"add{depth - 1}"]
    assert last is not graph.operations[f"add{depth - 1}"] and last.inputs[0] is copied.variables[f"t{depth - 1}"]
    assert copied.variables[f"t{depth - 1}"].producer is copied.operations[f"add{depth - 2}"]
    copied.remove_operation(last)
    assert f"add{depth - 1}" in graph.operations and graph.variables[f"t{depth}"].producer is not None


def _resident_mib() -> float:
    status = open("/proc/self/status").read()
    return int(status.split("VmRSS:")[1].split()[0]) / 1024


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="reads the resident set from /proc")
def test_a_loaded_graph_keeps_nothing_of_the_parsed_model(tmp_path):
    """The value infos and subgraphs the graph keeps are copies: a part of the parsed ModelProto kept as it is
    keeps all of it alive, its 64 MiB weight a second time beside the graph's array."""
    weight = np.ones((4096, 4096), np.float32)  # 64 MiB
    graph_proto = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["h"]), helper.make_node("Relu", ["h"], ["y"])], "big",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4096])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4096])], [numpy_helper.from_array(weight, "w")],
        value_info=[helper.make_tensor_value_info("h", TensorProto.FLOAT, [1, 4096])])
    onnx.save(helper.make_model(graph_proto, opset_imports=[helper.make_opsetid("", 17)]), tmp_path / "big.onnx")
    del weight, graph_proto
    gc.collect()
    before = _resident_mib()
    graph = qtool.load(tmp_path / "big.onnx")
    gc.collect()
    assert graph.value_info["h"].type.tensor_type.shape.dim[1].dim_value == 4096
    assert _resident_mib() - before < 96  # the weight once (64 MiB), not twice


def test_a_node_named_as_a_tensor_keeps_its_name():
    """ONNX keeps node and tensor names apart: node 'gap' writing tensor 'gap' became op 'gap_1', and an override
    or include naming 'gap' was refused."""
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["gap"], name="gap"),
                               helper.make_node("Neg", ["gap"], ["y"], name="x")], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])])
    loaded = from_model_proto(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))
    assert set(loaded.operations) == {"gap", "x"} and loaded.operations["gap"].outputs[0].name == "gap"
    assert [n.name for n in to_model_proto(loaded).graph.node] == ["gap", "x"]
    assert loaded.add_operation("Relu", [loaded.variables["y"]], [loaded.add_variable("z")], name="gap").name != "gap"


def test_save_files_names_the_data_file_and_copies_no_weight(tmp_path, monkeypatch):
    """A model beyond one protobuf (the limit lowered, so that a small model crosses it) is written with its data
    file, which save_files names (TensorRT's and AIMET's exports left it out of their files); its mapped weights
    go to the file from their mapping (the proto held a copy of every one); a later save that keeps every tensor
    inline removes the data file it no longer reads."""
    import tracemalloc

    import qtool.ir.onnx_export

    weight = np.random.default_rng(0).standard_normal((1024, 1024)).astype(np.float32)
    nodes = [helper.make_node("MatMul", ["x", "w"], ["y"], name="mm")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 1024])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 1024])],
                              [numpy_helper.from_array(weight, "w")])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), tmp_path / "m.onnx",
              save_as_external_data=True, location="m.onnx.data", size_threshold=1024)
    loaded = qtool.load(tmp_path / "m.onnx")  # w mapped from m.onnx.data
    monkeypatch.setattr(qtool.ir.onnx_export, "PROTO_LIMIT", 4096)
    out = tmp_path / "out" / "q.onnx"
    tracemalloc.start()
    files = qtool.save_files(loaded, out)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert files == [out, tmp_path / "out" / "q.onnx.data"] and peak < weight.nbytes / 2
    x = np.ones((2, 1024), np.float32)
    np.testing.assert_array_equal(run_ort(out, {"x": x})[0], run_ort(tmp_path / "m.onnx", {"x": x})[0])
    monkeypatch.undo()
    assert qtool.save_files(loaded, out) == [out] and sorted(p.name for p in out.parent.iterdir()) == ["q.onnx"]
