"""TensorQuantizationConfig: a scheme, a state and parameters, for one tensor at one op."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from .policy import QuantizationState as S
from .scheme import QuantScheme

ParamsRule = Callable[[], tuple[np.ndarray, np.ndarray]]


class TensorQuantizationConfig:
    """How one tensor is quantized where one op reads or writes it.

    Parameters come from one of three places:
    * its own ``scale``/``offset`` (set by calibration or parameter quantization);
    * another config it is *overlapped* with (fusion, alignment): ``dominator``;
    * a *passive* rule computing them from other configs (int32 bias = s_in * s_w).
    """

    def __init__(self, scheme: QuantScheme, state: S = S.INITIAL, role: str = "activation") -> None:
        self.scheme = scheme
        self.role = role  # "activation", "weight" or "bias"
        self.state = state
        self._scale: np.ndarray | None = None
        self._offset: np.ndarray | None = None
        self._dominator: TensorQuantizationConfig | None = None
        self._rule: ParamsRule | None = None
        self.notes: dict[str, object] = {}

    # -- parameters ------------------------------------------------------------
    @property
    def dominator(self) -> TensorQuantizationConfig:
        """The config that owns this config's parameters (itself when it owns them)."""
        tqc = self
        while tqc._dominator is not None:
            tqc = tqc._dominator
        return tqc

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

    def set_params(self, scale, offset, state: S = S.ACTIVATED) -> None:
        """Own parameters from now on (calibration, weight quantization)."""
        self._scale = np.asarray(scale, dtype=np.float32)
        self._offset = np.asarray(offset)
        self._dominator = None
        self._rule = None
        self.state = state

    def overlap(self, dominator: TensorQuantizationConfig) -> None:
        """Share ``dominator``'s parameters (they stay equal if it is recalibrated)."""
        if dominator.dominator is self:
            raise ValueError("overlapping these configs would make a cycle")
        self._dominator = dominator
        self.state = S.OVERLAPPED

    def make_passive(self, rule: ParamsRule) -> None:
        """Derive parameters from other configs each time they are read."""
        self._rule = rule
        self._dominator = None
        self.state = S.PASSIVE

    def keep_float(self) -> None:
        self.state = S.FP32

    # -- facts -------------------------------------------------------------------
    @property
    def is_quantizing(self) -> bool:
        return self.state.is_quantizing and self.dominator.state is not S.FP32

    @property
    def is_overlapped(self) -> bool:
        return self._dominator is not None

    @property
    def is_passive(self) -> bool:
        return self._rule is not None

    def __repr__(self) -> str:
        return f"TQC({self.role}: {self.scheme.short()}, {self.state.value})"
