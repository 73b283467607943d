"""A tensor read on a wider grid than its producer writes it: the reader's extra bits hold nothing."""

from __future__ import annotations

from .platform import Diagnostic, Severity
from .quant import sites, written_config


def wider_readers(graph) -> list[Diagnostic]:
    """A WARNING per tensor that some readers quantize with more bits than its producer does (an override of the
    reading op to 16-bit activations): they requantize its 8-bit values, and gain no precision."""
    found = []
    for site in sites(graph, settled=False):
        written = written_config(site.tensor, settled=False) if site.kind == "reader" else None
        if written is None or written.scheme.is_floating or site.config.scheme.is_floating:
            continue
        if site.config.scheme.num_of_bits > written.scheme.num_of_bits:
            producer = site.tensor.producer
            readers = ", ".join(dict.fromkeys(op.name for op, _ in site.readers))
            found.append(Diagnostic(
                Severity.WARNING, "quant.requantized-wider",
                f"{readers} read(s) it as {site.config.scheme.short()}, but {producer.name} writes it as "
                f"{written.scheme.short()}: the wider grid holds the same {written.scheme.num_of_bits}-bit values "
                f"(no precision gained); give {producer.name}'s output the wider scheme (an override of that op, "
                f"or of tensor {site.tensor.name!r})", op=producer.name, tensor=site.tensor.name))
    return found
