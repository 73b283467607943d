"""LSTM, GRU and RNN against onnxruntime: directions, layouts, initial states, sequence lengths, clip, activations."""

import numpy as np
import pytest
from op_harness import assert_same, check_op, make_model, randn, run_ort, run_torch

SEQ, BATCH, INPUT, HIDDEN = 5, 3, 4, 6
GATES = {"LSTM": 4, "GRU": 3, "RNN": 1}
DIRECTIONS = {"forward": 1, "reverse": 1, "bidirectional": 2}


def _inputs(op_type, direction, layout=0, *, states=False, seq_lens=False, peepholes=False):
    dirs, gates = DIRECTIONS[direction], GATES[op_type]
    x = randn(SEQ, BATCH, INPUT) if layout == 0 else randn(BATCH, SEQ, INPUT)
    inputs = [x, randn(dirs, gates * HIDDEN, INPUT, seed=1) * 0.5, randn(dirs, gates * HIDDEN, HIDDEN, seed=2) * 0.5,
              randn(dirs, 2 * gates * HIDDEN, seed=3) * 0.5,
              np.array([SEQ, 2, 4], dtype=np.int32) if seq_lens else None]
    if states:
        shape = (dirs, BATCH, HIDDEN) if layout == 0 else (BATCH, dirs, HIDDEN)
        inputs.append(randn(*shape, seed=4))
        if op_type == "LSTM":
            inputs.append(randn(*shape, seed=5))
    if peepholes:
        inputs += [None] * (7 - len(inputs)) + [randn(dirs, 3 * HIDDEN, seed=6)]
    while inputs[-1] is None:
        inputs.pop()
    return inputs


def _check(op_type, inputs, attrs, num_outputs=None):
    num_outputs = num_outputs or (3 if op_type == "LSTM" else 2)
    attrs = {"hidden_size": HIDDEN, **attrs}
    if attrs.get("layout", 0) == 0:
        check_op(op_type, inputs, attrs, opset=14, num_outputs=num_outputs, initializers=(1, 2, 3),
                 rtol=1e-5, atol=1e-5)
    else:
        _check_batch_first(op_type, inputs, attrs, num_outputs)


def _check_batch_first(op_type, inputs, attrs, num_outputs):
    """onnxruntime's CPU kernels refuse layout 1: compare with its layout-0 run of the same data, transposed."""
    seq_first = [a if a is None or i in (1, 2, 3, 4) else np.swapaxes(a, 0, 1) for i, a in enumerate(inputs)]
    model = make_model(op_type, seq_first, {**attrs, "layout": 0}, 14, num_outputs, (1, 2, 3))
    expected = run_ort(model, seq_first, (1, 2, 3))
    expected = [np.transpose(expected[0], (2, 0, 1, 3)), *(np.swapaxes(e, 0, 1) for e in expected[1:])]
    actual = run_torch(make_model(op_type, inputs, attrs, 14, num_outputs, (1, 2, 3)), inputs, 14)
    assert len(actual) == num_outputs
    for exp, act in zip(expected, actual, strict=True):
        assert_same(np.ascontiguousarray(exp), act.contiguous(), 1e-5, 1e-5)


@pytest.mark.parametrize("op_type", sorted(GATES))
@pytest.mark.parametrize("direction", sorted(DIRECTIONS))
@pytest.mark.parametrize("layout", [0, 1])
def test_directions_and_layouts(op_type, direction, layout):
    _check(op_type, _inputs(op_type, direction, layout), {"direction": direction, "layout": layout})


@pytest.mark.parametrize("op_type", sorted(GATES))
@pytest.mark.parametrize("direction", ["forward", "bidirectional"])
@pytest.mark.parametrize("layout", [0, 1])
def test_initial_states_and_sequence_lengths(op_type, direction, layout):
    inputs = _inputs(op_type, direction, layout, states=True, seq_lens=True)
    _check(op_type, inputs, {"direction": direction, "layout": layout})


@pytest.mark.parametrize("op_type", sorted(GATES))
def test_reverse_with_sequence_lengths(op_type):
    """A reversed sequence shorter than the batch's starts at its own last step."""
    _check(op_type, _inputs(op_type, "reverse", seq_lens=True), {"direction": "reverse"})


@pytest.mark.parametrize("op_type", sorted(GATES))
@pytest.mark.parametrize("layout", [0, 1])
def test_a_sequence_of_length_zero_ends_in_zero_states(op_type, layout):
    """onnxruntime gives an empty sequence zero final states, not its initial ones (which are random here)."""
    inputs = _inputs(op_type, "bidirectional", layout, states=True, seq_lens=True)
    inputs[4] = np.array([SEQ, 0, 3], dtype=np.int32)
    _check(op_type, inputs, {"direction": "bidirectional", "layout": layout})


def test_sequence_lengths_beyond_the_sequence_are_refused():
    inputs = _inputs("RNN", "forward", seq_lens=True)
    inputs[4] = np.array([SEQ, SEQ + 1, 3], dtype=np.int32)
    model = make_model("RNN", inputs, {"hidden_size": HIDDEN}, 14, 2, (1, 2, 3))
    with pytest.raises(ValueError, match=r"sequence_lens \[5, 6, 3\] holds values outside \[0, 5\]"):
        run_torch(model, inputs, 14)


def test_lstm_peepholes_clip_and_coupled_gates():
    inputs = _inputs("LSTM", "bidirectional", states=True, peepholes=True)
    _check("LSTM", inputs, {"direction": "bidirectional", "clip": 0.7})
    _check("LSTM", inputs, {"direction": "bidirectional", "input_forget": 1})


@pytest.mark.parametrize("linear_before_reset", [0, 1])
def test_gru_linear_before_reset(linear_before_reset):
    inputs = _inputs("GRU", "bidirectional", states=True)
    _check("GRU", inputs, {"direction": "bidirectional", "linear_before_reset": linear_before_reset, "clip": 0.9})


def test_activations_with_parameters():
    """Alphas and betas go, in order, to the activations that take them."""
    _check("RNN", _inputs("RNN", "bidirectional"), {"direction": "bidirectional", "activations": ["LeakyRelu", "Affine"],
                                                    "activation_alpha": [0.2, 0.5], "activation_beta": [0.1]})
    _check("GRU", _inputs("GRU", "forward"), {"activations": ["HardSigmoid", "Softsign"],
                                              "activation_alpha": [0.3], "activation_beta": [0.4]})


@pytest.mark.parametrize("activation", ["Affine", "ScaledTanh", "ThresholdedRelu", "LeakyRelu", "HardSigmoid", "Elu"])
def test_activation_parameters_not_given_default_as_in_onnxruntime(activation):
    """Affine, ScaledTanh and ThresholdedRelu default alpha (and beta) to 0 there, not to the spec's 1."""
    _check("RNN", _inputs("RNN", "forward"), {"activations": [activation]})


def test_only_the_sequence_output_is_declared():
    inputs = _inputs("LSTM", "forward", states=True)
    _check("LSTM", inputs, {}, num_outputs=1)
