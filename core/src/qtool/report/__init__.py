"""The HTML report and the analysis API: :func:`analyse`, :func:`explain`, :class:`AnalysisReport`.

The page is one self-contained file (Vega-Lite charts from the ``report`` extra,
everything inline); ``AnalysisReport.to_json()`` is the same document as data.
"""

from .api import analyse, explain, report_of
from .bundle import ReportExtraMissing, require_bundle
from .collect import REPORT_SCHEMA_VERSION, float_vs_quantized
from .results import AnalysisReport, Explanation

__all__ = ["AnalysisReport", "Explanation", "REPORT_SCHEMA_VERSION", "ReportExtraMissing", "analyse", "explain",
           "float_vs_quantized", "report_of", "require_bundle"]
