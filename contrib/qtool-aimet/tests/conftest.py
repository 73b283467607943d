"""Graphs and exported documents for the AIMET tests, built with qtool's public API and kit only."""

import json

import pytest
import qtool
from qtool.testing import quantize_by_hand

# Scheme sets the maths is checked on: (activation, weight, bias mode).
SCHEME_SETS = {
    "int8-sym": (qtool.QuantScheme.integer(8), qtool.QuantScheme.integer(8, per_channel=True, channel_axis=0),
                 "int32"),
    "uint8-asym": (qtool.QuantScheme.integer(8, signed=False, symmetric=False),
                   qtool.QuantScheme.integer(8, per_channel=True, channel_axis=0), "int32"),
    "int16-int4": (qtool.QuantScheme.integer(16, symmetric=False),
                   qtool.QuantScheme.integer(4, per_channel=True, channel_axis=0), "float"),
    "uint8-sym-pow2-per-tensor-weights": (qtool.QuantScheme.integer(8, signed=False, power_of_2=True),
                                          qtool.QuantScheme.integer(8, symmetric=False), "float"),
    "narrow": (qtool.QuantScheme.integer(8, quant_min=-127),
               qtool.QuantScheme.integer(8, per_channel=True, channel_axis=0, quant_min=-127), "int32"),
    "narrow-asym-unsigned-sym-weights": (qtool.QuantScheme.integer(8, signed=False, symmetric=False, quant_max=254),
                                         qtool.QuantScheme.integer(8, signed=False, quant_max=254), "float"),
}


@pytest.fixture(params=sorted(SCHEME_SETS))
def aimet_graph(request, qtool_small_model):
    activation, weight, bias = SCHEME_SETS[request.param]
    return quantize_by_hand(qtool.load(qtool_small_model), activation, weight, bias=bias)


@pytest.fixture
def aimet_export(tmp_path):
    """export(graph, platform) -> (the encodings document, the exported paths)."""
    def export(graph, platform):
        paths = qtool.get_platform(platform).export(graph, tmp_path / "out" / "model", qtool.ExportOptions())
        encodings = next(p for p in paths if p.suffix == ".encodings")
        return json.loads(encodings.read_text()), paths

    return export
