"""The bad-input corpus (tests/trust/corpus.py) through the real CLI, in this process.

Each case: exactly one line on stderr, ``qtool: error: ...`` naming the culprit, exit 1, no
traceback, nothing new in the output folder, the inputs byte-identical, and nothing from the
user's files executed (a hostile file would write a marker).
"""

import subprocess
import sys

import pytest
import qtool
from corpus import PWNED, build_cases, model
from qtool.cli.main import main
from qtool.platform import PLATFORMS
from qtool.plugins import plugin_manager

CASES = build_cases()
# failures that can only show after the passes ran: the pass lines (progress) come before the error line
AFTER_THE_PASSES = {"platform-validate-raises", "platform-export-disk-full"}


class BrokenDefaults(qtool.Platform):
    name = "broken-defaults"
    description = "a platform whose default_config raises"

    def default_config(self):
        raise RuntimeError("defaults exploded")


class BrokenValidate(qtool.Platform):
    name = "broken-validate"
    description = "a platform whose validate raises"

    def validate(self, graph, options=None):
        return {}["missing key"]


class DiskFull(qtool.Platform):
    name = "disk-full"
    description = "a platform whose export meets a full disk"

    def export(self, graph, output, options):
        raise OSError(28, "No space left on device")


class _Registration:
    @qtool.hookimpl
    def qtool_register_platforms(self, register):
        register(BrokenDefaults)
        register(BrokenValidate)
        register(DiskFull)


@pytest.fixture(scope="module", autouse=True)
def broken_platforms():
    manager = plugin_manager().manager
    plugin = _Registration()
    manager.register(plugin, name="broken-test-platforms")
    PLATFORMS.clear()
    yield
    manager.unregister(plugin)
    PLATFORMS.clear()


def snapshot(folder):
    return {str(p.relative_to(folder)): p.read_bytes() if p.is_file() else None for p in sorted(folder.rglob("*"))}


def test_the_corpus_is_large_enough():
    assert len(CASES) >= 60
    assert len({name for name, _ in CASES}) == len(CASES)


@pytest.mark.parametrize("name, build", CASES, ids=[name for name, _ in CASES])
def test_bad_input_gets_one_line_and_changes_nothing(name, build, tmp_path, capsys, monkeypatch):
    inputs, out = tmp_path / "inputs", tmp_path / "out"
    inputs.mkdir()
    out.mkdir()
    argv, culprit = build(inputs, out)
    before = snapshot(inputs)
    monkeypatch.chdir(inputs)  # hostile files write relative to here too
    capsys.readouterr()
    code = main(argv)
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    if name in AFTER_THE_PASSES:
        assert lines[0].startswith("quantizing ") and all(line.startswith("  ") for line in lines[1:-1]), err
        lines = lines[-1:]
    assert code == 1, err
    assert len(lines) == 1 and lines[0].startswith("qtool: error: "), err
    assert culprit in lines[0]
    assert "Traceback" not in err
    assert list(out.iterdir()) == []
    assert snapshot(inputs) == before
    assert not (inputs / PWNED).exists() and not (tmp_path / PWNED).exists()


@pytest.mark.parametrize("argv, culprit", [
    (["quantize", "{m}", "--platform", "onnxrntime", "--calib", "{m}", "-o", "{o}"], "did you mean 'onnxruntime'"),
    (["inspect", "{i}/nope.onnx"], "nope.onnx: no such model file"),
])
def test_a_few_cases_as_a_real_process(argv, culprit, tmp_path):
    path = model(tmp_path)
    argv = [a.format(m=path, o=tmp_path / "out" / "q.onnx", i=tmp_path) for a in argv]
    run = subprocess.run([sys.executable, "-m", "qtool", *argv], capture_output=True, text=True, timeout=120)
    assert run.returncode == 1
    assert run.stderr.strip().splitlines() == [run.stderr.strip()] and culprit in run.stderr
    assert not (tmp_path / "out").exists()
