"""Running error statistics between a reference tensor and a quantized one."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import ml_dtypes
import numpy as np

from ..quant.maths import namespace


def json_number(value: float) -> float | str:
    """``value`` as strict JSON holds it: a finite number as is, an infinite or undefined one as the text that
    Python's ``float`` and JavaScript's ``Number`` both read back (``"Infinity"``, ``"-Infinity"``, ``"NaN"``).
    Written as null, an SQNR of -inf (an output NaN in one model only) read as exact."""
    value = float(value)
    return value if math.isfinite(value) else str(value).replace("inf", "Infinity").replace("nan", "NaN")


def jsonable(value: Any) -> Any:
    """``value`` (pass details, a report) as strict JSON holds it: mappings and sequences through, non-finite floats
    as :func:`json_number` writes them, numpy scalars plain, anything else named."""
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float):
        return json_number(value)
    if value is None or isinstance(value, bool | int | str):
        return value
    return getattr(value, "__name__", None) or str(value)


def snr_text(snr_db: float | str, digits: int = 2) -> str:
    """An SQNR as tables print it: ``exact`` (no error), ``-inf`` (the error is infinite: elements NaN or infinite
    in one model only, or a signal 0 everywhere), ``undefined`` (NaN), or the number of dB."""
    value = float(snr_db)
    if math.isfinite(value):
        return f"{value:.{digits}f}"
    return "exact" if value > 0 else "-inf" if value < 0 else "undefined"


@dataclass
class ErrorAccumulator:
    """Accumulates sums over batches so that memory does not grow with the sample count."""

    signal: float = 0.0  # sum(ref^2)
    noise: float = 0.0  # sum((test - ref)^2)
    dot: float = 0.0  # sum(ref * test)
    test_power: float = 0.0  # sum(test^2)
    count: int = 0
    nonfinite: int = 0  # elements NaN or infinite in one tensor and not the same in the other (left out of the sums)

    def update(self, reference, test) -> None:
        """Add a pair of tensors: numpy arrays, or torch tensors (summed where they lie, on their device). Elements
        NaN or infinite in either are left out of the sums (one NaN, a Sqrt of a negative, made every sum NaN and
        the SNR read as exact); those where the two differ are counted in ``nonfinite``."""
        ref, out = _flat64(reference), _flat64(test)
        sums = _sums(ref, out)
        if not all(map(math.isfinite, sums)):  # a NaN or an infinity somewhere: only then look for them
            ref, out = _finite_pairs(self, ref, out)
            sums = _sums(ref, out)
        self.signal += sums[0]
        self.noise += sums[1]
        self.dot += sums[2]
        self.test_power += sums[3]
        self.count += ref.shape[0]

    @property
    def snr_db(self) -> float:
        """Signal-to-noise ratio in dB (inf when exact, -inf where one tensor alone is NaN or infinite somewhere:
        there the error is infinite)."""
        return -math.inf if self.nonfinite else self.finite_snr_db

    @property
    def finite_snr_db(self) -> float:
        """The SNR over the elements finite in both tensors (inf when exact)."""
        if self.noise == 0.0:
            return math.inf
        if self.signal == 0.0:
            return -math.inf
        return 10.0 * math.log10(self.signal / self.noise)

    @property
    def cosine(self) -> float:
        """Cosine similarity, clipped to [-1, 1] (rounding can put it a hair outside)."""
        denominator = math.sqrt(self.signal * self.test_power)
        cosine = self.dot / denominator if denominator else (1.0 if self.noise == 0.0 else 0.0)
        return min(1.0, max(-1.0, cosine))

    @property
    def mse(self) -> float:
        return self.noise / self.count if self.count else 0.0


@dataclass
class OutputsError:
    """The error at each floating-point graph output, by name; its ``snr_db``, ``cosine`` and ``mse`` are the worst
    output's (lowest SNR): a budget holds where every output meets it, and a small output (a detector's scores
    beside its boxes) counts as much as a large one. Pooled into one vector, the large one alone decided."""

    outputs: dict[str, ErrorAccumulator] = field(default_factory=dict)
    reshaped: dict[str, int] = field(default_factory=dict)  # runs whose quantized output has another shape

    def update(self, reference: Mapping, test: Mapping) -> None:
        """Add one run's outputs (by name; numpy arrays or torch tensors); integer and boolean ones are left out,
        and so is an output whose quantized shape is not the float one's in this run (quantization changed how many
        boxes a NonMaxSuppression keeps: the sums failed to broadcast), counted in ``reshaped``."""
        for name, ref in reference.items():
            if is_floating(ref):
                stats = self.outputs.setdefault(name, ErrorAccumulator())
                if tuple(ref.shape) == tuple(test[name].shape):
                    stats.update(ref, test[name])
                else:
                    self.reshaped[name] = self.reshaped.get(name, 0) + 1

    @property
    def compared(self) -> bool:
        """Whether any floating-point output had an element to compare (a detector that kept no box on any sample
        has none: its SNR would read as exact)."""
        return any(s.count or s.nonfinite for s in self.outputs.values())

    @property
    def worst(self) -> ErrorAccumulator:
        compared = [s for s in self.outputs.values() if s.count or s.nonfinite]
        return min(compared, key=lambda s: s.snr_db, default=ErrorAccumulator())

    @property
    def snr_db(self) -> float:
        """The worst output's SNR; inf where there is no floating-point output, NaN where there are some but no
        element was compared (every one empty, or of another shape in the quantized run)."""
        if not self.outputs:
            return math.inf
        return self.worst.snr_db if self.compared else math.nan

    @property
    def cosine(self) -> float:
        return self.worst.cosine

    @property
    def mse(self) -> float:
        return self.worst.mse


_NARROW_FLOATS = frozenset(np.dtype(t) for t in (ml_dtypes.bfloat16, ml_dtypes.float8_e4m3fn, ml_dtypes.float8_e4m3fnuz,
                                                 ml_dtypes.float8_e5m2, ml_dtypes.float8_e5m2fnuz))


def is_floating(tensor) -> bool:
    """Whether a numpy array or a torch tensor holds floating-point values (ml_dtypes' bfloat16 and float 8
    included: numpy counts them as no floating type)."""
    if namespace(tensor) is not np:
        return tensor.is_floating_point()
    dtype = np.asarray(tensor).dtype
    return np.issubdtype(dtype, np.floating) or dtype in _NARROW_FLOATS



def _sums(ref, out) -> tuple[float, float, float, float]:
    """sum(ref^2), sum((out - ref)^2), sum(ref * out), sum(out^2); NaN or infinite where an element is, without
    numpy's warning (the caller then leaves those elements out)."""
    with np.errstate(invalid="ignore", over="ignore"):
        noise = out - ref
        return (float((ref * ref).sum()), float((noise * noise).sum()), float((ref * out).sum()),
                float((out * out).sum()))


def output_array(value) -> np.ndarray:
    """A model output as one numpy array, to compare two models' outputs: a tensor as it is, a sequence's values
    (a SplitToSequence's tensors, of several shapes) flattened end to end, a map's values in the order of its keys
    (ai.onnx.ml's ZipMap writes a sequence of maps, one per sample: class -> probability)."""
    if isinstance(value, dict):
        return np.asarray([value[key] for key in sorted(value)])
    if isinstance(value, list):
        return np.concatenate([output_array(v).reshape(-1) for v in value]) if value else np.zeros(0, np.float32)
    return np.asarray(value)


def nonfinite_split(a, b):
    """For two tensors of one shape (numpy or torch): the mask of elements finite in both, that of elements NaN or
    infinite alike in both (NaN in both, the same infinity), and how many are NaN or infinite in one alone."""
    xp = namespace(a)
    finite = xp.isfinite(a) & xp.isfinite(b)
    alike = ((a == b) | (xp.isnan(a) & xp.isnan(b))) & ~finite
    return finite, alike, int((~finite & ~alike).sum())


def _finite_pairs(acc: ErrorAccumulator, ref, out):
    """``ref`` and ``out`` where both are finite; the elements left where they differ counted in ``acc.nonfinite``,
    and those where they agree (NaN in both, the same infinity) in ``acc.count``."""
    finite, alike, differs = nonfinite_split(ref, out)
    acc.nonfinite += differs
    acc.count += int(alike.sum())
    return ref[finite], out[finite]


def _flat64(tensor):
    """``tensor`` flattened in float64: a torch tensor stays one (on its device), anything else is a numpy array."""
    if namespace(tensor) is not np:
        return tensor.detach().double().flatten()
    return np.asarray(tensor, dtype=np.float64).ravel()
