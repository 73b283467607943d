"""The HTML report and the analysis API: :func:`analyse`, :func:`explain`, :class:`AnalysisReport`.

The page is one self-contained file (Vega-Lite charts from the ``report`` extra,
everything inline); ``AnalysisReport.to_json()`` is the same document as data.
The names are imported on first use: the measurements (:mod:`.collect`) run the torch executor, which
``qtool analyse`` imports only once its inputs are checked.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..lazy import lazy_names

_EXPORTS = {
    ".api": ["analyse", "explain", "report_of"],
    ".bundle": ["ReportExtraMissing", "require_bundle"],
    ".collect": ["REPORT_SCHEMA_VERSION", "float_vs_quantized"],
    ".results": ["AnalysisReport", "Explanation"],
}
__all__, __getattr__, __dir__ = lazy_names(__name__, _EXPORTS)

if TYPE_CHECKING:
    from .api import analyse, explain, report_of
    from .bundle import ReportExtraMissing, require_bundle
    from .collect import REPORT_SCHEMA_VERSION, float_vs_quantized
    from .results import AnalysisReport, Explanation
