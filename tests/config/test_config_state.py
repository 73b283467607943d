"""The calibrated-state sidecar: save, restore on a fresh graph, mismatches, atomic writes."""

from __future__ import annotations

import json

import numpy as np
import pytest
import qtool
import torch
from qtool.config import resolve_config
from qtool.quant import TQC, OpQuantConfig, QuantizationState, QuantScheme, compute_scale_offset, fake_quantize
from qtool.state import StateError, load_state, save_state

S = QuantizationState


def _weight_params(tqc: TQC, value: np.ndarray):
    axis = tqc.scheme.channel_axis
    if axis is None:
        return compute_scale_offset(tqc.scheme, value.min(), value.max())
    flat = np.moveaxis(value, axis, 0).reshape(value.shape[axis], -1)
    return compute_scale_offset(tqc.scheme, flat.min(1), flat.max(1))


def quantize_by_hand(graph, config, *, bake_fc: bool = False) -> None:
    """Dispatch and 'calibrate' the small model by hand, using several TQC states."""
    ops = graph.operations
    for name in ("conv", "fc", "head.matmul"):
        op = ops[name]
        x, w = op.inputs[0], op.inputs[1]
        act = TQC(config.scheme_for(op, "activation", x.name))
        weight = TQC(config.scheme_for(op, "weight", w.name), role="weight")
        act.set_params(*compute_scale_offset(act.scheme, -2.0, 3.0))
        weight.set_params(*_weight_params(weight, w.value))
        inputs = [act, weight]
        if len(op.inputs) == 3:
            bias = TQC(QuantScheme.integer(32, per_channel=True, channel_axis=0), role="bias")
            bias.make_passive(lambda a=act, wt=weight: (a.scale * wt.scale, np.zeros_like(wt.offset)))
            inputs.append(bias)
        out = TQC(config.scheme_for(op, "activation", op.outputs[0].name))
        op.quant = OpQuantConfig(inputs, [out], True, f"{op.op_type} is in dispatch.quantize_op_types")
    ops["conv"].quant.outputs[0].keep_float()  # fused: Relu quantizes it
    relu = ops["relu"]
    relu_in = TQC(ops["conv"].quant.outputs[0].scheme)
    relu_out = TQC(relu_in.scheme)
    relu_out.set_params(*compute_scale_offset(relu_out.scheme, 0.0, 4.0))
    relu.quant = OpQuantConfig([relu_in], [relu_out], True, "activation after quantized conv")
    relu_in.overlap(relu_out)
    ops["fc"].quant.inputs[0].overlap(relu_out)
    ops["head.matmul"].quant.inputs[0].overlap(ops["fc"].quant.outputs[0])
    ops["fc"].quant.outputs[0].set_params(*compute_scale_offset(relu_out.scheme, -5.0, 5.0))
    head_out = ops["head.matmul"].quant.outputs[0]
    head_out.restore_state(S.INITIAL)  # not calibrated yet
    head_out._scale = head_out._offset = None
    if bake_fc:
        w = ops["fc"].quant.inputs[1]
        var = ops["fc"].inputs[1]
        var.float_value = var.value  # as Baking keeps it
        var.value = fake_quantize(torch.tensor(var.value), w.scheme, w.scale, w.offset).numpy()
        w.bake()


@pytest.fixture
def config():
    return resolve_config({}, None, preset="w8a8-asym")


@pytest.fixture
def saved(small_model_path, config, tmp_path):
    graph = qtool.load(small_model_path)
    quantize_by_hand(graph, config)
    path = save_state(graph, tmp_path / "model.qstate.json", config=config, data_fingerprint="abc123")
    return graph, path


def _without_created(path) -> dict:
    data = json.loads(path.read_text())
    data.pop("created")
    return data


def test_round_trip_gives_the_same_file(saved, small_model_path, config, tmp_path):
    _, path = saved
    fresh = qtool.load(small_model_path)
    data = load_state(fresh, path)
    again = save_state(fresh, tmp_path / "again.json", config=config, data_fingerprint=data["data_fingerprint"])
    assert _without_created(again) == _without_created(path)
    assert data["config"] == config.to_dict() and data["data_fingerprint"] == "abc123"
    assert resolve_config({}, data["config"]) == config


def test_file_records_versions_and_states(saved):
    _, path = saved
    data = json.loads(path.read_text())
    assert data["format_version"] == 1 and data["qtool_version"] == qtool.__version__
    conv = data["ops"]["conv"]
    assert conv["quantized"] is True and conv["reason"]
    assert conv["inputs"][1]["role"] == "weight" and len(conv["inputs"][1]["scale"]) == 8
    assert conv["inputs"][1]["axis"] == 0 and conv["inputs"][1]["policy"] == ["SYMMETRICAL", "PER_CHANNEL", "LINEAR"]
    assert conv["inputs"][2]["passive"] is True and conv["outputs"][0]["state"] == "fp32"
    assert data["ops"]["relu"]["inputs"][0]["dominator"] == {"op": "relu", "side": "outputs", "index": 0}
    assert data["ops"]["head.matmul"]["inputs"][0]["dominator"] == {"op": "fc", "side": "outputs", "index": 0}
    assert data["ops"]["head.matmul"]["outputs"][0]["scale"] is None
    assert data["ops"]["flatten"] == {"op_type": "Flatten"}


def test_load_restores_parameters_links_and_rules(saved, small_model_path):
    graph, path = saved
    fresh = qtool.load(small_model_path)
    load_state(fresh, path)
    for name, op in graph.operations.items():
        new = fresh.operations[name].quant
        if op.quant is None:
            assert new is None
            continue
        for old_tqc, new_tqc in zip(op.quant.all_configs(), new.all_configs(), strict=True):
            assert new_tqc.scheme == old_tqc.scheme and new_tqc.state == old_tqc.state
            assert new_tqc.role == old_tqc.role
            if old_tqc.scale is not None:
                np.testing.assert_array_equal(new_tqc.scale, old_tqc.scale)
                np.testing.assert_array_equal(new_tqc.offset, old_tqc.offset)
    ops = fresh.operations
    assert ops["relu"].quant.inputs[0].dominator is ops["relu"].quant.outputs[0]
    assert ops["fc"].quant.inputs[0].dominator is ops["relu"].quant.outputs[0]
    assert ops["conv"].quant.inputs[2].is_passive


def test_loaded_graph_simulates_like_the_original(saved, small_model_path):
    executor = pytest.importorskip("qtool.executor")
    graph, path = saved
    graph.operations["head.matmul"].quant.outputs[0].keep_float()
    fresh = qtool.load(small_model_path)
    load_state(fresh, path)
    fresh.operations["head.matmul"].quant.outputs[0].keep_float()
    x = np.random.default_rng(1).standard_normal((1, 3, 4, 4)).astype(np.float32)
    expected = executor.TorchExecutor(graph).forward([x])[0]
    got = executor.TorchExecutor(fresh).forward([x])[0]
    unquantized = qtool.load(small_model_path)
    float_out = executor.TorchExecutor(unquantized).forward([x])[0]
    np.testing.assert_array_equal(got, expected)
    assert not np.array_equal(got, float_out)


def test_baked_weights_stay_baked_only_where_values_are_on_the_grid(small_model_path, config, tmp_path):
    graph = qtool.load(small_model_path)
    quantize_by_hand(graph, config, bake_fc=True)
    path = save_state(graph, tmp_path / "s.json", config=config, data_fingerprint=None)
    on_grid = qtool.load(small_model_path)
    on_grid.variables["fc.w"].value = graph.variables["fc.w"].value.copy()
    load_state(on_grid, path)
    assert on_grid.operations["fc"].quant.inputs[1].state is S.BAKED
    unbaked = qtool.load(small_model_path)
    load_state(unbaked, path)
    assert unbaked.operations["fc"].quant.inputs[1].state is S.ACTIVATED


def test_existing_configs_with_another_scheme_are_a_mismatch(saved, small_model_path):
    _, path = saved
    fresh = qtool.load(small_model_path)
    quantize_by_hand(fresh, resolve_config({}, {"weight": {"bits": 4}}, preset="w8a8-asym"))
    with pytest.raises(StateError, match=r"op 'conv' inputs\[1\] tensor 'conv.w'.*int4 sym.*int8 sym"):
        load_state(fresh, path)


def test_a_mismatch_the_short_forms_hide_names_the_field(saved, small_model_path):
    """Only the observer differs: the message printed two identical schemes."""
    _, path = saved
    fresh = qtool.load(small_model_path)
    quantize_by_hand(fresh, resolve_config({}, {"calibration": {"observer": "kl"}}, preset="w8a8-asym"))
    with pytest.raises(StateError, match=r"\(observer kl here, \w+ saved\)$"):
        load_state(fresh, path)


def test_existing_configs_with_the_same_scheme_are_kept_and_filled(saved, small_model_path, config):
    _, path = saved
    fresh = qtool.load(small_model_path)
    quantize_by_hand(fresh, config)
    act = fresh.operations["conv"].quant.inputs[0]
    act.set_params(np.float32(9.0), np.int32(0))
    load_state(fresh, path)
    assert fresh.operations["conv"].quant.inputs[0] is act and act.scale == pytest.approx(5.0 / 255)


@pytest.mark.parametrize("edit, message", [
    (lambda d: d["ops"].update(ghost=d["ops"].pop("relu")),
     r"ops not in the model: 'ghost'.*not in the state file: 'relu'"),
    (lambda d: d["ops"]["conv"].update(op_type="ConvTranspose"),
     r"op 'conv' is a Conv in the model but a ConvTranspose"),
    (lambda d: d["ops"]["fc"]["inputs"][1].update(tensor="fc.weight"), r"op 'fc' inputs\[1\]: tensor 'fc.weight'"),
    (lambda d: d["ops"]["fc"]["inputs"][1].update(bits=99), r"op 'fc' inputs\[1\] tensor 'fc.w': invalid saved scheme"),
    (lambda d: d.update(format_version=7), r"format_version 7 is not supported"),
    (lambda d: d["ops"]["head.matmul"]["inputs"][0]["dominator"].update(op="flatten"),
     r"op 'head.matmul' inputs\[0\]: dominator 'flatten' outputs\[0\] has no config"),
])
def test_mismatching_files_name_the_op_and_tensor(saved, small_model_path, edit, message):
    _, path = saved
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))
    with pytest.raises(StateError, match=message) as info:
        load_state(qtool.load(small_model_path), path)
    assert str(path) in str(info.value)


def test_unreadable_files_name_the_file(tmp_path, small_graph):
    with pytest.raises(StateError, match=r"missing\.json: no such state file"):
        load_state(small_graph, tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(StateError, match=r"bad\.json: not a readable state file"):
        load_state(small_graph, bad)


def test_failed_save_leaves_the_old_file_and_no_temporary(saved, config):
    graph, path = saved
    before = path.read_text()
    orphan = TQC(graph.operations["conv"].quant.inputs[0].scheme)
    orphan.set_params(np.float32(1.0), np.int32(0))
    graph.operations["conv"].quant.inputs[0].overlap(orphan)
    with pytest.raises(StateError, match=r"op 'conv' inputs\[0\]: overlapped with a config that belongs to no op"):
        save_state(graph, path, config=config, data_fingerprint=None)
    assert path.read_text() == before
    assert [p.name for p in path.parent.iterdir()] == [path.name]


def test_dispatched_graph_that_disagrees_on_what_is_quantized(saved, small_model_path, config):
    _, path = saved
    fresh = qtool.load(small_model_path)
    quantize_by_hand(fresh, config)
    fresh.operations["fc"].quant.inputs[2] = None
    with pytest.raises(StateError, match=r"op 'fc' inputs\[2\]: the state file quantizes this tensor, the graph "
                                         r"does not \(an int32 bias: bias\.mode, or the platform, differs"):
        load_state(fresh, path)  # a state of onnxruntime-int32bias loaded on onnxruntime said nothing of why
    fresh.operations["fc"].quant.quantized = False
    with pytest.raises(StateError, match=r"op 'fc' is float in the graph but quantized in the state file"):
        load_state(fresh, path)
    fresh.operations["flatten"].quant = OpQuantConfig.float_op(1, 1, "float")
    with pytest.raises(StateError, match=r"op 'flatten' has configs in the graph but none in the state file"):
        load_state(fresh, path)


def test_overlap_cycle_in_a_file_is_reported(saved, small_model_path):
    _, path = saved
    data = json.loads(path.read_text())
    relu_out = data["ops"]["relu"]["outputs"][0]
    relu_out["dominator"] = {"op": "relu", "side": "inputs", "index": 0}
    path.write_text(json.dumps(data))
    with pytest.raises(StateError, match=r"op 'relu' outputs\[0\]: overlapping these configs would make a cycle"):
        load_state(qtool.load(small_model_path), path)


def test_a_state_is_not_restored_onto_other_weights_of_the_same_names(saved, small_model_path):
    """Another model with the same op and tensor names took the saved weight scales, which clipped its weights
    (a probe's CNN: 18.1 dB against 48.4 calibrated anew), and wrote it with a success message."""
    _, path = saved
    other = qtool.load(small_model_path)
    other.variables["fc.w"].value = other.variables["fc.w"].value * 3
    with pytest.raises(StateError, match=r"op 'fc' inputs\[1\] tensor 'fc.w': the model's weight is not the one the "
                                         r"state was saved with"):
        load_state(other, path)
    load_state(qtool.load(small_model_path), path)  # the same weights: restored


@pytest.mark.parametrize("field, value, message", [
    ("scale", float("nan"), "finite and positive"), ("scale", 0.0, "finite and positive"),
    ("scale", -1.0, "finite and positive"), ("offset", 1000, "codes of"), ("scale", "abc", "must be numbers")])
def test_a_hand_edited_scale_or_offset_is_refused_naming_the_tensor(saved, small_model_path, field, value, message):
    """A NaN, zero or negative scale was written as 1e-45 (the model then ignored its input), an offset of 1000 on
    a uint8 grid as 232."""
    _, path = saved
    data = json.loads(path.read_text())
    item = next(i for record in data["ops"].values() for i in record.get("inputs", [])
                if i is not None and i["scale"] is not None and i["role"] == "activation")
    item[field] = [value] if isinstance(item[field], list) else value
    path.write_text(json.dumps(data))
    with pytest.raises(StateError, match=rf"tensor {item['tensor']!r}: the saved .*{message}"):
        load_state(qtool.load(small_model_path), path)
