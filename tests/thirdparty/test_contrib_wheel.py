"""contrib/qtool-aimet works as a third party's wheel would: built, installed (not editable) in a fresh venv.

The fresh virtual environment gets qtool and qtool-aimet as wheels built from
this checkout, installed with ``--no-deps``. Tests run without network and
torch is large, so the heavy dependencies (torch, onnx, onnxruntime, numpy ...)
are not installed again: a .pth file makes them visible from a folder of links
to the current interpreter's site-packages. That folder leaves out every qtool
distribution and editable-install hook of the current environment, so qtool and
its plugins can only come from the new venv.
"""

import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SOURCE_IGNORE = shutil.ignore_patterns("*.egg-info", "__pycache__", "build", "dist", ".pytest_cache")

pytestmark = pytest.mark.slow


def _run(command, **kwargs):
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, **kwargs)
    assert result.returncode == 0, f"{' '.join(map(str, command))}\n{result.stdout}\n{result.stderr}"
    return result.stdout


def _wheels(folder: Path) -> list[Path]:
    """Wheels of qtool and qtool-aimet, built from copies so the checkout gets no build/ folders."""
    sources = []
    for part in ("core", "contrib/qtool-aimet"):
        sources.append(folder / "src" / Path(part).name)
        shutil.copytree(REPO / part, sources[-1], ignore=SOURCE_IGNORE)
    _run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
          "--wheel-dir", str(folder / "wheels"), *map(str, sources)])
    return sorted((folder / "wheels").glob("*.whl"))


def _dependencies_view(folder: Path) -> Path:
    """Links to the current site-packages entries, except qtool's own distributions and editable hooks."""
    outer = Path(sysconfig.get_paths()["purelib"])
    view = folder / "dependencies"
    view.mkdir()
    for entry in outer.iterdir():
        name = entry.name.lower()
        if name.startswith(("qtool", "__editable__")) or name.endswith(".pth"):
            continue
        (view / entry.name).symlink_to(entry)
    return view


@pytest.fixture(scope="module")
def venv(tmp_path_factory):
    folder = tmp_path_factory.mktemp("thirdparty")
    wheels = _wheels(folder)
    assert [w.name.split("-")[0] for w in wheels] == ["qtool", "qtool_aimet"]
    root = folder / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", str(root)])
    python = root / "bin" / "python"
    site = Path(_run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]).strip())
    (site / "qtool_test_dependencies.pth").write_text(f"{_dependencies_view(folder)}\n")
    _run([sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet", "--no-deps", "--no-index",
          *map(str, wheels)])
    return root


def _env():
    return {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "QTOOL_BLOCK_PLUGINS")}


def test_qtool_and_the_plugin_resolve_inside_the_new_venv(venv):
    code = ("import importlib.metadata as m, json, qtool, qtool_aimet; print(json.dumps({"
            "'qtool': qtool.__file__, 'qtool_aimet': qtool_aimet.__file__, "
            "'dist': str(m.distribution('qtool-aimet').locate_file('')), "
            "'core_dist': str(m.distribution('qtool').locate_file('')), "
            "'editable': m.distribution('qtool-aimet').read_text('direct_url.json')}))")
    found = json.loads(_run([str(venv / "bin" / "python"), "-c", code], env=_env(), cwd=venv))
    for key in ("qtool", "qtool_aimet", "dist", "core_dist"):
        assert Path(found[key]).resolve().is_relative_to(venv.resolve()), (key, found[key])
    assert '"editable": true' not in (found["editable"] or "")


def test_list_platforms_shows_aimet_from_its_distribution(venv):
    document = json.loads(_run([str(venv / "bin" / "qtool"), "list-platforms", "--json"], env=_env(), cwd=venv))
    rows = {row["name"]: row for row in document["platforms"]}
    assert rows["aimet"]["distribution"] == "qtool-aimet" and rows["aimet"]["version"] == "0.1.0"
    assert rows["aimet-1.0"]["distribution"] == "qtool-aimet"
    assert not {"tensorrt", "text"} & set(rows)  # the checkout's other plugins are not in this venv


def test_quantize_for_aimet_writes_valid_encodings(venv, tmp_path):
    from qtool import load
    from qtool.testing import calibration_file, small_model

    model = small_model(tmp_path / "model.onnx")
    data = calibration_file(load(model), tmp_path / "calib.npz")
    out = tmp_path / "out" / "model.onnx"
    _run([str(venv / "bin" / "qtool"), "quantize", str(model), "--platform", "aimet", "--calib", str(data),
          "-o", str(out)], env=_env(), cwd=tmp_path)
    document = json.loads(out.with_suffix(".encodings").read_text())
    assert document["version"] == "0.6.1"
    (encoding,) = document["activation_encodings"]["input"]
    assert encoding["bitwidth"] == 8 and encoding["is_symmetric"] == "False"
    assert encoding["min"] <= 0 <= encoding["max"] and encoding["scale"] > 0
    assert len(document["param_encodings"]["conv1.weight"]) == 4  # per output channel
