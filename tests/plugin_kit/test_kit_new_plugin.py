"""``qtool new-plugin``: a skeleton that installs, registers and passes its own contract tests."""

import importlib
import json
import os
import shutil
import subprocess
import sys
from contextlib import contextmanager
from importlib import metadata

import pytest
from qtool.cli.main import main
from qtool.cli.new_plugin import NewPluginError, new_plugin
from qtool.platform import PLATFORMS
from qtool.plugins import plugin_manager
from qtool.testing import check_registration


def test_writes_a_named_skeleton(tmp_path, capsys):
    assert main(["new-plugin", "acme-npu", "--dir", str(tmp_path)]) == 0
    root = tmp_path / "qtool-acme-npu"
    assert str(root) in capsys.readouterr().out
    files = sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())
    assert files == ["README.md", "pyproject.toml", "src/qtool_acme_npu/__init__.py", "src/qtool_acme_npu/platform.py",
                     "src/qtool_acme_npu/plugin.py", "tests/test_qtool_acme_npu_contract.py"]
    pyproject = (root / "pyproject.toml").read_text()
    assert 'name = "qtool-acme-npu"' in pyproject and 'acme-npu = "qtool_acme_npu.plugin"' in pyproject
    assert "class AcmeNpuPlatform(qtool.Platform)" in (root / "src/qtool_acme_npu/platform.py").read_text()


@pytest.mark.parametrize("name", ["Acme", "acme_npu", "-acme", "9acme", "acme--npu"])
def test_bad_names_are_refused(tmp_path, name):
    with pytest.raises(NewPluginError, match=f"plugin name {name!r}"):
        new_plugin(name, tmp_path)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("name, says", [
    ("qtool-foo", "give the platform's name without 'qtool-' (e.g. 'foo')"),
    ("onnxruntime", f"distribution qtool-onnxruntime {metadata.version('qtool-onnxruntime')} is installed, and "
                    "installing the skeleton would replace it"),
    ("onnxruntime-int32bias", "platform 'onnxruntime-int32bias' is installed (distribution qtool-onnxruntime)"),
])
def test_names_of_qtool_or_of_what_is_installed_are_refused(tmp_path, capsys, name, says):
    """The built-in plugins are installed with pip, as a user's are: `new-plugin onnxruntime` then `pip install -e`
    replaced qtool-onnxruntime."""
    assert main(["new-plugin", name, "--dir", str(tmp_path)]) == 1
    assert capsys.readouterr().err == f"qtool: error: plugin name {name!r}: {says}; " + (
        "the distribution is named qtool-NAME\n" if name.startswith("qtool-") else "choose another name\n")
    assert list(tmp_path.iterdir()) == []


def test_a_dir_that_cannot_hold_it_and_an_overlong_name_are_one_line(tmp_path, capsys):
    """NotADirectoryError and 'File name too long' tracebacks."""
    (tmp_path / "afile").write_text("mine")
    assert main(["new-plugin", "good", "--dir", str(tmp_path / "afile")]) == 1
    assert capsys.readouterr().err == (f"qtool: error: new-plugin --dir {tmp_path}/afile/qtool-good/pyproject.toml: "
                                       f"{tmp_path}/afile is a file, not a folder\n")
    assert main(["new-plugin", "a" * 300, "--dir", str(tmp_path)]) == 1
    assert capsys.readouterr().err == ("qtool: error: plugin name aaaaaaaaaaaaaaaaaaaa... (300 characters): at most "
                                       "100 characters\n")
    assert [p.name for p in tmp_path.iterdir()] == ["afile"]


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("setpriv") is None,
                    reason="drops root's override of file modes with setpriv")
def test_a_dir_it_cannot_write_in_is_one_line(tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    os.chown(folder, 65534, 65534)
    folder.chmod(0o555)
    run = subprocess.run(["setpriv", "--bounding-set", "-dac_override,-dac_read_search", sys.executable, "-m", "qtool",
                          "new-plugin", "foo", "--dir", str(folder)], capture_output=True, text=True, timeout=120)
    assert run.returncode == 1 and list(folder.iterdir()) == []
    assert run.stderr == (f"qtool: error: new-plugin --dir {folder}/qtool-foo/pyproject.toml: cannot write in {folder} "
                          "(Permission denied)\n")


def test_an_occupied_folder_is_refused(tmp_path, capsys):
    (tmp_path / "qtool-acme" / "keep.txt").parent.mkdir()
    (tmp_path / "qtool-acme" / "keep.txt").write_text("mine")
    assert main(["new-plugin", "acme", "--dir", str(tmp_path)]) == 1
    assert "qtool-acme exists and is not empty" in capsys.readouterr().err


@contextmanager
def plugins_from(site):
    """Plugins installed in ``site`` visible to this process (as if on its path) until the block ends."""
    sys.path.insert(0, str(site))
    importlib.invalidate_caches()
    plugin_manager(reload=True)
    try:
        yield
    finally:
        sys.path.remove(str(site))
        for name in [n for n, m in sys.modules.items() if str(getattr(m, "__file__", "")).startswith(str(site))]:
            del sys.modules[name]
        importlib.invalidate_caches()
        plugin_manager(reload=True)


def _fork(site):
    """A second distribution (a hand-written dist-info) whose entry point registers the skeleton's class again."""
    (site / "acme_fork.py").write_text(
        "import qtool\nfrom qtool_acme_npu import AcmeNpuPlatform\n\n\n@qtool.hookimpl\n"
        "def qtool_register_platforms(register):\n    register(AcmeNpuPlatform)\n")
    info = site / "acme_fork-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: acme-fork\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[qtool]\nacme-fork = acme_fork\n")


@pytest.mark.slow
def test_skeleton_installs_and_passes_its_tests(tmp_path, capsys):
    """Installed (not editable) into a private folder so the shared environment stays as it is."""
    root = new_plugin("acme-npu", tmp_path)
    site = tmp_path / "site"
    install = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                              "--target", str(site), str(root)], capture_output=True, text=True, timeout=300)
    assert install.returncode == 0, install.stderr

    env = {**os.environ, "PYTHONPATH": str(site)}
    tests = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(root / "tests")],
                           cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert tests.returncode == 0, tests.stdout + tests.stderr
    assert "8 passed" in tests.stdout

    with plugins_from(site):
        assert main(["list-platforms", "--json"]) == 0
        rows = {row["name"]: row for row in json.loads(capsys.readouterr().out)["platforms"]}
        assert rows["acme-npu"]["distribution"] == "qtool-acme-npu"
        assert check_registration("acme-npu") == []
    _fork(site)
    with plugins_from(site):
        assert any("'acme-npu' is registered twice" in p for p in check_registration("acme-npu"))
    assert "acme-npu" not in PLATFORMS.names()
