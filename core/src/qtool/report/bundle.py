"""The Vega-Lite bundle (vega, vega-lite, vega-embed) inlined in each report, from the ``report`` extra."""

from __future__ import annotations

from functools import lru_cache

from ..errors import QtoolError

EXTRA_HINT = "pip install 'qtool[report]'"


class ReportExtraMissing(QtoolError):
    """The HTML report's charts need the optional ``report`` extra."""


def require_bundle() -> None:
    """Fail with one line naming the extra when the plotting bundle is not installed (call before long work)."""
    try:
        import vl_convert  # noqa: F401
    except ImportError:
        raise ReportExtraMissing(f"the HTML report needs the 'report' extra (vl-convert-python, which ships the "
                                 f"Vega-Lite bundle): {EXTRA_HINT}") from None


@lru_cache(maxsize=1)
def vega_bundle() -> str:
    """vega-embed with vega and vega-lite as one script defining ``vegaEmbed`` (about 0.9 MB)."""
    require_bundle()
    import vl_convert

    return vl_convert.javascript_bundle()
