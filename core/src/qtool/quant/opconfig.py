"""The quantization decision for one operation: which inputs/outputs, with which configs."""

from __future__ import annotations

from dataclasses import dataclass, field

from .tqc import TensorQuantizationConfig

#: how the reason of an op the sensitivity fallback returned to float begins: a decision measured after dispatch,
#: which a state file restores without the measurement (qtool.state)
FALLBACK_FLOAT = "returned to float by sensitivity fallback"


@dataclass
class OpQuantConfig:
    """Configs aligned with ``op.inputs`` / ``op.outputs`` (None: that tensor is not quantized).

    ``quantized`` False means the op runs in float; ``reason`` says why either way. ``follows``: why an op is
    quantized only for its neighbours' sake, as dispatch decided: ``"activation"`` (after a quantized op),
    ``"passive"`` or ``"between"`` (between quantized ops); None for an op quantized in its own right.
    """

    inputs: list[TensorQuantizationConfig | None] = field(default_factory=list)
    outputs: list[TensorQuantizationConfig | None] = field(default_factory=list)
    quantized: bool = True
    reason: str = ""
    follows: str | None = None

    @classmethod
    def float_op(cls, n_inputs: int, n_outputs: int, reason: str) -> OpQuantConfig:
        return cls([None] * n_inputs, [None] * n_outputs, quantized=False, reason=reason)

    def all_configs(self) -> list[TensorQuantizationConfig]:
        return [c for c in (*self.inputs, *self.outputs) if c is not None]
