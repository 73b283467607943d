"""Dispatch: decide for every op whether it runs quantized or float, and why; create its configs in INITIAL.

* ops the config quantizes (``quantize_op_types``, ``include`` globs) are proposed
  to the platform (``Platform.annotate``), which quantizes them as proposed, with
  changed configs, or keeps them float with its reason;
* activations of ``config.fusion_activations`` are quantized after a quantized op;
* passive data-movement ops (``config.passive_op_types``) are quantized only
  between quantized tensors, sharing their input's scheme;
* ops of ``config.between_op_types`` (ONNX Runtime's residual Add) are quantized with configs of their own only
  where every data input is written by a quantized op (none a constant) and a quantized op reads the output;
* shape/index computations, excluded ops, ops the executor runs only through
  ONNX Runtime and every other op stay float;
* a tensor the model quantizes itself (a DequantizeLinear output, or read by
  QuantizeLinear only) gets no second quantization; an op whose tensors are all
  quantized by the model or float is ``quantized in the model``.
"""

from __future__ import annotations

import warnings

import numpy as np

from ..coverage import INTEGER_COMPUTE_OPS, MODEL_QUANTIZED
from ..executor.support import float_reason
from ..ir import Graph, Operation, Variable
from ..ops import (
    bias_index,
    is_pole_input,
    is_steering_input,
    out_channels,
    quantized_in_model,
    weight_axis,
    weight_index,
)
from ..platform import KeepFloat, Platform, Proposal
from ..platform_calls import annotated
from ..quant import OpQuantConfig, QuantizationState, QuantScheme, TensorQuantizationConfig
from .base import Pass, PassError, PassResult, PassWarning
from .passive_parameter_quantize import bias_scheme_problem
from .tensor_kinds import TensorKinds, classify

SHAPE_REASON = "shape/index computation"
CONSTANT_REASON = "constant: computed from initializers alone (runtimes fold it)"

# passive ops whose output puts the channel axis elsewhere: a per-channel activation cannot be shared across them
LAYOUT_CHANGING = frozenset({"Flatten", "Reshape", "Transpose", "Squeeze", "Unsqueeze", "DepthToSpace",
                             "SpaceToDepth"})


class Dispatch(Pass):
    """Set ``op.quant`` on every op: ``quantized`` with a reason, and INITIAL configs per tensor."""

    name = "Dispatch"

    def __init__(self, config, platform: Platform | str | None = None) -> None:
        """``platform``: the target (asked to annotate each proposal), or only its name (for the reasons)."""
        self.config = config
        self.platform = platform

    def call(self, graph: Graph) -> PassResult:
        ignored = getattr(self.config, "ignored", ())
        if ignored:
            warnings.warn(PassWarning(
                "[weight_only] is enabled and replaces [activation], [weight], bias.mode and the op type lists of "
                f"[dispatch]: ignored {'; '.join(ignored)} (set [weight_only] keys, op_types for the ops it "
                "quantizes, or [[override]] weight keys per layer, instead)",
                code="config.weight-only-ignored"), stacklevel=2)
        kinds = classify(graph)
        order = graph.topological_order()
        decisions = _Decisions(self.config, kinds, self.platform)
        decisions.decide(order)
        for op in order:
            op.quant = decisions.build(op)
        quantized = sum(1 for op in order if op.quant.quantized)
        return PassResult(graph, True, {"quantized": quantized, "float": len(order) - quantized})

    def ensures(self, graph: Graph) -> None:
        for op in graph.operations.values():
            q = op.quant
            if q is None or not q.reason or len(q.inputs) != len(op.inputs) or len(q.outputs) != len(op.outputs):
                raise PassError(f"op {op.name!r} was not dispatched with aligned configs and a reason")


class _Decisions:
    """The quantized/float decision per op, then its configs."""

    def __init__(self, config, kinds: TensorKinds, platform: Platform | str | None) -> None:
        self.config, self.kinds = config, kinds
        self.target = platform if isinstance(platform, Platform) else None
        self.platform = platform.name if isinstance(platform, Platform) else platform
        self.reasons: dict[str, str] = {}
        self.computing: dict[str, OpQuantConfig] = {}  # op name -> the configs the platform accepted
        self.candidates: dict[str, str] = {}  # op name -> "passive" | "activation"

    # -- decisions ------------------------------------------------------------------
    def decide(self, order: list[Operation]) -> None:
        cfg = self.config
        for op in order:
            quantize, reason = cfg.quantize_decision(op)
            if op.op_type in INTEGER_COMPUTE_OPS:  # a model quantized with integer ops (ORT's QOperator format)
                self.reasons[op.name] = MODEL_QUANTIZED
            elif forced := float_reason(op):
                self.reasons[op.name] = forced
            elif self.kinds.is_shape_op(op):
                self.reasons[op.name] = CONSTANT_REASON if self._constant_op(op) else SHAPE_REASON
            elif quantize:
                self._propose(op, reason)
            elif cfg.is_excluded(op):
                self.reasons[op.name] = reason
            elif op.op_type in cfg.fusion_activations and (guarded := _guarded_pole(op)):
                self.reasons[op.name] = guarded
            elif op.op_type in cfg.fusion_activations:
                self.candidates[op.name] = "activation"
            elif op.op_type in cfg.between_op_types:
                self.candidates[op.name] = "between"
            elif op.op_type in cfg.passive_op_types:
                self.candidates[op.name] = "passive"
            else:
                self.reasons[op.name] = self._not_quantized(op)
        self._prune(order)

    def _propose(self, op: Operation, reason: str) -> None:
        configs = self._configs(op, reason)
        chosen = frozenset(i for i, (var, tqc) in enumerate(zip(op.inputs, configs.inputs, strict=True))
                           if tqc is not None and self.config.set_by_user(op, tqc.role, var.name, "granularity"))
        proposal = Proposal(configs, reason, self.config.requested(op), chosen)
        answer = annotated(self.target, op, proposal) if self.target is not None else proposal
        if isinstance(answer, KeepFloat):
            self.reasons[op.name] = f"kept float by {self.platform}: {answer.reason}"
        else:
            self.computing[op.name] = answer.configs
            self.reasons[op.name] = answer.reason

    def _prune(self, order: list[Operation]) -> None:
        """Drop candidates until each reads quantized producers (a between op no constant) and each passive or
        between op feeds a quantized op."""
        changed = True
        while changed:
            changed = False
            for op in order:
                if op.name in self.candidates and not self._reads_quantized(op):
                    self._reject(op, "its input is not produced by a quantized op")
                    changed = True
                elif self.candidates.get(op.name) == "between" and self._reads_constant(op):
                    self._reject(op, "an input is a constant")
                    changed = True
            for op in reversed(order):
                if self.candidates.get(op.name) in ("passive", "between") and not self._feeds_quantized(op):
                    self._reject(op, "its output is read by no quantized op")
                    changed = True

    def _reject(self, op: Operation, why: str) -> None:
        kind = self.candidates.pop(op.name)
        if kind == "passive":
            self.reasons[op.name] = f"passive op not between quantized tensors ({why})"
        elif kind == "between":
            self.reasons[op.name] = f"{op.op_type} is quantized only between quantized ops ({why})"
        else:
            self.reasons[op.name] = f"{self._not_quantized(op)} ({why})"

    def _reads_constant(self, op: Operation) -> bool:
        return any(self._is_data(op, i) and self.kinds.is_constant(op.inputs[i]) for i in range(len(op.inputs)))

    def _is_quantized(self, op: Operation | None) -> bool:
        return op is not None and (op.name in self.computing or op.name in self.candidates)

    def _reads_quantized(self, op: Operation) -> bool:
        data = [v for i, v in enumerate(op.inputs) if self._is_data(op, i) and not self.kinds.is_constant(v)]
        return bool(data) and all(self._is_quantized(v.producer) for v in data)

    def _feeds_quantized(self, op: Operation) -> bool:
        return any(self._is_quantized(c) for out in op.outputs for c in out.consumers)

    def _not_quantized(self, op: Operation) -> str:
        where = f" on {self.platform}" if self.platform else ""
        return f"not quantized{where} ({self.config.quantize_decision(op)[1]})"

    def _is_data(self, op: Operation, index: int) -> bool:
        """A data operand: present, not shape-like, not an index (float constants count)."""
        var = op.inputs[index]
        return var is not None and not is_steering_input(op, index) and not self.kinds.is_index(var)

    # -- configs ------------------------------------------------------------------------
    def build(self, op: Operation) -> OpQuantConfig:
        n_in, n_out = len(op.inputs), len(op.outputs)
        if op.name not in self.computing and op.name not in self.candidates:
            return OpQuantConfig.float_op(n_in, n_out, self.reasons[op.name])
        if self.candidates.get(op.name) == "passive":
            return self._build_passive(op)
        if self.candidates.get(op.name) == "between":
            self.reasons[op.name] = "between quantized ops (dispatch.between_op_types)"
        elif op.name in self.candidates:
            producer = op.inputs[0].producer
            self.reasons[op.name] = f"activation after quantized {producer.name}"
        accepted = self.computing.get(op.name)
        configs = self._configs(op, self.reasons[op.name]) if accepted is None else \
            OpQuantConfig(accepted.inputs, accepted.outputs, True, self.reasons[op.name])
        if not configs.all_configs():
            if any(self._model_quantized(v) for v in (*op.inputs, *op.outputs)):
                return OpQuantConfig.float_op(n_in, n_out, MODEL_QUANTIZED)
            return OpQuantConfig.float_op(n_in, n_out, self._all_float(op))
        configs.follows = self.candidates.get(op.name)
        return configs

    def _all_float(self, op: Operation) -> str:
        """Why an op the configuration gives no quantized tensor stays float: under weight-only, one without a
        constant weight (an attention product, a scan) has nothing it quantizes."""
        if self.config.weight_only and not self._reads_constant(op):
            return f"{op.op_type}: no constant weight, and weight-only quantizes weights only"
        return f"{op.op_type}: the configuration keeps all its tensors float"

    def _configs(self, op: Operation, reason: str) -> OpQuantConfig:
        outputs = [None if self.kinds.is_static(out) or self._model_quantized(out) else self._tqc(op, "activation", out)
                   for out in op.outputs]
        return OpQuantConfig(self._own_inputs(op), outputs, True, reason)

    def _own_inputs(self, op: Operation) -> list[TensorQuantizationConfig | None]:
        """Parameters in role weight (the config picks their axis), other data in role activation."""
        configs: list[TensorQuantizationConfig | None] = [None] * len(op.inputs)
        bias = bias_index(op)
        for i, var in enumerate(op.inputs):
            if var is None or is_steering_input(op, i) or self.kinds.is_index(var) or i == bias \
                    or self._model_quantized(var):
                continue
            configs[i] = self._tqc(op, "weight" if var.is_parameter else "activation", var)
        weight = weight_index(op)
        if bias is not None and weight is not None and np.shape(op.inputs[bias].value) == (out_channels(op),):
            configs[bias] = self._bias(op, configs[0], configs[weight])  # a Gemm's (M, N) bias stays float
        return configs

    def _constant_op(self, op: Operation) -> bool:
        """Every output a float constant (its inputs initializers, or computed from them alone)."""
        return all(self.kinds.is_constant(out) and not self.kinds.is_index(out) for out in op.outputs)

    def _model_quantized(self, var: Variable | None) -> bool:
        """The model quantizes ``var`` itself, or the output of the one activation it feeds (which would fuse)."""
        if quantized_in_model(var):
            return True
        readers = var.consumers if var is not None else []
        return (len(readers) == 1 and readers[0].op_type in self.config.fusion_activations
                and all(quantized_in_model(out) for out in readers[0].outputs))

    def _bias(self, op: Operation, activation, weight) -> TensorQuantizationConfig | None:
        """An int32 bias at s_in * s_w, where asked and both operands are integer (a float8 product accumulates in
        float: its bias stays float)."""
        if self.config.bias_mode_for(op) != "int32" or activation is None or weight is None \
                or activation.scheme.is_floating or weight.scheme.is_floating:
            return None
        scheme = QuantScheme.integer(32, symmetric=True, per_channel=weight.scheme.is_per_channel,
                                     channel_axis=0 if weight.scheme.is_per_channel else None)
        tqc = TensorQuantizationConfig(scheme, QuantizationState.PASSIVE_INIT, role="bias")
        problem = bias_scheme_problem(activation.scheme, weight.scheme,
                                      weight_axis(op, op.inputs[weight_index(op)].name))
        if problem:
            tqc.keep_float(problem)
        return tqc

    def _build_passive(self, op: Operation) -> OpQuantConfig:
        data = [i for i in range(len(op.inputs)) if self._is_data(op, i)]
        sources = {i: producer_config(op.inputs[i]) for i in data if not self.kinds.is_constant(op.inputs[i])}
        unquantized = [op.inputs[i].name for i, source in sources.items() if source is None]
        if unquantized:
            return OpQuantConfig.float_op(len(op.inputs), len(op.outputs),
                                          f"passive op reading unquantized tensor {unquantized[0]!r}")
        scheme = next(iter(sources.values())).scheme
        if scheme.is_per_channel and op.op_type in LAYOUT_CHANGING:
            return OpQuantConfig.float_op(len(op.inputs), len(op.outputs),
                                          f"per-channel activation cannot pass through {op.op_type}: its output "
                                          "lays the channels out differently")
        inputs: list[TensorQuantizationConfig | None] = [None] * len(op.inputs)
        for i in data:
            inputs[i] = TensorQuantizationConfig(sources[i].scheme if i in sources else scheme)
        outputs = [None if self.kinds.is_static(out) else TensorQuantizationConfig(scheme) for out in op.outputs]
        return OpQuantConfig(inputs, outputs, True, "passive: shares its input's quantization", follows="passive")

    def _tqc(self, op: Operation, role: str, var: Variable) -> TensorQuantizationConfig | None:
        rank = len(var.shape) if var.shape is not None else None
        scheme = self.config.scheme_for(op, role, var.name, rank=rank)
        return None if scheme is None else TensorQuantizationConfig(scheme, role=role)


def _guarded_pole(op: Operation) -> str | None:
    """Why a Clip whose lower bound above 0 keeps 0 from a reader that is infinite there (log(clamp(x, 1e-10)))
    stays float, or None: on its integer grid, which holds 0, its smallest outputs would round to 0."""
    low = _clip_low(op)
    if low is None or low <= 0:
        return None
    for reader in op.outputs[0].consumers:
        if any(var is op.outputs[0] and is_pole_input(reader, i) for i, var in enumerate(reader.inputs)):
            return (f"its lower bound {low:g} keeps 0 from {reader.op_type} {reader.name!r}, infinite there: "
                    "quantized, its smallest outputs would round to 0")
    return None


def _clip_low(op: Operation) -> float | None:
    """A Clip's constant lower bound (input 1, or the ``min`` attribute before opset 11), else None."""
    if op.op_type != "Clip":
        return None
    var = op.inputs[1] if len(op.inputs) > 1 else None
    if var is not None:
        return float(np.asarray(var.value).reshape(())) if var.is_parameter else None
    return float(op.attributes["min"]) if "min" in op.attributes else None


def producer_config(var: Variable | None) -> TensorQuantizationConfig | None:
    """The config at which ``var``'s producer writes it (None: no producer, or written float)."""
    producer = var.producer if var is not None else None
    if producer is None or producer.quant is None:
        return None
    return producer.quant.outputs[producer.outputs.index(var)]
