"""QuantAlignment: Concat and Add/Max inputs get compatible scales, mixed-precision inputs stay their own."""

from __future__ import annotations

import numpy as np
from onnx import helper
from passes_helpers import (
    ASYM_INT8,
    graph_of,
    init,
    outputs,
    passes_until,
    random_samples,
    relative_error,
    tensor,
)
from qtool.passes import PassManager
from qtool.quant.tensors import representable_range

SAMPLES = random_samples((1, 3, 5, 5))


def _two_branches(join: str, second_scale: float = 4.0, **attributes):
    """x -> conv a, conv b (b's weights ``second_scale`` x wider) -> join -> conv out."""
    wide, rng = 2 if join == "Concat" else 1, np.random.default_rng(5)
    nodes = [helper.make_node("Conv", ["x", "wa"], ["a"], name="conv_a"),
             helper.make_node("Conv", ["x", "wb"], ["b"], name="conv_b"),
             helper.make_node(join, ["a", "b"], ["j"], name="join", **attributes),
             helper.make_node("Conv", ["j", "wo"], ["y"], name="conv_out")]
    inits = [init("wa", rng.normal(size=(4, 3, 1, 1))), init("wb", second_scale * rng.normal(size=(4, 3, 1, 1))),
             init("wo", rng.normal(size=(2, 4 * wide, 1, 1)))]
    return graph_of(nodes, [tensor("x", [1, 3, 5, 5])], [tensor("y", None)], inits)


def _align(graph, config):
    reference = outputs(graph, SAMPLES, quantize=False)
    runs = {r.name: r for r in PassManager(passes_until(config, SAMPLES, "QuantAlignment")).run(graph)}
    return runs["QuantAlignment"], reference


def test_concat_output_mode_writes_both_branches_on_the_output_grid(make_config):
    graph = _two_branches("Concat", axis=1)

    result, reference = _align(graph, make_config(activation=ASYM_INT8, alignment={"concat": "output"}))

    join = graph.operations["join"]
    out = join.quant.outputs[0].dominator
    assert result.details["aligned"] == ["join (output)"]
    for branch in ("conv_a", "conv_b"):
        assert graph.operations[branch].quant.outputs[0].dominator is out
    assert all(t.dominator is out for t in join.quant.inputs)
    assert relative_error(outputs(graph, SAMPLES), reference) < 0.05


def test_add_max_mode_shares_the_range_covering_both_inputs(make_config):
    graph = _two_branches("Add")
    passes = passes_until(make_config(activation=ASYM_INT8, alignment={"add": "max"}), SAMPLES, "QuantAlignment")
    PassManager(passes[:-1]).run(graph)
    before = [representable_range(graph.operations[name].quant.outputs[0]) for name in ("conv_a", "conv_b")]

    assert passes[-1](graph).modified

    a, b = (t.dominator for t in graph.operations["join"].quant.inputs)
    assert a is b
    lo, hi = representable_range(a)
    assert lo <= min(r[0] for r in before) + 1e-6 and hi >= max(r[1] for r in before) - 1e-6
    assert hi - lo < 1.05 * max(r[1] - r[0] for r in before)


def test_mixed_precision_input_keeps_its_own_parameters(make_config):
    graph = _two_branches("Concat", axis=1)
    config = make_config(activation=ASYM_INT8, alignment={"concat": "output"},
                         override=[{"op_name": "conv_b", "activation": {"bits": 4}}])

    result, reference = _align(graph, config)

    join = graph.operations["join"]
    out = join.quant.outputs[0].dominator
    int4 = graph.operations["conv_b"].quant.outputs[0]
    assert graph.operations["conv_a"].quant.outputs[0].dominator is out
    assert int4.dominator is not out and int4.scheme.num_of_bits == 4
    assert join.quant.inputs[1].dominator is int4  # read at int4, then requantized to the int8 output
    assert result.modified
    assert relative_error(outputs(graph, SAMPLES), reference) < 0.4  # int4 on the wide branch


def test_none_mode_changes_nothing(make_config):
    graph = _two_branches("Add")

    result, _ = _align(graph, make_config(alignment={"add": "none"}))

    a, b = (t.dominator for t in graph.operations["join"].quant.inputs)
    assert not result.modified and a is not b
