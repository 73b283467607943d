"""The ``text`` platform: a table of every quantized tensor, for people and for diffing."""

from __future__ import annotations

from pathlib import Path

import qtool
from qtool import Capabilities, Diagnostic, ExportOptions

from .write import write_table


class TextPlatform(qtool.Platform):
    """Writes one line per quantized tensor; any scheme qtool simulates can be written, so validate finds nothing."""

    name = "text"
    description = "Human-readable table of every quantized tensor (readable back with qtool_text.read_table)"
    output_format = "text"
    capabilities = Capabilities(bits=(*range(1, 17), 32), policies=tuple(f.name for f in qtool.QuantizationPolicy),
                                formats=("int", "float"))

    def default_config(self) -> dict:
        return {}

    def validate(self, graph, options: ExportOptions | None = None) -> list[Diagnostic]:
        return []

    def export(self, graph, output: Path, options: ExportOptions) -> list[Path]:
        return [write_table(graph, *self.output_files(output, options))]

    def output_files(self, output: Path, options: ExportOptions) -> list[Path]:
        return [Path(output).with_suffix(".txt")]
