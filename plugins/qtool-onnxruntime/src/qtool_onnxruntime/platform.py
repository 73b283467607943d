"""The two ONNX Runtime platforms: one class, parameterized by how Conv/Gemm/MatMul biases are written."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from qtool import Capabilities, ExportOptionError, ExportOptions, KeepFloat, Platform, Proposal
from qtool.ops import COMPUTE_OP_TYPES
from qtool.quant import OpQuantConfig, TensorQuantizationConfig
from qtool.quant import QuantizationPolicy as P

from .activations import ACTIVATIONS
from .storage import FLOAT_TYPES, HIGHEST_OPSET, INTEGER_TYPES, LOWEST_OPSET

# Quantized by default; data-movement ops between them follow (passive_op_types). annotate() keeps those float
# that ORT would run only through float kernels unless the user's configuration names them.
QUANTIZED_OPS = sorted(COMPUTE_OP_TYPES)
FLOAT_KERNEL_ONLY = {
    "ConvTranspose": "ONNX Runtime has no integer ConvTranspose kernel on CPU: quantized, it would run as "
                     "DequantizeLinear -> float ConvTranspose: quantization error without an integer kernel's speed "
                     "(to quantize it anyway, list it in dispatch.quantize_op_types of your own configuration: the "
                     "platform's default list names it, but only yours asks for it)",
}


class OnnxRuntimePlatform(Platform):
    """QDQ ONNX for ONNX Runtime with float biases (ORT quantizes them to s_in * s_w itself).

    The methods import their modules (onnxruntime, the exporter) when called, so that registering the platform
    (every ``qtool`` command, ``qtool --help`` included) does not wait for them.
    """

    name = "onnxruntime"
    description = "QDQ ONNX model for ONNX Runtime; Conv/Gemm biases stay float"
    output_format = "onnx-qdq"
    capabilities = Capabilities(
        bits=(2, 4, 8, 16),
        policies=("SYMMETRICAL", "ASYMMETRICAL", "PER_TENSOR", "PER_CHANNEL", "PER_BLOCK", "LINEAR", "FLOATING",
                  "POWER_OF_2"),
        opsets=(LOWEST_OPSET, HIGHEST_OPSET),
        formats=tuple(t.name for t in (*INTEGER_TYPES, *FLOAT_TYPES)),
    )
    export_options = {"external_data": "true: write the initializers of 1 KiB or more to <model>.onnx.data (smaller "
                                       "ones stay in the model, and a model of none writes no data file; false: "
                                       "only over 2 GB, the default)",
                      "weight_only_format": "weight-only MatMul/Gemm/Gather layers as \"matmulnbits\" (MatMulNBits and "
                                            "GatherBlockQuantized, the default) or \"qdq\" (opset-21 blocked "
                                            "DequantizeLinear before the float op)",
                      "accuracy_level": "MatMulNBits accuracy_level: 0 (default) computes in float (exactly qtool's "
                                        "simulation; faster for prefills), 4 with int8 inputs on CPU (faster for "
                                        "one-token decode steps)"}
    bias_mode: ClassVar[str] = "float"

    @classmethod
    def check_export_options(cls, extra) -> None:
        """Unknown keys, and an external_data that is not a boolean, fail before any work."""
        super().check_export_options(extra)
        if not isinstance(extra.get("external_data", False), bool):
            raise ExportOptionError(f"export option 'external_data': expected true or false, "
                                    f"got {extra['external_data']!r}")
        from .nbits import check_options

        check_options(extra)

    def default_config(self) -> dict[str, Any]:
        return {
            # uint8: ORT's x86 integer kernels read uint8 activations; int8 pairs are converted only
            # where a pair has a single reader (see kernels._shared_int8).
            "activation": {"format": "int", "bits": 8, "signed": False, "symmetric": False,
                           "granularity": "per_tensor"},
            "weight": {"format": "int", "bits": 8, "signed": True, "symmetric": True, "granularity": "per_channel"},
            "bias": {"mode": self.bias_mode},
            # A residual Add between quantized Convs, on scales of its own (QLinearAdd takes one per input): ORT
            # then runs the whole block in integers (ResNet-50 20.9 -> 16.7 ms, ORT's own export 17.8; held out
            # 39.9 -> 39.4 dB, ORT's 39.6). Every Add quantized cost the zoo's transformers 6-37 dB: their Adds
            # read a bias or a float residual stream, and between_op_types leaves those float.
            "dispatch": {"quantize_op_types": list(QUANTIZED_OPS), "between_op_types": ["Add"]},
            "alignment": {"add": "none"},
            # ORT folds only a Relu/Clip into QLinearConv/QGemm/QLinearMatMul (it drops them before a QuantizeLinear
            # whose grid clips there). A HardSwish, Gelu, Tanh... fused the same way would leave the compute op's
            # output float, and ORT would run DequantizeLinear -> float Conv: those keep both sides quantized
            # (mobilenetv3-mini: 9 -> 19 of 23 Convs as integer kernels, 2.5-2.9x -> 1.5-1.8x float latency).
            # HardSigmoid stays fused: it gates squeeze-excitation blocks, whose Convs run on 1x1 pooled tensors,
            # where an integer kernel gains nothing measurable and quantizing the gate logits costs accuracy
            # (PP-OCRv4 recognizer 0.9716 -> 0.9703 character accuracy).
            # MatMul outputs stay quantized even where no quantized op reads them: `float_outputs = ["MatMul"]`
            # (ORT then runs MatMulIntegerToFloat) was 2-4 % faster on the zoo's transformers but cost
            # all-MiniLM-L6-v2 MRR 0.3793 -> 0.3776 (float 0.3828, past the 1 % goal) and the PP-OCRv4
            # recognizer 0.9729 -> 0.9716 character accuracy.
            # An activation's (or an Add's...) output that only float ops read stays float (float_unread): a detector
            # head's Sigmoid -> Reshape -> Transpose -> Split before float box arithmetic was rounded to uint8 for
            # no integer kernel (a YOLO-style head 55.5 -> 74.9 dB, ORT's own export 74.8).
            "fusion": {"fused_activations": sorted(ACTIVATIONS | {"HardSigmoid"}), "float_outputs": [],
                       "float_unread": True},
            # Free (no data, function unchanged): on the PP-OCRv4 recognizer 0.9693 -> 0.9732 character accuracy.
            # The fallback only looks at MatMul/Gemm layers whose input has a channel 8x the median one (a
            # transformer's GELU output) and returns the most sensitive to float until the output SNR is within
            # 1 dB of all of them float, or reaches 30 dB: all-MiniLM-L6-v2 (about 10 dB) MRR 0.3705 -> 0.3793
            # (float 0.3828). Float, not int16 activations: ORT's MatMulNBits
            # would quantize them to int8 again. Without such layers: no change. At most a tenth of the compute
            # ops, rounded down (none on models of fewer than 10), only for a gain of 1 dB or more, and nothing
            # where the output SNR already reaches 30 dB (a 12-Conv shufflenet at 44 dB keeps its classifier).
            # Transformer outliers, cheapest fix first, every layer keeping its integer kernel: a MatMul input
            # channel 8x the median is split into copies within 4x (a GELU output of all-MiniLM-L6-v2: 24.7 against
            # 1.3); a MatMul output with a channel 16x the median that no quantized op reads is written float by
            # MatMulIntegerToFloat (MiniLM's down-projections write one residual channel near 195). MiniLM: 48/48
            # MatMuls int8, MRR 0.3830 (float 0.3828; 44/48 and 0.3793 with the fallback alone). The fallback
            # then finds no candidate there. Not Gemm: a CNN classifier after global pooling (mobilenetv2-w0.25,
            # ratio 329 over mostly dead channels) lost 0.7 dB split.
            "accuracy": {"equalization": True, "channel_split": {"op_types": ["MatMul"]}, "outlier_outputs": True,
                         "fallback": {"op_types": ["MatMul", "Gemm"], "outlier_ratio": 8.0, "max_gap_db": 1.0,
                                      "max_share": 0.1, "min_gain_db": 1.0,
                                      "enough_snr_db": 30.0, "samples": 16}},
        }

    def annotate(self, op, proposal: Proposal) -> Proposal | KeepFloat:
        """Keep float what ORT's CPU kernels run only in float, unless the user's configuration asked for it."""
        reason = FLOAT_KERNEL_ONLY.get(op.op_type) or _float64_tensors(op, proposal)
        if reason is not None and not proposal.requested:
            return KeepFloat(reason)
        if op.op_type == "Gather":  # an embedding table of weight-only: blocks GatherBlockQuantized takes
            from .nbits import fit_gather_blocks

            return fit_gather_blocks(op, proposal)
        return _batched_weights_per_tensor(op, proposal)

    def validate(self, graph, options: ExportOptions | None = None):
        from .rules import validate

        return validate(graph, options)

    def export(self, graph, output: Path, options: ExportOptions) -> list[Path]:
        from .export import export

        return export(graph, output, options)

    def output_files(self, output: Path, options: ExportOptions) -> list[Path]:
        from .paths import output_files

        return output_files(output)

    def run(self, paths, samples, names):
        """As a user's default session runs the files (the agreement check compares exactly instead: a blocked
        int8 weight before an int16 activation's MatMul becomes MatMulNBits at accuracy level 4 by default, which
        the summary read 1.7 dB better than it runs on a small Llama)."""
        from .session import run

        return run(paths, samples, names, exact=False)

    def runner(self, paths):
        """run() of many batches on one session (a metric's, one at a time: a session each took 0.1-1 s); a
        subclass that runs its files its own way (its run()) is run that way."""
        if type(self).run is not OnnxRuntimePlatform.run:
            return super().runner(paths)
        from .session import runner

        return runner(paths, exact=False)

    def runtime(self) -> str:
        from .session import RUNTIME

        return RUNTIME

    def agreement(self, graph, paths, samples, simulated):
        from .agreement import agreement

        return agreement(graph, paths, samples, simulated)


class OnnxRuntimeInt32BiasPlatform(OnnxRuntimePlatform):
    """The same, with Conv/Gemm biases as int32 codes (scale s_in * s_w, zero point 0) behind a DequantizeLinear."""

    name = "onnxruntime-int32bias"
    description = "QDQ ONNX model for ONNX Runtime; Conv/Gemm biases as int32 (scale = s_in * s_w)"
    bias_mode = "int32"


def _float64_tensors(op, proposal: Proposal) -> str | None:
    """Why an op whose proposed tensors are float64 stays float (None: none is): no Q/DQ takes float64, and one such
    op refused the whole model at export (a float32 model casting to double around one MatMul)."""
    tensors = [var for var, tqc in (*zip(op.inputs, proposal.configs.inputs, strict=True),
                                    *zip(op.outputs, proposal.configs.outputs, strict=True))
               if tqc is not None and var.dtype == np.float64]
    if not tensors:
        return None
    names = ", ".join(repr(var.name) for var in tensors)
    return (f"float64 tensor(s) {names}: QuantizeLinear/DequantizeLinear take float32, float16 and bfloat16 only, "
            "so the op runs in float64 as the model has it")


def _batched_weights_per_tensor(op, proposal: Proposal) -> Proposal:
    """A MatMul weight of more than 2 dimensions (a batched weight) quantized per tensor, unless the user's
    configuration chose its granularity: ORT's integer MatMul takes per-channel scales on a 2-D weight only, and
    runs such a MatMul per channel as DequantizeLinear -> float MatMul (``ort.perf.granularity``)."""
    if op.op_type != "MatMul":
        return proposal
    inputs, changed = list(proposal.configs.inputs), []
    for index, (var, tqc) in enumerate(zip(op.inputs, inputs, strict=True)):
        if tqc is None or index in proposal.user_granularity or not var.is_parameter or var.value.ndim <= 2 \
                or not tqc.scheme.policy & P.PER_CHANNEL:
            continue
        policy = (tqc.scheme.policy & ~P.PER_CHANNEL) | P.PER_TENSOR
        inputs[index] = TensorQuantizationConfig(tqc.scheme.with_changes(policy=policy, channel_axis=None),
                                                 role=tqc.role)
        changed.append(f"{var.value.ndim}-D weight {var.name!r}")
    if not changed:
        return proposal
    reason = (f"{proposal.reason}; its {', '.join(changed)} per tensor: ONNX Runtime's integer MatMul takes "
              "per-channel scales on a 2-D weight only")
    configs = OpQuantConfig(inputs, list(proposal.configs.outputs), True, reason)
    return dataclasses.replace(proposal, configs=configs, reason=reason)
