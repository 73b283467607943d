"""TensorQuantizationConfig: a scheme, a state and parameters, for one tensor at one op."""

from __future__ import annotations

import numpy as np

from .plan import ParamsRule, PlannedConfig
from .policy import QuantizationState as S
from .scheme import QuantScheme

__all__ = ["ParamsRule", "TensorQuantizationConfig"]


class TensorQuantizationConfig(PlannedConfig):
    """How one tensor is quantized where one op reads or writes it.

    Parameters come from one of three places:
    * its own ``scale``/``offset`` (set by calibration or parameter quantization);
    * another config it is *overlapped* with (fusion, alignment): ``dominator``;
    * a *passive* rule computing them from other configs (int32 bias = s_in * s_w).

    Its state changes only through the methods of :class:`qtool.quant.plan.PlannedConfig`.
    """

    def __init__(self, scheme: QuantScheme, state: S = S.INITIAL, role: str = "activation") -> None:
        super().__init__(state)
        self.scheme = scheme
        self.role = role  # "activation", "weight" or "bias"

    # -- parameters ------------------------------------------------------------
    @property
    def scale(self) -> np.ndarray | None:
        return self._params()[0]

    @property
    def offset(self) -> np.ndarray | None:
        return self._params()[1]

    def _params(self) -> tuple[np.ndarray | None, np.ndarray | None]:
        root = self.dominator
        if root._rule is not None:
            return root._rule()
        return root._scale, root._offset

    # -- facts -------------------------------------------------------------------
    @property
    def is_overlapped(self) -> bool:
        return self._dominator is not None

    @property
    def is_passive(self) -> bool:
        return self._rule is not None

    def __repr__(self) -> str:
        return f"TQC({self.role}: {self.scheme.short()}, {self.state.value})"
