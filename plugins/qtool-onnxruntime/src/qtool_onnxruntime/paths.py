"""The files the export writes for an output path, known without loading the export (a run checks them first)."""

from __future__ import annotations

from pathlib import Path

from qtool import data_path


def output_files(output: Path) -> list[Path]:
    """The model (``.onnx`` added where the name has no suffix) and its external data."""
    output = Path(output)
    path = output if output.suffix else output.with_suffix(".onnx")
    return [path, data_path(path)]
