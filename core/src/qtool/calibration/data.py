"""CalibrationData: samples (or whole model calls) for a graph's inputs, streamed in batches."""

from __future__ import annotations

import hashlib
import itertools
import os
import warnings
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import numpy as np

from ..ir import Graph
from .errors import CalibrationError, CalibrationWarning
from .onnx_test_data import TestDataSource, check_layout, test_data_sets
from .provenance import joined, rows, sourced
from .sources import LAYOUTS, FileSource, PythonSource, fixed_batch, rows_of

HELD_OUT_SAMPLES = 8  # model calls after ``max_samples`` a pass keeps as it reaches them: float_vs_quantized's


class CalibrationData:
    """Batches of ``{input name: array}`` for the model's calls.

    In the ``samples`` layout the first axis holds samples, joined and cut into
    batches of ``batch_size`` (the model's own batch size where its inputs fix
    one or bakes a batch of 1 into a Reshape, so such a model is fed one sample at a time). In the ``feeds``
    layout each file or item is one call, passed on as it is. Files are read one
    at a time while iterating; ``max_samples`` keeps the first samples (feeds);
    ``skip_nonfinite`` drops samples holding NaN (counted in ``skipped``); an infinity is a value like another
    where otherwise they are an error naming the file, input and sample.
    ``count`` is the number of samples (feeds), None for a stream not yet read
    to its end; :meth:`fingerprint` hashes the samples (not how they are batched).
    """

    def __init__(self, source: FileSource | PythonSource, batch_size: int, origin: str, *,
                 layout: str = "samples", max_samples: int | None = None, skip_nonfinite: bool = False,
                 graph: Graph | None = None) -> None:
        if batch_size < 1:
            raise CalibrationError(f"batch_size must be at least 1, got {batch_size}")
        if max_samples is not None and (isinstance(max_samples, bool) or not isinstance(max_samples, int)
                                        or max_samples < 1):
            raise CalibrationError(f"max_samples (--calib-samples) must be a whole number of at least 1, got "
                                   f"{max_samples!r}")
        if source.length == 0:
            raise CalibrationError(f"{origin}: {source.empty}")
        self._source, self.origin, self.layout = source, origin, layout
        self.fixed_batch = fixed_batch(source.inputs, graph) if layout == "samples" else None
        self.batch_size = self.fixed_batch or batch_size
        self.max_samples, self.skip_nonfinite, self.skipped = max_samples, skip_nonfinite, 0
        self._told = False  # the source's warnings (arrays that feed no input) given
        known = source.length if not skip_nonfinite else None
        self.count = known if known is None or max_samples is None else min(known, max_samples)
        self.inputs = [v.name for v in source.inputs]
        self._fingerprint: str | None = None
        self._held: list[dict[str, np.ndarray]] | None = None  # samples held out after max_samples (_hold_out)
        self._held_all = False
        if isinstance(source, FileSource):
            self._check_values()
        if self.fixed_batch and self.count is not None and self.count % self.fixed_batch:
            usable = self.count - self.count % self.fixed_batch
            hint = f" (--calib-samples {usable} / max_samples={usable} takes the first {usable})" if usable else ""
            raise CalibrationError(f"{origin}: {self.count} samples do not fill batches of {self.fixed_batch}, "
                                   f"the batch size the model's inputs fix{hint}")

    def _check_values(self) -> None:
        """Files are read once before any work for NaN, the first a CalibrationError naming the file, input and
        sample (found after most of calibration: 24 files, NaN in the last, after 5.8 s; this pass took 0.3 s on
        their 73 MB, what reading them for calibration takes); skipping such samples, some must be left. Up to
        ``max_samples``: those after are held out, passed over where they hold NaN."""
        taken = skipped = 0
        with warnings.catch_warnings():  # the source's warnings come once the run reads it, where it reports them
            warnings.simplefilter("ignore", CalibrationWarning)
            for _, arrays, dropped in self._counted():
                skipped += dropped
                taken += 0 if arrays is None else self.samples_in(arrays)
        self._check_some_left(taken, skipped)

    def _check_some_left(self, taken: int, skipped: int) -> None:
        if not taken and skipped:
            raise CalibrationError(f"{self.origin}: every calibration sample ({skipped}) holds NaN and was skipped "
                                   "(skip_nonfinite=True / --calib-skip-nonfinite): nothing is left to calibrate on")

    def __len__(self) -> int:
        if self.count is None:
            raise TypeError("the number of samples of a stream is known once it has been read to its end")
        return self.count

    def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
        chunks = self._chunks()
        left_out = self._left_out if self.skip_nonfinite else None  # samples skipped may leave a batch short
        yield from chunks if self.layout == "feeds" else _rebatch(chunks, self.batch_size, self.fixed_batch, left_out)

    def samples_in(self, batch: dict[str, np.ndarray]) -> int:
        """Samples in one of this data's batches (1 for a feed)."""
        return 1 if self.layout == "feeds" else len(next(iter(batch.values())))

    @property
    def call_size(self) -> int:
        """Samples in one model call: 1 (a feed, a sample), or the batch size the model fixes."""
        return 1 if self.layout == "feeds" else self.fixed_batch or 1

    def samples(self, n: int) -> list[dict[str, np.ndarray]]:
        """The first ``n`` samples, each a dict of arrays with a first axis of 1 (feeds as they are)."""
        return self._split(self._chunks(), n)

    def held_out(self, n: int) -> list[dict[str, np.ndarray]]:
        """Up to ``n`` samples that calibration never sees, split as :meth:`samples` splits them: those after
        the first ``max_samples``. None without ``max_samples`` (calibration reads all the data) nor when the
        data holds no more; samples holding NaN are passed over, never refused. Up to ``HELD_OUT_SAMPLES`` (model
        calls) come from those a pass kept as it reached ``max_samples``: the data is not read again up to there (a
        DataLoader's first 1000 items decoded twice for max_samples=1000)."""
        if self.max_samples is None:
            return []
        if self._held is not None and (self._held_all or n * self.call_size <= sum(map(self.samples_in, self._held))):
            return self._split(iter(self._held), n)
        return self._split(self._after(self.max_samples), n)

    def _split(self, chunks: Iterator[dict[str, np.ndarray]], n: int) -> list[dict[str, np.ndarray]]:
        """Samples of ``chunks``, one model call each: a feed, a sample, or a batch of the size the model fixes (a
        shorter remainder the model cannot take is left out: the samples held out after ``max_samples`` may not
        fill one)."""
        found: list[dict[str, np.ndarray]] = []
        if n < 1:
            return found
        for batch in chunks:  # read no further than the batch that completes them (a stream's next item is the user's)
            step = self.call_size
            for i in range(0, self.samples_in(batch) - step + 1, step):
                found.append(batch if self.layout == "feeds" else rows(batch, i, i + step, copy=True))
                if len(found) >= n:
                    return found
        return found

    def take(self, n: int) -> list[dict[str, np.ndarray]]:
        """The first ``n`` samples (feeds) in batches."""
        batches, taken = [], 0
        for batch in self:
            take = min(self.samples_in(batch), n - taken)
            batches.append(batch if self.layout == "feeds" else rows(batch, 0, take))
            taken += take
            if taken >= n:
                break
        return batches

    def fingerprint(self) -> str:
        """sha256 over every sample's input names, dtypes, shapes and bytes (hex); one more pass over the data, the
        first time only (a run that saves no state never hashes: 43 MB of pages took 0.07 s a pass)."""
        if self._fingerprint is None:
            hasher = _Fingerprint(self.inputs, per_sample=self.layout == "samples")
            for batch in self:
                hasher.update(batch)
            self._fingerprint = hasher.hexdigest()
        return self._fingerprint

    def _chunks(self) -> Iterator[dict[str, np.ndarray]]:
        """The source's chunks, non-finite samples dropped or refused, cut at ``max_samples``."""
        taken = skipped = 0
        if not self._told and isinstance(self._source, FileSource):  # once, as the first pass reads the data
            self._told = True
            self._source.warn_ignored()
        for _, arrays, dropped in self._counted():
            skipped += dropped
            if arrays is not None and self.samples_in(arrays):
                taken += self.samples_in(arrays)
                yield arrays
        self._check_some_left(taken, skipped)
        self.count = taken
        self._report_skipped(skipped)

    def _counted(self) -> Iterator[tuple[str, dict[str, np.ndarray] | None, int]]:
        """``(where, arrays, dropped)`` of the source's samples up to the first ``max_samples`` finite ones: a Sourced
        batch without the samples holding NaN (None where none is left; refused where not skipping them), and how
        many were dropped. A piece that holds the last of them is cut there: those after it, held out, are passed
        over where they hold NaN (they were refused where they shared a piece with calibration's). The first pass
        to reach ``max_samples`` keeps the samples held out after them (:meth:`_hold_out`)."""
        taken, pieces = 0, self._pieces()
        for where, arrays, first, total in pieces:
            while arrays is not None:
                size, need = self.samples_in(arrays), None if self.max_samples is None else self.max_samples - taken
                arrays, rest = (arrays, None) if need is None or need >= size else \
                    (rows(arrays, 0, need), rows(arrays, need, size))
                kept, dropped = self._without_nan(where, arrays, first)
                if kept is not None:
                    taken += self.samples_in(kept)
                    kept = self._sourced(where, kept, first, total, dropped)
                yield where, kept, dropped
                first, arrays = first + self.samples_in(arrays), rest
                if need is not None and taken >= self.max_samples:
                    if self._held is None:
                        self._hold_out(itertools.chain([] if rest is None else [(where, rest, first, total)],
                                                       pieces))
                    return

    def _hold_out(self, pieces: Iterator[tuple[str, dict[str, np.ndarray], int, int]]) -> None:
        """Keep (copies of) up to ``HELD_OUT_SAMPLES`` model calls of the finite samples of ``pieces``, the rest of
        a pass that reached ``max_samples``, for :meth:`held_out`; ``_held_all``: the data ends within them."""
        held, count, wanted = [], 0, HELD_OUT_SAMPLES * self.call_size
        for where, arrays, first, total in pieces:
            kept, dropped = self._without_nan(where, arrays, first, skip=True)
            if kept is None:
                continue
            take = min(self.samples_in(kept), wanted - count)
            kept = self._sourced(where, kept, first, total, dropped)
            held.append(kept if self.layout == "feeds" else rows(kept, 0, take, copy=True))
            count += take
            if count >= wanted:
                break
        self._held, self._held_all = held, count < wanted

    def _after(self, start: int) -> Iterator[dict[str, np.ndarray]]:
        """The source's finite samples after the first ``start`` that :meth:`_chunks` yields (which refused or
        dropped the non-finite ones among those)."""
        seen = 0
        for where, arrays, first, total in self._pieces():
            arrays, dropped = self._without_nan(where, arrays, first, skip=True)
            if arrays is None:
                continue
            size = self.samples_in(arrays)
            arrays = self._sourced(where, arrays, first, total, dropped)
            if seen + size > start:
                skip = max(start - seen, 0)
                yield rows(arrays, skip, size) if skip else arrays
            seen += size

    def _pieces(self) -> Iterator[tuple[str, dict[str, np.ndarray], int, int]]:
        """The source's chunks as ``(where, arrays, first, total)``: in the samples layout a large chunk (a mapped
        .npy of GBs) comes in runs of whole batches of about ``JOIN_BYTES``, its samples ``first ..`` of ``total``,
        so that a pass reads no more of it than it uses (``max_samples`` 100 of a 3 GB .npy: 3.7 GB peak, 7.6 s) and
        checking for NaN holds a run's mask, not the file's (750 MB)."""
        for where, arrays in self._source.chunks():
            total = self.samples_in(arrays)
            sample = sum(a[:1].nbytes for a in arrays.values()) if self.layout == "samples" else 0
            step = max(1, JOIN_BYTES // sample // self.batch_size) * self.batch_size if sample else total
            if step >= total:
                yield where, arrays, 0, total
                continue
            for first in range(0, total, step):
                yield where, {name: rows_of(a, first, step) for name, a in arrays.items()}, first, total

    def _sourced(self, where: str, arrays: dict[str, np.ndarray], first: int, total: int,
                 dropped: int) -> dict[str, np.ndarray]:
        """The arrays of samples ``first ..`` of the item ``where`` (which holds ``total``) as a
        :class:`.provenance.Sourced` batch; their positions in it are not known where samples holding NaN were
        ``dropped`` from them."""
        return sourced(arrays, where, self.samples_in(arrays), first=first, total=total if not dropped else 0)

    def _without_nan(self, where: str, arrays: dict[str, np.ndarray], first: int = 0, *,
                skip: bool | None = None) -> tuple[dict[str, np.ndarray] | None, int]:
        """The arrays without the samples that hold NaN (when skipping them: ``skip``, by default
        ``skip_nonfinite``), and how many went. An infinity is a value an input may hold (an additive attention
        mask's -inf): the observers that read it leave it out and say how many they did. ``first``: the item's
        sample that the arrays' first row is, for the error's sample number."""
        bad = None
        for name, array in arrays.items():
            if not np.issubdtype(array.dtype, np.inexact) or not np.isnan(array).any():
                continue
            rows = np.isnan(array).reshape(1 if self.layout == "feeds" else len(array), -1).any(axis=1)
            if not (self.skip_nonfinite if skip is None else skip):
                sample = "" if self.layout == "feeds" else f" sample {first + int(np.flatnonzero(rows)[0])}"
                raise CalibrationError(f"{where}: input {name!r}{sample} holds NaN (calibration arrays must hold "
                                       "no NaN; skip_nonfinite=True / --calib-skip-nonfinite drops such samples)")
            bad = rows if bad is None else bad | rows
        if bad is None:
            return arrays, 0
        if self.layout == "feeds":
            return None, 1
        keep = ~bad
        return ({name: a[keep] for name, a in arrays.items()} if keep.any() else None), int(bad.sum())

    def _left_out(self, count: int) -> None:
        warnings.warn(f"{self.origin}: the last {count} sample(s) fill no batch of {self.fixed_batch} once samples "
                      "holding NaN were skipped: left out", CalibrationWarning, stacklevel=2)

    def _report_skipped(self, skipped: int) -> None:
        if skipped and not self.skipped:
            warnings.warn(f"{self.origin}: skipped {skipped} calibration sample(s) holding NaN",
                          CalibrationWarning, stacklevel=2)
        self.skipped = max(self.skipped, skipped)

    def __repr__(self) -> str:
        count = "?" if self.count is None else self.count
        return f"CalibrationData({self.origin}, {count} samples, layout={self.layout}, batch_size={self.batch_size})"


def feeds_digest(feeds: Mapping[str, np.ndarray]) -> str:
    """sha256 of one model call's feeds (names, dtypes, shapes and bytes), hashed as :meth:`fingerprint` hashes."""
    hasher = _Fingerprint(sorted(feeds), per_sample=False)
    hasher.update(feeds)
    return hasher.hexdigest()


class _Fingerprint:
    """One sha256 stream per input, sample by sample, so batching does not change the result."""

    def __init__(self, names: list[str], per_sample: bool = True) -> None:
        self._streams = {name: hashlib.sha256(name.encode()) for name in names}
        self._per_sample = per_sample

    def update(self, batch: Mapping[str, np.ndarray]) -> None:
        for name, array in batch.items():
            stream = self._streams[name]
            header = f"{array.dtype.str}{array.shape[1:] if self._per_sample else array.shape}".encode()
            for sample in np.ascontiguousarray(array) if self._per_sample else [np.ascontiguousarray(array)]:
                stream.update(header)
                stream.update(sample.tobytes())

    def hexdigest(self) -> str:
        total = hashlib.sha256()
        for stream in self._streams.values():
            total.update(stream.digest())
        return total.hexdigest()


JOIN_BYTES = 16 << 20  # a batch joined from several chunks stops growing once it holds this many bytes: calibration
# runs samples in runs of 16 MiB of tensors anyway, and a joined batch is a copy (32 pages of 480x480 given one by
# one: 88 MB)


def _rebatch(chunks: Iterator[dict[str, np.ndarray]], batch_size: int, fixed: int | None = None,
             left_out: Callable[[int], None] | None = None) -> Iterator[dict[str, np.ndarray]]:
    """Cut and join chunks into batches of ``batch_size`` samples (the last may be smaller, unless the
    model ``fixed`` its batch size: then ``left_out(count)`` is told of a last short batch, which is dropped, or,
    without it, that is an error). A batch is cut early where the sample shape changes (dynamic sizes), and,
    where the model fixes no batch size, before it joins a chunk to parts that hold ``JOIN_BYTES`` already.
    """
    held: list[dict[str, np.ndarray]] = []
    count = held_bytes = 0

    def flush() -> dict[str, np.ndarray]:
        if fixed and count != fixed:
            raise CalibrationError(f"a batch of {count} sample(s) is left where the model's inputs fix a batch "
                                   f"of {fixed}; give a multiple of {fixed} samples of each shape")
        return joined(held)

    for arrays in chunks:
        total = len(next(iter(arrays.values())))
        reshaped = held and any(a.shape[1:] != held[0][k].shape[1:] for k, a in arrays.items())
        if reshaped or (held and not fixed and held_bytes >= JOIN_BYTES):
            yield flush()
            held, count, held_bytes = [], 0, 0
        start = 0
        while start < total:
            take = min(batch_size - count, total - start)
            held.append(rows(arrays, start, start + take))
            count, start = count + take, start + take
            held_bytes += sum(a.nbytes for a in held[-1].values())
            if count == batch_size:
                yield flush()
                held, count, held_bytes = [], 0, 0
    if held and fixed and count != fixed and left_out is not None:
        left_out(count)
    elif held:
        yield flush()


def load_calibration_data(source, graph: Graph, batch_size: int = 32, *, layout: str | None = None,
                          max_samples: int | None = None, transform: Callable | None = None,
                          skip_nonfinite: bool = False) -> CalibrationData:
    """Calibration data for ``graph`` from an .npz or .npy file, a directory of them, ONNX's test data (a folder of
    ``test_data_set_*`` folders of ``input_*.pb`` TensorProtos, or one such folder), a dict of arrays, an
    array (single-input models), an iterable of dicts/arrays (a list, a generator, a torch DataLoader with
    ``transform``) or an ONNX Runtime ``CalibrationDataReader``.

    ``layout`` is ``"samples"`` (arrays hold samples along the first axis, or are one sample without it) or
    ``"feeds"`` (each file or item is one model call with the model's own shapes); a ``CalibrationDataReader``, or
    a model with a scalar (rank 0) input, gives feeds unless told otherwise; ONNX's test data is feeds (each
    test_data_set one call), the samples layout refused. ``transform(item)`` maps each item to the model inputs first.
    Shapes and dtypes are checked against the graph inputs before anything runs (streams: their first item).
    """
    if isinstance(source, CalibrationData):
        return _reused(source, layout=layout, max_samples=max_samples, transform=transform,
                       skip_nonfinite=skip_nonfinite)
    inputs = list(graph.inputs)
    if not inputs:
        raise CalibrationError("the model has no inputs to calibrate with")
    path = Path(source) if isinstance(source, (str, os.PathLike)) else None
    sets = None if path is None else test_data_sets(path)
    if layout is None:  # a reader or ONNX test data gives feeds; a scalar input has no axis to batch samples over
        scalar = any(v.shape is not None and len(v.shape) == 0 for v in inputs)
        layout = "feeds" if sets or scalar or callable(getattr(source, "get_next", None)) else "samples"
    if layout not in LAYOUTS:
        raise CalibrationError(f"calib_layout (--calib-layout): {layout!r} is not one of {', '.join(LAYOUTS)}")
    options = {"layout": layout, "max_samples": max_samples, "skip_nonfinite": skip_nonfinite, "graph": graph}
    if path is not None:
        if transform is not None:
            raise CalibrationError(f"{path}: transform= applies to Python data, not to files")
        if sets:
            check_layout(path, layout)
        files = TestDataSource(sets, inputs) if sets else FileSource(path, inputs, layout)
        return CalibrationData(files, batch_size, str(path), **options)
    return CalibrationData(PythonSource(source, inputs, layout, transform), batch_size, "calibration data",
                           **options)


def _reused(data: CalibrationData, **keywords) -> CalibrationData:
    """``data`` (an earlier run's ``result.calibration``) as it was loaded: asking for another layout, sample
    limit, transform or NaN handling is refused."""
    asked = {name: value for name, value in keywords.items() if value not in (None, False)}
    if asked:
        listed = ", ".join(f"{name}={value!r}" for name, value in asked.items())
        raise CalibrationError(f"{data.origin}: already loaded calibration data (a result's .calibration) keeps the "
                               f"layout, max_samples, transform and skip_nonfinite it was loaded with; got {listed}: "
                               "pass the data itself to load it again with them")
    return data


def check_reused(data: CalibrationData, graph: Graph) -> None:
    """Refuse already loaded ``data`` (an earlier run's ``result.calibration``) for a model whose inputs it does not
    feed, before any work (ONNX Runtime said so only once calibration ran)."""
    fed = {v.name for v in graph.inputs}
    if fed != set(data.inputs):
        differs = sorted(fed ^ set(data.inputs))[0]
        raise CalibrationError(f"{data.origin}: already loaded for a model with inputs {', '.join(data.inputs)}; this "
                               f"model's are {', '.join(sorted(fed)) or 'none'} (input {differs!r} differs)")
