"""The calibration forms docs/getting-started.md shows from Python run as written, on models built here."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import torch
from qtool.testing import small_model
from qtool.testing.feed_models import recurrent_step_model

GUIDE = (Path(__file__).resolve().parents[2] / "docs" / "getting-started.md").read_text()


def python_blocks(section: str) -> list[str]:
    text = GUIDE[GUIDE.index(section):]
    return re.findall(r"```python\n(.*?)```", text, re.DOTALL)


def test_the_reader_generator_and_dataloader_forms_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    recurrent_step_model("speech.onnx", features=40, hidden=64)
    small_model("model.onnx")  # its input fixes a batch of 1: the loader's batches of 32 are fed one by one
    rng = np.random.default_rng(0)
    utterances = [rng.standard_normal((int(t), 40)).astype(np.float32) for t in rng.integers(5, 20, 8)]
    images = torch.from_numpy(rng.standard_normal((40, 3, 8, 8)).astype(np.float32))
    namespace = {"np": np, "utterances": utterances, "h0": np.zeros((1, 1, 64), np.float32),
                 "c0": np.zeros((1, 1, 64), np.float32),
                 "val_dataset": torch.utils.data.TensorDataset(images, torch.zeros(40, dtype=torch.long))}
    blocks = python_blocks("## 4. From Python")
    exec(blocks[0].replace('config="my.toml", ', "").replace('"calib.npz"', "np.ones((4, 3, 8, 8), np.float32)"),
         namespace)
    exec(blocks[1], namespace)
    assert Path("out/speech.onnx").is_file() and Path("out/model.onnx").is_file()
