"""Typed results of :func:`qtool.analyse` and :func:`qtool.explain`: JSON, an HTML file, inline in a notebook."""

from __future__ import annotations

import html
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from ..files import write_atomic
from .html import render


@dataclass(frozen=True)
class _Document:
    document: dict
    charts: ClassVar[bool] = True

    def to_dict(self) -> dict:
        return self.document

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.document, indent=indent, allow_nan=False)

    def to_html(self, path: str | os.PathLike | None = None) -> str:
        """The self-contained page; written (atomically) to ``path`` when given."""
        page = self._page()
        if path is not None:
            write_atomic(Path(path), page)
        return page

    def _page(self) -> str:
        return render(self.document, charts=self.charts)

    def _repr_html_(self) -> str:
        """The page in an iframe, so that its style and scripts stay apart from the notebook's."""
        return (f'<iframe srcdoc="{html.escape(self.to_html(), quote=True)}" '
                'style="width:100%;height:720px;border:1px solid #ccc"></iframe>')


@dataclass(frozen=True)
class AnalysisReport(_Document):
    """Where a quantized model's error comes from (schema: qtool.report.collect, version 1).

    Attributes mirror the document: ``outputs`` (float vs quantized per output), ``graphwise``
    and ``layerwise`` (per quantized op, topological order; ``layerwise_unmeasured`` says why the latter is empty
    where the graph has no floating-point output), ``activations``, ``weights``, ``dispatch``.
    """

    @property
    def outputs(self) -> list[dict]:
        return self.document["outputs"]

    @property
    def graphwise(self) -> list[dict]:
        return self.document["graphwise"]

    @property
    def layerwise(self) -> list[dict]:
        return self.document["layerwise"]

    @property
    def layerwise_unmeasured(self) -> str | None:
        """Why ``layerwise`` is empty where it could not be measured (no floating-point graph output), else None."""
        return self.document["layerwise_unmeasured"]

    @property
    def activations(self) -> list[dict]:
        return self.document["activations"]

    @property
    def weights(self) -> list[dict]:
        return self.document["weights"]

    @property
    def dispatch(self) -> list[dict]:
        return self.document["dispatch"]


@dataclass(frozen=True)
class Explanation(_Document):
    """How each op would be quantized on a platform (``qtool explain``'s schema, version 1); no charts."""

    charts: ClassVar[bool] = False

    @property
    def ops(self) -> list[dict]:
        return self.document["ops"]

    def _page(self) -> str:
        return render({**self.document, "dispatch": self.ops}, charts=False)
