"""The platform contract finds what a careless plugin gets wrong, and passes a careful one."""

import json
import os
import tempfile
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import qtool
from qtool import Capabilities, Diagnostic, Platform, PluginError, QuantizationPolicy, Severity
from qtool.testing import (
    awkward_graph,
    check_capabilities,
    check_default_config,
    check_export,
    check_pipeline,
    check_platform,
    check_registration,
    check_validate,
    random_inputs,
)


class Careful(Platform):
    """Writes one JSON file of activation scales through qtool.write_atomic; rejects non-int8 tensors."""

    name = "kit-careful"
    description = "test platform"
    output_format = "json"
    capabilities = Capabilities(bits=(8,), policies=("SYMMETRICAL", "PER_TENSOR", "PER_CHANNEL", "LINEAR"))

    def default_config(self):
        return {"activation": {"bits": 8, "symmetric": True}, "bias": {"mode": "float"}}

    def validate(self, graph, options=None):
        return [Diagnostic(Severity.ERROR, "scheme", f"{t.scheme.short()} is not int8", op=t.op.name, tensor=t.tensor)
                for t in qtool.quantized_tensors(graph) if t.scheme.num_of_bits != 8 or t.scheme.is_floating]

    def output_files(self, output, options):
        return [Path(output).with_suffix(".json")]

    def export(self, graph, output, options):
        scales = {t.tensor: float(t.scale.max()) for t in qtool.quantized_tensors(graph)}
        [path] = self.output_files(output, options)
        return [qtool.write_atomic(path, json.dumps(scales, sort_keys=True))]


class Undeclared(Careful):
    """Writes a side file its output_files() does not name."""

    name = "kit-undeclared"

    def export(self, graph, output, options):
        return [*super().export(graph, output, options), qtool.write_atomic(output.with_suffix(".txt"), "notes")]


class InPlace(Careful):
    name = "kit-in-place"

    def export(self, graph, output, options):
        path = output.with_suffix(".json")
        path.write_text("{}")
        return [path]


class Messy(Careful):
    name = "kit-messy"

    def export(self, graph, output, options):
        (output.parent / "scratch.tmp").write_text("left behind")
        return super().export(graph, output, options)


class Contradictory(Careful):
    """Its defaults ask for 4-bit activations, which its own validate() rejects."""

    name = "kit-contradictory"

    def default_config(self):
        return {"activation": {"bits": 4}}


class Sloppy(Careful):
    name = "kit-sloppy"
    capabilities = Capabilities(bits=(0,), policies=("SYMMETRICAL",), opsets=(18, 13), formats=())
    description = ""

    def default_config(self):
        return {"activation": {"bits": 4}}

    def validate(self, graph, options=None):
        graph.operations["conv1"].quant.outputs[0].keep_float()
        return [Diagnostic(Severity.ERROR, "no where", "bad"), Diagnostic(Severity.WARNING, "x", "", tensor="ghost")]


class Private(Careful):
    """Writes through mkstemp and a rename, as write_atomic did before, leaving the file mode 0600."""

    name = "kit-private"

    def export(self, graph, output, options):
        fd, tmp = tempfile.mkstemp(dir=output.parent)
        with os.fdopen(fd, "w") as handle:
            handle.write("{}")
        os.replace(tmp, output.with_suffix(".json"))
        return [output.with_suffix(".json")]


class Silent(Careful):
    """validate() returns None where it means 'nothing to say', with a str severity where it speaks."""

    name = "kit-silent"
    speak = False

    def validate(self, graph, options=None):
        return [Diagnostic("error", "scheme", "no int4")] if self.speak else None


@pytest.fixture
def graph(qtool_calibrated_graph):
    return qtool_calibrated_graph


def test_small_model_fixture_runs_in_onnxruntime(qtool_small_model):
    session = ort.InferenceSession(str(qtool_small_model))
    (out,) = session.run(None, random_inputs(qtool.load(qtool_small_model), 1)[0])
    assert out.shape == (1, 5) and np.isfinite(out).all()


def test_a_file_export_writes_unannounced_is_found(register_platform, graph, tmp_path):
    name = register_platform(Undeclared)
    assert check_export(name, graph, tmp_path / "out") == [
        "kit-undeclared: export() wrote model.txt, which output_files() does not name (a run could not check it "
        "against its inputs)"]


def test_careful_platform_passes_export_and_validate(register_platform, graph, tmp_path):
    name = register_platform(Careful)
    assert check_export(name, graph, tmp_path / "out") == []
    assert check_validate(name, graph) == []
    assert check_capabilities(name) == [] and check_default_config(name) == []
    assert check_registration(name) == [f"{name}: registered by qtool's core, not through an entry point"]


def test_unknown_platform_is_reported_by_name():
    (problem,) = check_platform("kit-nowhere")
    assert problem.startswith("kit-nowhere: not registered (known platforms:")


def test_in_place_writes_and_stray_files_are_found(register_platform, graph, tmp_path):
    name = register_platform(Messy)
    assert check_export(name, graph, tmp_path / "messy") == [
        f"{name}: export() left files it did not return: scratch.tmp"]
    name = register_platform(InPlace)
    assert check_export(name, graph, tmp_path / "in-place") == [
        f"{name}: model.json was rewritten in place; write a temporary file and os.replace it (qtool.write_atomic)"]


def test_files_other_users_cannot_read_are_found(register_platform, graph, tmp_path):
    name = register_platform(Private)
    (problem,) = check_export(name, graph, tmp_path / "private")
    assert problem.startswith(f"{name}: model.json has mode 600, not the umask's ") and "make_readable" in problem


def test_sloppy_declarations_and_diagnostics_are_each_named(register_platform, graph):
    name = register_platform(Sloppy)
    caps = "\n".join(check_capabilities(name))
    for fragment in ("'description' is empty", "capabilities.bits (0,)",
                     "capabilities.opsets (18, 13)", "capabilities.formats is empty"):
        assert fragment in caps
    assert check_default_config(name) == [
        f"{name}: the default activation scheme int4 sym per-tensor [-8, 7] (op 'conv1') is outside the capabilities "
        "(bits (0,), policies SYMMETRICAL)",
        f"{name}: the default weight scheme int8 sym per-channel(axis=0) [-128, 127] (op 'conv1') is outside the "
        "capabilities (bits (0,), policies SYMMETRICAL)"]
    Sloppy.default_config = lambda self: {"activation": {"bitz": 8}}
    (problem,) = check_default_config(name)
    assert problem.startswith(f"{name}: default_config() does not resolve: ") and "bitz" in problem
    problems = check_validate(name, graph)
    assert problems == [
        f"{name}: validate() changed the graph's quantization configs",
        f"{name}: diagnostic code 'no where' should be a short identifier",
        f"{name}: error diagnostic 'no where' names neither an op nor a tensor",
        f"{name}: diagnostic 'x' has no message",
        f"{name}: diagnostic 'x' names tensor 'ghost', which is not in the graph",
    ]


def test_awkward_graph_makes_validate_speak(register_platform, graph):
    name = register_platform(Careful)
    found = qtool.get_platform(name).validate(awkward_graph(graph))
    assert {d.tensor for d in found} >= {"input", "conv1.weight", "output"}
    assert all(d.severity is Severity.ERROR and d.op in graph.operations for d in found)


def test_defaults_must_survive_the_pipeline(register_platform, tmp_path):
    assert check_pipeline(register_platform(Careful), tmp_path / "careful") == []
    (problem,) = check_pipeline(register_platform(Contradictory), tmp_path / "contradictory")
    assert problem.startswith("kit-contradictory: quantizing the small model with the platform's defaults failed:")
    assert "int4" in problem


def test_an_unknown_capability_policy_fails_where_it_is_declared():
    with pytest.raises(PluginError, match="'SYMMETRIC' is not a QuantizationPolicy flag.*SYMMETRICAL"):
        Capabilities(policies=("SYMMETRIC",))
    assert Capabilities(policies=("SYMMETRICAL", "PER_TENSOR")).policies == \
        QuantizationPolicy.SYMMETRICAL | QuantizationPolicy.PER_TENSOR


def test_a_validate_answer_of_the_wrong_type_is_a_problem_not_a_crash(register_platform, tmp_path):
    name = register_platform(Silent)
    problems = check_platform(name, tmp_path)
    assert f"{name}: validate() returned NoneType, not a list" in problems
    assert (f"{name}: platform {name!r} (test_kit_contract): validate() returned None (NoneType); it must return a "
            "list of qtool.Diagnostic") in problems
    Silent.speak = True
    assert f"{name}: diagnostic 'scheme' has severity 'error', not a qtool.Severity" in check_platform(name, tmp_path)
