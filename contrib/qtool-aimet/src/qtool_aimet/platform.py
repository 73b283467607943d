"""The ``aimet`` (encodings 0.6.1) and ``aimet-1.0`` (encodings 1.0.0) platforms."""

from __future__ import annotations

import json
from pathlib import Path

import qtool
from qtool import Capabilities, Diagnostic, ExportOptions

from . import rules
from .encodings import encodings_document


class AimetPlatform(qtool.Platform):
    """The float ONNX model and an AIMET encodings file beside it (``<stem>.onnx``, ``<stem>.encodings``)."""

    name = "aimet"
    description = "AIMET/QNN quantization encodings (format 0.6.1) beside the float ONNX model"
    output_format = "onnx+aimet-encodings-0.6.1"
    encodings_version = "0.6.1"
    capabilities = Capabilities(bits=rules.BITS, policies=("SYMMETRICAL", "ASYMMETRICAL", "PER_TENSOR",
                                                           "PER_CHANNEL", "LINEAR", "POWER_OF_2"),
                                formats=("int4", "int8", "int16", "int32"))

    def default_config(self) -> dict:
        return {
            "activation": {"bits": 8, "signed": False, "symmetric": False, "granularity": "per_tensor"},
            "weight": {"bits": 8, "signed": True, "symmetric": True, "granularity": "per_channel"},
            "bias": {"mode": "int32"},
        }

    def validate(self, graph, options: ExportOptions | None = None) -> list[Diagnostic]:
        return rules.check(graph)

    def export(self, graph, output: Path, options: ExportOptions) -> list[Path]:
        model, encodings, _ = self.output_files(output, options)
        document = encodings_document(graph, self.encodings_version)
        qtool.write_atomic(encodings, json.dumps(document, indent=2) + "\n")
        return [*qtool.save_files(graph, model), encodings]

    def output_files(self, output: Path, options: ExportOptions) -> list[Path]:
        """The float model (``.onnx`` added where absent), its encodings, its external data."""
        output = Path(output)
        model = output if output.suffix == ".onnx" else output.with_name(output.name + ".onnx")
        return [model, model.with_suffix(".encodings"), qtool.data_path(model)]


class Aimet1Platform(AimetPlatform):
    """The same, in the 1.0.0 encodings shape (lists of named encodings)."""

    name = "aimet-1.0"
    description = "AIMET/QNN quantization encodings (format 1.0.0) beside the float ONNX model"
    output_format = "onnx+aimet-encodings-1.0.0"
    encodings_version = "1.0.0"
