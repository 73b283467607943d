"""QuantAlignment: inputs of Concat, Add/Sub/Sum, Max/Min get compatible scales.

``config.alignment_for(op_type)`` gives the mode of the op's group:

* ``"output"``: each input whose scheme equals the output's shares the
  output's parameters (the producer writes directly on the output grid);
* ``"max"``: inputs of one scheme share the range covering all of them
  (Concat's output too);
* ``"none"``: leave them be.

Inputs of another scheme than the output (mixed precision) keep their own
parameters and are requantized; per-channel configs are never aligned.
"""

from __future__ import annotations

import numpy as np

from ..ir import Graph, Operation
from ..quant import TensorQuantizationConfig, compute_scale_offset
from ..quant.tensors import representable_range
from .base import Pass, PassResult


class QuantAlignment(Pass):
    name = "QuantAlignment"

    def __init__(self, config) -> None:
        self.config = config

    def call(self, graph: Graph) -> PassResult:
        aligned = []
        for op in graph.topological_order():
            mode = self.config.alignment_for(op.op_type) or "none"
            if mode == "none" or op.quant is None or not op.quant.quantized:
                continue
            inputs = [t for t in op.quant.inputs if _alignable(t)]
            output = op.quant.outputs[0] if _alignable(op.quant.outputs[0]) else None
            changed = _to_output(inputs, output) if mode == "output" else _to_widest(op, inputs, output)
            if changed:
                aligned.append(f"{op.name} ({mode})")
        return PassResult(graph, bool(aligned), {"aligned": aligned})


def _alignable(tqc: TensorQuantizationConfig | None) -> bool:
    return tqc is not None and tqc.is_settled and not tqc.scheme.is_per_channel


def _share(tqc: TensorQuantizationConfig, anchor: TensorQuantizationConfig) -> bool:
    """Make ``tqc``'s owner of parameters share ``anchor``'s; False when they already do."""
    root, target = tqc.dominator, anchor.dominator
    if root is target:
        return False
    root.overlap(target)
    return True


def _to_output(inputs: list[TensorQuantizationConfig], output: TensorQuantizationConfig | None) -> bool:
    if output is None:
        return False
    return any([_share(t, output) for t in inputs if t.scheme == output.scheme])


def _to_widest(op: Operation, inputs: list[TensorQuantizationConfig], output) -> bool:
    changed = False
    for scheme in dict.fromkeys(t.scheme for t in inputs):
        roots = list({id(t.dominator): t.dominator for t in inputs if t.scheme == scheme}.values())
        if op.op_type == "Concat" and output is not None and output.scheme == scheme:
            roots.append(output.dominator)
        roots = list({id(r): r for r in roots}.values())
        if len(roots) < 2:
            continue
        ranges = [representable_range(r) for r in roots]
        lo, hi = min(np.min(r[0]) for r in ranges), max(np.max(r[1]) for r in ranges)
        anchor = next((r for r in roots if r.role == "activation"), roots[0])
        anchor.set_params(*compute_scale_offset(scheme, lo, hi))
        for root in roots:
            if root is not anchor:
                root.overlap(anchor)
        changed = True
    return changed
