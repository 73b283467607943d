"""Plugin discovery through real entry points of pip-installed distributions.

Each test distribution is installed with ``pip install --target`` into a
temporary folder put on PYTHONPATH of a ``qtool`` subprocess, so the shared
environment is never modified.
"""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

PLATFORM_MODULE = """
import qtool

class {cls}(qtool.Platform):
    name = "{platform}"
    description = "test platform"
    output_format = "txt"

@qtool.hookimpl
def qtool_register_platforms(register):
    register({cls})
"""

PLUGINS = {
    "qtool-good-demo": ("good_demo", PLATFORM_MODULE.format(cls="Good", platform="good-demo")),
    "qtool-twin-demo": ("twin_demo", PLATFORM_MODULE.format(cls="Twin", platform="good-demo")),
    "qtool-broken-demo": ("broken_demo", "import qtool\nraise ImportError('needs libfoo.so, not installed')\n"),
    "qtool-hookfail-demo": ("hookfail_demo", textwrap.dedent("""
        import qtool

        @qtool.hookimpl
        def qtool_register_platforms(register):
            raise RuntimeError("registration exploded")
        """)),
}


def _write_distribution(root: Path, dist: str, module: str, source: str, entry_point: str | None = None,
                        group: str = "qtool") -> Path:
    folder = root / dist
    folder.mkdir()
    (folder / f"{module}.py").write_text(source)
    (folder / "pyproject.toml").write_text(textwrap.dedent(f"""
        [build-system]
        requires = ["setuptools"]
        build-backend = "setuptools.build_meta"

        [project]
        name = "{dist}"
        version = "1.2.3"

        [tool.setuptools]
        py-modules = ["{module}"]

        [project.entry-points.{group}]
        {entry_point or module.replace('_', '-')} = "{module}"
        """))
    return folder


def _install(tmp_path_factory, plugins: dict) -> Path:
    """A folder holding the test distributions ``plugins`` (dist: module, source[, entry point[, group]]), installed
    by pip."""
    sources = tmp_path_factory.mktemp("sources")
    target = tmp_path_factory.mktemp("site")
    folders = [str(_write_distribution(sources, d, *spec)) for d, spec in plugins.items()]
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                    "--target", str(target), *folders], check=True)
    return target


@pytest.fixture(scope="module")
def plugin_path(tmp_path_factory):
    """A folder holding the four test distributions, installed by pip."""
    return _install(tmp_path_factory, PLUGINS)


def qtool(plugin_path, *args, **env):
    search = [str(plugin_path), os.environ.get("PYTHONPATH")]  # the sources under test stay first after the plugins
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, search)), **env}
    environment.pop("QTOOL_STRICT_PLUGINS", None) if "QTOOL_STRICT_PLUGINS" not in env else None
    return subprocess.run([sys.executable, "-m", "qtool.cli.main", *args], capture_output=True, text=True,
                          env=environment)


def test_broken_plugins_are_reported_by_name_and_the_rest_still_load(plugin_path):
    result = qtool(plugin_path, "list-platforms", "--json", QTOOL_BLOCK_PLUGINS="twin-demo")
    assert result.returncode == 0, result.stderr
    platforms = {p["name"]: p for p in json.loads(result.stdout)["platforms"]}
    assert platforms["good-demo"]["distribution"] == "qtool-good-demo"
    assert platforms["good-demo"]["version"] == "1.2.3"
    err = result.stderr
    assert "plugin 'broken-demo' (distribution qtool-broken-demo 1.2.3)" in err
    assert "ImportError: needs libfoo.so" in err
    assert "plugin 'hookfail-demo' (distribution qtool-hookfail-demo 1.2.3)" in err and "exploded" in err


def test_duplicate_platform_names_both_distributions(plugin_path):
    result = qtool(plugin_path, "list-platforms", "--json")
    assert "platform 'good-demo' is registered twice: by qtool-good-demo 1.2.3 and by qtool-twin-demo 1.2.3" in \
        result.stderr
    assert "good-demo" not in {p["name"] for p in json.loads(result.stdout)["platforms"]}


def test_strict_mode_makes_a_plugin_failure_fatal(plugin_path):
    result = qtool(plugin_path, "list-platforms", "--json", QTOOL_STRICT_PLUGINS="1")
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.startswith("qtool: error: plugin 'broken-demo'")


def test_strict_mode_with_debug_prints_the_traceback_too(plugin_path):
    result = qtool(plugin_path, "list-platforms", "--json", QTOOL_STRICT_PLUGINS="1", QTOOL_DEBUG="1")
    assert result.returncode == 1
    assert "Traceback (most recent call last)" in result.stderr and "ImportError: needs libfoo.so" in result.stderr
    assert result.stderr.rstrip().splitlines()[-1].startswith("qtool: error: plugin 'broken-demo'")


def test_blocked_plugins_are_skipped(plugin_path):
    result = qtool(plugin_path, "list-platforms", "--json",
                   QTOOL_BLOCK_PLUGINS="broken-demo, qtool-hookfail-demo,twin-demo", QTOOL_STRICT_PLUGINS="1")
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert "good-demo" in {p["name"] for p in json.loads(result.stdout)["platforms"]}


def test_plugins_json_lists_hooks_and_errors(plugin_path):
    result = qtool(plugin_path, "plugins", "--json", QTOOL_BLOCK_PLUGINS="twin-demo")
    records = {r["name"]: r for r in json.loads(result.stdout)["plugins"]}
    assert records["good-demo"]["hooks"] == ["qtool_register_platforms"] and records["good-demo"]["error"] is None
    assert "ImportError" in records["broken-demo"]["error"] and records["broken-demo"]["hooks"] == []
    assert "exploded" in records["hookfail-demo"]["error"]
    assert records["twin-demo"]["blocked"] is True


def test_table_output_and_version(plugin_path):
    result = qtool(plugin_path, "list-platforms", COLUMNS="200", QTOOL_BLOCK_PLUGINS="twin-demo")
    assert "good-demo" in result.stdout and "qtool-good-demo" in result.stdout
    version = qtool(plugin_path, "--version")
    assert version.returncode == 0 and version.stdout.startswith("qtool ")


PAIR_MODULE = PLATFORM_MODULE.format(cls="PairA", platform="pair-a").replace(
    "register(PairA)", "register(PairA)\n    register(PairB)") + PLATFORM_MODULE.format(
    cls="PairB", platform="pair-b").split("@qtool.hookimpl")[0].replace("import qtool", "")
FAULTY = {
    # a built-in-like distribution with two platforms, and one whose entry point sorts first claiming the first
    "qtool-pair-demo": ("pair_demo", PAIR_MODULE),
    "qtool-intruder-demo": ("aaa_intruder", PLATFORM_MODULE.format(cls="Intruder", platform="pair-a")),
    "qtool-samename-demo": ("samename_demo", PLATFORM_MODULE.format(cls="Same", platform="same-demo"), "pair-demo"),
    "qtool-typohook-demo": ("typohook_demo", PLATFORM_MODULE.format(cls="T", platform="typohook-demo").replace(
        "def qtool_register_platforms", "def qtool_register_platform")),
    "qtool-nodeco-demo": ("nodeco_demo", PLATFORM_MODULE.format(cls="N", platform="nodeco-demo").replace(
        "@qtool.hookimpl\n", "")),
    "qtool-badsig-demo": ("badsig_demo", PLATFORM_MODULE.format(cls="B", platform="badsig-demo").replace(
        "(register):\n    register(", "(registry):\n    registry(")),
    "qtool-typogroup-demo": ("typogroup_demo", PLATFORM_MODULE.format(cls="G", platform="typogroup-demo"), None,
                             "qtools"),
}
HOOK_WARNINGS = [
    "plugin 'badsig-demo' (distribution qtool-badsig-demo 1.2.3): hook qtool_register_platforms(registry) takes "
    "registry, which qtool does not pass: it must take (register)",
    "plugin 'nodeco-demo' (distribution qtool-nodeco-demo 1.2.3): qtool_register_platforms is not decorated with "
    "@qtool.hookimpl, so qtool never calls it",
    "plugin 'typohook-demo' (distribution qtool-typohook-demo 1.2.3): qtool_register_platform is no qtool hook; did "
    "you mean 'qtool_register_platforms'?",
]
CLASH = ("platform 'pair-a' is registered twice: by qtool-intruder-demo 1.2.3 and by qtool-pair-demo 1.2.3; neither "
         "is used (uninstall one, or set QTOOL_BLOCK_PLUGINS to one's distribution)")


@pytest.fixture(scope="module")
def faulty_path(tmp_path_factory):
    return _install(tmp_path_factory, FAULTY)


def _lines(text: str) -> list[str]:
    return text.strip().splitlines()


def test_a_clash_is_neither_plugins_and_the_victims_other_platforms_stay(faulty_path, tmp_path):
    result = qtool(faulty_path, "list-platforms", "--json")
    platforms = {p["name"]: p["distribution"] for p in json.loads(result.stdout)["platforms"]}
    assert "pair-a" not in platforms and platforms["pair-b"] == "qtool-pair-demo"
    assert _lines(result.stderr) == [f"qtool: warning: {w}" for w in [*HOOK_WARNINGS, CLASH]]
    used = qtool(faulty_path, "explain", str(tmp_path / "m.onnx"), "--platform", "pair-a")
    assert used.returncode == 1
    assert _lines(used.stderr)[len(HOOK_WARNINGS):] == [f"qtool: error: {CLASH}"]


def test_two_distributions_with_one_entry_point_name_both_load(faulty_path):
    records = json.loads(qtool(faulty_path, "plugins", "--json").stdout)["plugins"]
    pair = {r["distribution"]: r for r in records if r["name"] == "pair-demo"}
    assert pair["qtool-samename-demo"]["error"] is None and pair["qtool-pair-demo"]["hooks"] == [
        "qtool_register_platforms"]
    platforms = json.loads(qtool(faulty_path, "list-platforms", "--json").stdout)["platforms"]
    assert {p["name"]: p["distribution"] for p in platforms}["same-demo"] == "qtool-samename-demo"


def test_hooks_misspelt_undecorated_or_taking_other_arguments_are_named(faulty_path):
    records = {r["name"]: r for r in json.loads(qtool(faulty_path, "plugins", "--json").stdout)["plugins"]}
    assert records["badsig-demo"]["hooks"] == [] and records["typohook-demo"]["hooks"] == []
    strict = qtool(faulty_path, "list-platforms", QTOOL_STRICT_PLUGINS="1")
    assert (strict.returncode, _lines(strict.stderr)) == (1, [f"qtool: error: {HOOK_WARNINGS[0]}"])


def test_an_entry_point_in_a_near_miss_group_is_hinted(faulty_path, tmp_path):
    result = qtool(faulty_path, "explain", str(tmp_path / "m.onnx"), "--platform", "typogroup-demo")
    assert result.returncode == 1
    assert _lines(result.stderr)[-1].endswith(
        "distribution qtool-typogroup-demo declares entry point 'typogroup-demo' in group 'qtools': qtool reads "
        "group 'qtool' ([project.entry-points.qtool])")


def test_a_platform_of_a_blocked_plugin_says_it_is_blocked(tmp_path):
    """QTOOL_BLOCK_PLUGINS=onnxruntime made --platform onnxruntime an 'unknown platform', no word of the block."""
    from qtool.testing.models import small_model

    model = small_model(tmp_path / "m.onnx")
    run = subprocess.run([sys.executable, "-m", "qtool", "explain", str(model), "--platform", "onnxruntime"],
                         capture_output=True, text=True, timeout=120,
                         env={**os.environ, "QTOOL_BLOCK_PLUGINS": "onnxruntime"})
    assert run.returncode == 1
    assert run.stderr.startswith("qtool: error: unknown platform 'onnxruntime' (known: ")
    assert run.stderr.endswith("; plugin 'onnxruntime' (distribution qtool-onnxruntime), which would register it, "
                               "is blocked by QTOOL_BLOCK_PLUGINS=onnxruntime\n")
