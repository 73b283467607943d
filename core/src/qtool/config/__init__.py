"""The configuration: schema, presets, file loading, merging, validation and the resolved QuantConfig."""

from .check import check_against_graph
from .errors import ConfigError
from .loader import load_config_file
from .overrides import Override
from .presets import PRESET_DOCS, PRESETS
from .quantconfig import QuantConfig
from .resolve import resolve_config
from .schema import FLOAT_FORMATS

__all__ = ["FLOAT_FORMATS", "PRESETS", "PRESET_DOCS", "ConfigError", "Override", "QuantConfig",
           "check_against_graph", "load_config_file", "resolve_config"]
