"""The default pass order (docs/design.md), built in this one place for the pipeline and ``qtool explain``.

1. GraphSimplify        drop Identity/Dropout, fold BatchNormalization
   (accuracy: CrossLayerEqualization, SmoothQuant, AWQ, ChannelSplit when enabled)
2. Dispatch             quantized or float per op, with a reason; configs in INITIAL
3. QuantizeFusion       activation fusion; passive ops share their input's config
4. QuantizeSimplify     readers overlapped with producers where schemes agree
5. ParameterQuantize    weight scales from their values
6. RuntimeCalibration   activation scales through their observers (or a restored state)
7. QuantAlignment       Concat / Add / Max ... inputs share compatible scales
8. PassiveParameterQuantize  int32 bias = s_in * s_w; Clip/Pad constants on the grid
9. accuracy passes when enabled: OutlierOutputs, SensitivityFallback, HQQ, GPTQ, AdaRound, BiasCorrection
10. Baking              weights stored on their grid

Steps 1-4 are the *planning* passes: they need no data and decide what is
quantized how. The calibration step (6) can be replaced, e.g. by a pass that
restores a saved state.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping

from ..config.quantconfig import PLATFORM_SOURCE
from ..ir import Graph
from .accuracy import UNREAD, AccuracyError, accuracy_passes, needs_data
from .accuracy.channel_split import ChannelSplit
from .accuracy.float_peaks import FloatPeaks
from .baking import Baking
from .base import Pass
from .dispatch import Dispatch
from .graph_simplify import GraphSimplify
from .parameter_quantize import ParameterQuantize
from .passive_parameter_quantize import PassiveParameterQuantize
from .quant_alignment import QuantAlignment
from .quantize_fusion import QuantizeFusion
from .quantize_simplify import QuantizeSimplify
from .registry import insert_plugin_passes
from .runtime_calibration import RuntimeCalibration


def planning_passes(config, platform=None) -> list[Pass]:
    """Passes 1-4: simplify the graph and decide every op's quantization (no data needed).

    ``platform``: the target Platform (Dispatch asks it to annotate), its name, or None.
    """
    return [GraphSimplify(), Dispatch(config, platform), QuantizeFusion(config), QuantizeSimplify()]


def default_passes(config, data=None, *, platform=None, device: str = "cpu",
                   progress: bool = False, calibration: Pass | None = None, runtime=None,
                   keep=None, advice: Mapping[str, object] | None = None,
                   precheck: Callable[[Graph], None] | None = None) -> list[Pass]:
    """The whole default order; ``calibration`` replaces RuntimeCalibration over ``data`` when given; ``runtime``
    (:class:`qtool.platform_runtime.PlatformRuntime`) lets accuracy passes measure on the platform's runtime;
    ``keep`` (:class:`qtool.calibration.KeptOutputs`) goes to RuntimeCalibration; ``advice``: what a
    :class:`~.base.StartOver` brought, by pass name, for the passes that start over; ``precheck(graph)`` runs on the
    planned graph as RuntimeCalibration starts, before any data is read (the platform's validate on the plan).

    The accuracy passes the config's ``[accuracy]`` table enables run right after
    GraphSimplify (on the float graph) and right before Baking; plugin passes
    named in its ``[[pass]]`` list go where their ``after`` says. ChannelSplit decides from calibration's float
    run where nothing but the planning passes lies between them (:mod:`.accuracy.channel_split`).
    """
    float_peaks = FloatPeaks(data, device) if data is not None else None  # calibration's run serves later readers
    before, after = _accuracy_passes(config, data, device, progress=progress, runtime=runtime,
                                     float_peaks=float_peaks, kept_outputs=keep)
    split = next((p for p in before if isinstance(p, ChannelSplit)), None)
    calibrate = calibration or RuntimeCalibration(data, device=device, progress=progress, options=config.calibration,
                                                  readers=(split, float_peaks, keep), precheck=precheck)
    simplify, *planning = planning_passes(config, platform)
    built = [simplify, *before, *planning, ParameterQuantize(), calibrate]
    passes = insert_plugin_passes([*built, QuantAlignment(config), PassiveParameterQuantize(), *after, Baking()],
                                  config.passes, data=data, device=device, progress=progress)
    if split is not None:
        by_executor = (config.calibration or {}).get("engine") == "torch"  # its run feeds no tap
        split.calibration_follows = (calibration is None and not by_executor and split is before[-1]
                                     and passes[:len(built)] == built)
        if split.name in (advice or {}):
            split.start_over_with(advice[split.name])
    return passes


def check_accuracy(config) -> None:
    """Check the options of ``config``'s ``[accuracy]`` table as a run builds its passes, without data: the error a
    run would raise (:class:`AccuracyError`, led by the file that set the pass), before any data is read;
    ``qtool explain`` and :func:`qtool.pipeline.plan` check them so too. Passes that need data are built on a
    stand-in (:data:`.accuracy.UNREAD`) their constructors only keep: whether there is data is the run's business."""
    _accuracy_passes(config, UNREAD)


def try_metric_budget(config, graph: Graph, device: str = "cpu") -> None:
    """A metric budget (``accuracy.fallback.metric``) called once on the float ``graph`` before any data is read
    (:func:`.accuracy.fallback.try_metric`): a metric that raises or returns no finite number is an
    :class:`AccuracyError` led by what set it, before calibration, not after it."""
    options = config.accuracy.get("fallback")
    metric = options.get("metric") if isinstance(options, Mapping) else None
    if metric is None:
        return
    from .accuracy.fallback import try_metric

    try:
        try_metric(metric, graph, device)
    except AccuracyError as exc:
        raise AccuracyError(_sourced(str(exc), config.origins)) from exc


def _accuracy_passes(config, data, device: str = "cpu", **run) -> tuple[list[Pass], list[Pass]]:
    """:func:`.accuracy.accuracy_passes` of the config's ``[accuracy]`` table; an option error names the file."""
    try:
        return accuracy_passes(_accuracy_options(config, data), device, data=data, **run)
    except AccuracyError as exc:
        raise AccuracyError(_sourced(str(exc), config.origins)) from exc


def _sourced(message: str, origins) -> str:
    """An ``accuracy.<pass>...`` error led by the file that set that pass, as other configuration errors are (a
    keyword or CLI flag, ``accuracy=``, names itself)."""
    name = re.match(r"accuracy\.(\w+)", message)
    origin = origins.get(f"accuracy.{name[1]}") if name else None
    return f"{origin}: {message}" if origin and origin != "accuracy=" else message


def _accuracy_options(config, data) -> dict:
    """The ``[accuracy]`` table; without data (a restored state) the passes the platform's defaults turn on that
    need data are left out (those the user turned on still need it)."""
    options = {name: value for name, value in config.accuracy.items()  # needs_data last: it imports the pass
               if data is not None or value in (None, False)
               or config.origins.get(f"accuracy.{name}") != PLATFORM_SOURCE or not needs_data(name)}
    if config.weight_only and options.get("awq") not in (None, False):  # AWQ searches on the weight-only grid
        grid = {key: config.weight_only[key] for key in ("bits", "symmetric", "block_size")}
        options["awq"] = {**grid, **(options["awq"] if isinstance(options["awq"], Mapping) else {})}
    return options
