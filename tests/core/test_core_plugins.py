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


def _write_distribution(root: Path, dist: str, module: str, source: str) -> Path:
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

        [project.entry-points.qtool]
        {module.replace('_', '-')} = "{module}"
        """))
    return folder


@pytest.fixture(scope="module")
def plugin_path(tmp_path_factory):
    """A folder holding the four test distributions, installed by pip."""
    sources = tmp_path_factory.mktemp("sources")
    target = tmp_path_factory.mktemp("site")
    folders = [str(_write_distribution(sources, d, m, s)) for d, (m, s) in PLUGINS.items()]
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                    "--target", str(target), *folders], check=True)
    return target


def qtool(plugin_path, *args, **env):
    search = [str(plugin_path), os.environ.get("PYTHONPATH")]  # the sources under test stay first after the plugins
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, search)), **env}
    environment.pop("QTOOL_STRICT_PLUGINS", None) if "QTOOL_STRICT_PLUGINS" not in env else None
    return subprocess.run([sys.executable, "-m", "qtool.cli.main", *args], capture_output=True, text=True,
                          env=environment)


def test_broken_plugins_are_reported_by_name_and_the_rest_still_load(plugin_path):
    result = qtool(plugin_path, "list-platforms", "--json")
    assert result.returncode == 0, result.stderr
    platforms = {p["name"]: p for p in json.loads(result.stdout)["platforms"]}
    assert platforms["good-demo"]["distribution"] == "qtool-good-demo"
    assert platforms["good-demo"]["version"] == "1.2.3"
    err = result.stderr
    assert "plugin 'broken-demo' (distribution qtool-broken-demo 1.2.3)" in err
    assert "ImportError: needs libfoo.so" in err
    assert "plugin 'hookfail-demo' (distribution qtool-hookfail-demo 1.2.3)" in err and "exploded" in err


def test_duplicate_platform_names_both_distributions(plugin_path):
    err = qtool(plugin_path, "list-platforms", "--json").stderr
    assert "platform 'good-demo' is registered twice: by qtool-good-demo 1.2.3 and by qtool-twin-demo 1.2.3" in err


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
    result = qtool(plugin_path, "list-platforms", COLUMNS="200")
    assert "good-demo" in result.stdout and "qtool-good-demo" in result.stdout
    version = qtool(plugin_path, "--version")
    assert version.returncode == 0 and version.stdout.startswith("qtool ")
