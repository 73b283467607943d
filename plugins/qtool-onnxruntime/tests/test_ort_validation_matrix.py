"""The truth test: validate() against what ONNX Runtime actually does with the exported model.

For each configuration the QDQ model is written without validation (qdq_model)
and handed to a real ORT session (CPU, extended optimizations). The rules hold
when validate() reports an ERROR exactly when ORT refuses to load or run the
model, and a PERFORMANCE note exactly when ORT's optimized graph keeps a float
Conv/Gemm/MatMul (or a weight-only MatMulNBits) instead of an integer kernel.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
import pytest
from ort_testkit import (
    FLOAT_COMPUTE,
    INT8_ASYM,
    INT8_SYM,
    UINT8,
    calibrated,
    fork_proto,
    optimized_ops,
    run,
    samples_for,
    single_op_proto,
)
from qtool import ExportOptions, Severity
from qtool.ir import from_model_proto
from qtool.quant import QuantizationPolicy as P
from qtool.quant import QuantScheme
from qtool.testing import quantize_by_hand, retarget
from qtool_onnxruntime.errors import OnnxRuntimeExportError
from qtool_onnxruntime.export import qdq_model
from qtool_onnxruntime.rules import validate
from qtool_onnxruntime.session import ORT_ERRORS

WEIGHT_AXIS = {"Conv": 0, "Gemm": 0, "MatMul": 1}
BLOCK = {"Conv": (1, 4), "Gemm": (1, 16), "MatMul": (0, 16)}  # (axis, block size): blocks along the input axis


def scheme(dtype: str, symmetric: bool) -> QuantScheme:
    if dtype == "fp8":
        return QuantScheme.floating(4, 3)
    bits = int(dtype.removeprefix("u").removeprefix("int"))
    return QuantScheme.integer(bits, signed=not dtype.startswith("u"), symmetric=symmetric)


def weight_scheme(dtype: str, symmetric: bool, granularity: str, op: str) -> QuantScheme:
    base = scheme(dtype, symmetric)
    if granularity == "per-tensor":
        return base
    if granularity == "per-channel":
        return base.with_changes(policy=(base.policy & ~P.PER_TENSOR) | P.PER_CHANNEL, channel_axis=WEIGHT_AXIS[op])
    axis, size = BLOCK[op]
    return base.with_changes(policy=(base.policy & ~P.PER_TENSOR) | P.PER_BLOCK, channel_axis=axis, block_size=size)


@dataclass(frozen=True)
class Case:
    op: str
    dtype: str
    granularity: str
    symmetric: bool
    opset: int | None
    bias: str

    @property
    def id(self) -> str:
        sym = "sym" if self.symmetric else "asym"
        return f"{self.op}-{self.dtype}-{self.granularity}-{sym}-opset{self.opset}-bias_{self.bias}"


def matrix() -> list[Case]:
    cases = []
    dtypes = ("int8", "uint8", "int16", "uint16", "int4", "uint4", "fp8")
    grans = ("per-tensor", "per-channel", "per-block")
    for n, (op, dtype, gran, opset) in enumerate(itertools.product(("Conv", "Gemm", "MatMul"), dtypes, grans,
                                                                    (13, 19, 21))):
        symmetric = dtype == "fp8" or n % 2 == 0
        int32_ok = op != "MatMul" and dtype != "fp8" and gran != "per-block"
        bias = "int32" if int32_ok and (n // 2) % 2 == 0 else ("none" if op == "MatMul" else "float")
        cases.append(Case(op, dtype, gran, symmetric, opset, bias))
    return cases


@dataclass
class Verdict:
    refused: str | None  # ORT's error, None when it ran
    float_ops: list[str]


def ort_verdict(model, feeds: dict, tmp_path) -> Verdict:
    try:
        ops = optimized_ops(model, tmp_path)
        run(model, feeds)
    except ORT_ERRORS as exc:
        return Verdict(str(exc).splitlines()[0][:300], [])
    return Verdict(None, [op for op in ops if op in FLOAT_COMPUTE])


def check(graph, options: ExportOptions, tmp_path) -> None:
    """validate() and ORT agree on this graph: ERROR <=> refused, PERFORMANCE <=> float kernels."""
    diagnostics = validate(graph, options)
    errors = [d for d in diagnostics if d.severity is Severity.ERROR]
    notes = [d for d in diagnostics if d.severity is Severity.PERFORMANCE]
    said = "\n".join(map(str, diagnostics)) or "nothing"
    try:
        model = qdq_model(graph, options)
    except OnnxRuntimeExportError as exc:  # no Q/DQ type can even hold a config
        assert errors, f"the model cannot be written ({exc}) but validate() said:\n{said}"
        return
    verdict = ort_verdict(model, samples_for(graph, 1)[0], tmp_path)
    if verdict.refused:
        assert errors, f"ORT refused the model ({verdict.refused}) but validate() said:\n{said}"
        return
    assert not errors, f"ORT ran the model but validate() reported errors:\n{said}"
    assert bool(notes) == bool(verdict.float_ops), \
        f"ORT's optimized graph has float kernels {verdict.float_ops or 'none'}; validate() said:\n{said}"


@pytest.mark.parametrize("case", matrix(), ids=lambda c: c.id)
def test_matrix(case: Case, tmp_path):
    graph = from_model_proto(single_op_proto(case.op, bias=case.bias != "none"))
    activation = scheme(case.dtype, case.symmetric)
    quantize_by_hand(graph, activation, weight_scheme(case.dtype, case.symmetric, case.granularity, case.op),
                     bias="int32" if case.bias == "int32" else "float", op_types={case.op})
    check(graph, ExportOptions(opset=case.opset), tmp_path)


@pytest.mark.parametrize("op", ["Conv", "Gemm", "MatMul"])
@pytest.mark.parametrize("activation", ["Relu", "Clip"])
@pytest.mark.parametrize("grid", ["uint8", "int8-asym", "int8-sym"])
@pytest.mark.parametrize("remove", [False, True])
def test_fused_activation(op, activation, grid, remove, tmp_path):
    """Relu/Clip after the op: ORT fuses when the activation is dropped (by qtool or by ORT) and not otherwise."""
    schemes = {"uint8": UINT8, "int8-asym": INT8_ASYM, "int8-sym": INT8_SYM}
    graph = calibrated(single_op_proto(op, activation=activation), schemes[grid], fuse=True,
                       op_types={op}, weight=weight_scheme("int8", True, "per-channel", op))
    check(graph, ExportOptions(remove_activations=remove), tmp_path)


@pytest.mark.parametrize("activation", [UINT8, INT8_ASYM], ids=["uint8", "int8"])
def test_tensor_with_two_readers(activation, tmp_path):
    """An int8 pair read by two Convs stays float in ORT on x86; uint8 fuses."""
    graph = calibrated(fork_proto(), activation, op_types={"Conv"})
    check(graph, ExportOptions(), tmp_path)


def _hand(op, activation, weight, **kw):
    graph = from_model_proto(single_op_proto(op, **kw))
    return quantize_by_hand(graph, activation, weight, op_types={op})


def _off_axis(op, activation, axis):
    """int8 per-channel weights on ``axis`` instead of the op's output axis."""
    graph = _hand(op, activation, weight_scheme("int8", True, "per-channel", "Conv"))
    retarget(graph, "w", weight_scheme("int8", True, "per-channel", "Conv").with_changes(channel_axis=axis))
    return graph


EXTRA = {
    "conv-weight-axis-1": lambda: _off_axis("Conv", UINT8, 1),
    "conv-weight-axis-1-int16": lambda: _off_axis("Conv", scheme("int16", True), 1),
    "gemm-weight-axis-1": lambda: _off_axis("Gemm", UINT8, 1),
    "matmul-weight-axis-0": lambda: _off_axis("MatMul", UINT8, 0),
    # ORT fuses a Conv without bias into QLinearConv whatever the weight's granularity (the matrix's have biases)
    "conv-no-bias-block-weight": lambda: _hand("Conv", UINT8, weight_scheme("int8", True, "per-block", "Conv"),
                                               bias=False),
    "conv-no-bias-block-weight-axis-0": lambda: _hand("Conv", UINT8, weight_scheme("int8", True, "per-block", "Conv")
                                                      .with_changes(channel_axis=0), bias=False),
    "convtranspose-uint8": lambda: _hand("ConvTranspose", UINT8, weight_scheme("int8", True, "per-channel", "Conv")),
    "convtranspose-weight-axis-0": lambda: _off_axis("ConvTranspose", UINT8, 0),
    "conv-weight-only": lambda: _hand("Conv", None, weight_scheme("int8", True, "per-channel", "Conv")),
    "gemm-weight-only": lambda: _hand("Gemm", None, weight_scheme("int8", True, "per-channel", "Gemm")),
    "matmul-weight-only": lambda: _hand("MatMul", None, weight_scheme("int8", True, "per-channel", "MatMul")),
    "matmul-int4-block-weight-only": lambda: _hand("MatMul", None, weight_scheme("int4", True, "per-block",
                                                                                  "MatMul")),
    "matmul-float-weight": lambda: _hand("MatMul", UINT8, None),
    "gemm-float-weight": lambda: _hand("Gemm", UINT8, None),
    "conv-float-weight": lambda: _hand("Conv", UINT8, None),
    "conv-float-weight-int16": lambda: _hand("Conv", scheme("int16", False), None),
    "int2-opset-25": lambda: _hand("Gemm", scheme("uint2", False), scheme("int2", True)),
    "fp8-e5m2": lambda: _hand("Conv", QuantScheme.floating(5, 2), QuantScheme.floating(5, 2)),
    "fp4-e2m1": lambda: _hand("Gemm", UINT8, QuantScheme.floating(2, 1)),
    "int3-weight": lambda: _hand("Gemm", UINT8, QuantScheme.integer(3)),
}
EXTRA_OPSETS = {"int2-opset-25": [21, None], "conv-weight-axis-1": [13, 28]}
# blocked DequantizeLinear -> MatMul, which ORT turns into a float-input MatMulNBits (the default writes
# MatMulNBits itself: test_ort_weight_only.py)
EXTRA_OPTIONS = {"matmul-int4-block-weight-only": {"weight_only_format": "qdq"}}


@pytest.mark.parametrize("name,opset", [(n, o) for n in EXTRA for o in EXTRA_OPSETS.get(n, [None])])
def test_extra(name, opset, tmp_path):
    check(EXTRA[name](), ExportOptions(opset=opset, extra=EXTRA_OPTIONS.get(name, {})), tmp_path)


@pytest.mark.parametrize("op", ["Conv", "Gemm", "MatMul"])
@pytest.mark.parametrize("activation", ["int2", "uint2", "int4", "uint4", "int16", "uint8"])
@pytest.mark.parametrize("weight", ["int8", "int2", "int4", "uint8"])
def test_type_mixes(op, activation, weight, tmp_path):
    """ORT's type checks let 2-bit types (and 4-bit Conv inputs) into 8-bit kernels, which then refuse them."""
    graph = _hand(op, scheme(activation, False), weight_scheme(weight, True, "per-channel", op))
    check(graph, ExportOptions(), tmp_path)


@pytest.mark.parametrize("op", ["Gemm", "MatMul", "Conv"])
def test_output_type_differs_from_input(op, tmp_path):
    graph = _hand(op, UINT8, weight_scheme("int8", True, "per-channel", op))
    retarget(graph, "y", scheme("int16", True))
    check(graph, ExportOptions(), tmp_path)


def test_matrix_covers_refusals_and_float_kernels(tmp_path):
    """The matrix meets both kinds of truth: some configurations refused, some run in float, some fused."""
    seen = {"refused": 0, "float": 0, "integer": 0}
    for case in matrix()[::9]:
        graph = from_model_proto(single_op_proto(case.op, bias=case.bias != "none"))
        quantize_by_hand(graph, scheme(case.dtype, case.symmetric),
                         weight_scheme(case.dtype, case.symmetric, case.granularity, case.op), op_types={case.op})
        verdict = ort_verdict(qdq_model(graph, ExportOptions(opset=case.opset)), samples_for(graph, 1)[0], tmp_path)
        seen["refused" if verdict.refused else "float" if verdict.float_ops else "integer"] += 1
    assert all(seen.values()), seen
    assert np.sum(list(seen.values())) == len(matrix()[::9])
