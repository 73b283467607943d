"""A platform's wrong answers (validate, annotate, export) stop the run in one line naming it; nothing is written."""

from __future__ import annotations

import json
import re

import pytest
import qtool
from qtool.pipeline import UnsupportedModelError, plan
from qtool.plugins import PluginError
from qtool.testing import calibration_file, small_model

CONV = "conv1"


class Faulty(qtool.Platform):
    """A platform whose answers come from ``answers``: validate, annotate, export by name."""

    name = "faulty"
    description = "answers what the test says"
    output_format = "json"

    def __init__(self, **answers) -> None:
        self.answers = answers

    def validate(self, graph, options=None):
        return self.answers["validate"]() if "validate" in self.answers else []

    def annotate(self, op, proposal):
        return self.answers["annotate"](proposal) if "annotate" in self.answers else proposal

    def output_files(self, output, options):
        return [output.with_suffix(".json"), output.with_suffix(".side")]

    def export(self, graph, output, options):
        model, side = self.output_files(output, options)
        return self.answers["export"](model, side) if "export" in self.answers else [
            qtool.write_atomic(model, json.dumps({"ops": len(graph.operations)})), qtool.write_atomic(side, "side")]


@pytest.fixture
def inputs(tmp_path):
    model = small_model(tmp_path / "in" / "m.onnx")
    return model, calibration_file(qtool.load(model), tmp_path / "in" / "c.npz")


def refused(inputs, tmp_path, platform) -> str:
    """The run's one-line PluginError; the output folder stays empty."""
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(PluginError) as caught:
        qtool.quantize(*inputs[:1], platform, inputs[1], output=out / "q")
    assert list(out.iterdir()) == []
    message = str(caught.value)
    assert "\n" not in message and message.startswith("platform 'faulty' (test_pipeline_platform_answers)")
    return message


def test_an_error_from_a_generator_is_not_dropped(inputs, tmp_path):
    error = qtool.Diagnostic(qtool.Severity.ERROR, "faulty.gen", "from a generator", op=CONV)
    platform = Faulty(validate=lambda: (d for d in [error]))
    with pytest.raises(UnsupportedModelError, match="from a generator") as caught:
        qtool.quantize(*inputs[:1], platform, inputs[1], output=tmp_path / "out" / "q")
    assert caught.value.diagnostics.count(error) == 1
    assert not (tmp_path / "out").exists()


def test_a_generator_of_warnings_is_read_once(inputs):
    warning = qtool.Diagnostic(qtool.Severity.WARNING, "faulty.gen", "from a generator", op=CONV)
    result = qtool.quantize(*inputs[:1], Faulty(validate=lambda: (d for d in [warning])), inputs[1])
    assert result.diagnostics.count(warning) == 1


@pytest.mark.parametrize("answer, says", [
    (lambda: None, "validate() returned None (NoneType); it must return a list of qtool.Diagnostic"),
    (lambda: "oops", "validate() returned 'oops' (str); it must return a list"),
    (lambda: ["asymmetric is bad"], "validate() returned 'asymmetric is bad' (str) among its diagnostics; each "
                                    "must be a qtool.Diagnostic"),
    (lambda: [qtool.Diagnostic("error", "faulty.x", "string severity", op=CONV)],
     "validate() returned diagnostic 'faulty.x' with severity 'error' (str); it must be a qtool.Severity"),
])
def test_a_wrong_validate_answer_is_refused(inputs, tmp_path, answer, says):
    assert says in refused(inputs, tmp_path, Faulty(validate=answer))


def test_validate_raising_names_the_platform(inputs, tmp_path):
    def boom():
        raise KeyError("oops")

    assert refused(inputs, tmp_path, Faulty(validate=boom)).endswith("failed in validate: KeyError: 'oops'")


def test_annotate_raising_names_the_platform_and_the_op(inputs, tmp_path):
    def boom(proposal):
        raise IndexError("annotate bug")

    assert refused(inputs, tmp_path, Faulty(annotate=boom)).endswith(
        f"failed in annotate (op {CONV!r}): IndexError: annotate bug")


@pytest.mark.parametrize("answer", [None, "keep float please"])
def test_a_wrong_annotate_answer_says_what_it_must_return(inputs, tmp_path, answer):
    assert refused(inputs, tmp_path, Faulty(annotate=lambda proposal: answer)).endswith(
        f"annotate() returned {answer!r} ({type(answer).__name__}) for op {CONV!r}; it must return the qtool.Proposal "
        "it was given (changed or not) or qtool.KeepFloat(reason)")


def test_annotate_is_asked_about_compute_ops_and_fusion_activations_decides_the_rest(inputs):
    """As docs/writing-a-plugin.md says: the Relu after conv1 is quantized by fusion.activations, not annotate."""
    asked = []
    relu = {}
    for activations in (None, ["Clip"]):
        platform = Faulty(annotate=lambda proposal: asked.append(proposal.reason) or proposal)
        platform.default_config = lambda acts=activations: {} if acts is None else {"fusion": {"activations": acts}}
        relu[activations is None] = plan(inputs[0], platform).graph.operations["relu"].quant.quantized
    assert all(reason.endswith(" is in dispatch.quantize_op_types") for reason in asked)
    assert "Relu" not in {reason.split()[0] for reason in asked}
    assert relu == {True: True, False: False}


def _model_then(then):
    """An export that writes the model (atomically), then does ``then(side)``."""
    def export(model, side):
        written = qtool.write_atomic(model, "{}")
        return then(written, side)
    return export


def _crash(model, side):
    raise RuntimeError("side writer crashed")


@pytest.mark.parametrize("then, says", [
    (_crash, "failed in export to "),
    (lambda model, side: None, "export() returned None (NoneType); it must return a list of the paths it wrote"),
    (lambda model, side: [model, qtool.write_atomic(side, "new"), qtool.write_atomic(side.with_suffix(".extra"), "x")],
     ".extra, which output_files() does not name"),
    (lambda model, side: [model, side.with_suffix(".missing")], "q.missing, which is not a file it wrote"),
])
def test_an_export_that_fails_partway_leaves_the_files_as_they_were(inputs, tmp_path, then, says):
    platform = Faulty(export=_model_then(then))
    assert says in refused(inputs, tmp_path, platform)  # nothing there before: nothing there after
    out = tmp_path / "old"
    out.mkdir()
    (out / "q.json").write_text("OLD model")
    (out / "q.side").write_text("OLD side")
    with pytest.raises(PluginError, match=re.escape(says)):
        qtool.quantize(*inputs[:1], platform, inputs[1], output=out / "q")
    assert {p.name: p.read_text() for p in out.iterdir()} == {"q.json": "OLD model", "q.side": "OLD side"}
