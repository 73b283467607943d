"""Every diagnostic code this platform emits, with its severity and meaning (docs list them all)."""

from qtool import Severity

E, P, W = Severity.ERROR, Severity.PERFORMANCE, Severity.WARNING

CODES: dict[str, tuple[Severity, str]] = {
    "ort.no-qdq-type": (E, "no Q/DQ type that ONNX Runtime runs can store the scheme"),
    "ort.opset": (E, "the type or granularity needs another opset than the one the model is written at"),
    "ort.dynamic": (E, "dynamic (run-time) scales are not exported by this platform"),
    "ort.kernel-type": (E, "ORT fuses a 2-bit (or, for Conv, 4-bit input) node group into an 8-bit kernel that "
                          "refuses it, or drops the 4/2-bit pairs around a MaxPool that has no kernel for them"),
    "ort.conv-weight-axis": (E, "a Conv weight per-channel on an axis other than 0 where ORT fuses QLinearConv"),
    "ort.conv-weight-block": (E, "a Conv weight per block where ORT fuses QLinearConv (a Conv without bias)"),
    "ort.perf.op-type": (P, "the op type has no integer kernel in ORT's CPU provider"),
    "ort.perf.float-input": (P, "an input or weight of the op is not quantized"),
    "ort.perf.type": (P, "a tensor of the op is not int8/uint8"),
    "ort.perf.granularity": (P, "per-channel activations, per-block weights, per-channel weights off the output "
                                "axis, or a per-channel MatMul weight of more than 2 dimensions"),
    "ort.perf.gemm-scale": (P, "a Gemm with a bias and alpha or beta other than 1 (its weight or bias computed)"),
    "ort.perf.bias": (P, "a computed bias of a Conv or Gemm quantized as an activation, not int32"),
    "ort.perf.nbits-fallback": (P, "a weight-only layer that cannot be MatMulNBits / GatherBlockQuantized runs "
                                   "as DequantizeLinear -> float op (the note says why)"),
    "ort.perf.nbits-level": (P, "8-bit MatMulNBits at accuracy_level 0, which ORT runs slower than float on CPU"),
    "ort.perf.int8-shared": (P, "an int8 activation pair read by several nodes, which ORT's x86 kernels cannot take"),
    "ort.perf.activation": (P, "a Relu/Clip that ORT cannot drop stays between the op and its QuantizeLinear"),
    "ort.perf.float-output": (P, "a Conv output that is not quantized right after the Conv, a float Gemm output "
                                 "with a float bias, or a float output of a weight-first MatMul (W @ x)"),
    "ort.range": (W, "an activation range narrower than its storage type: ORT saturates at the type's limits"),
    "ort.rounding": (W, "an activation rounding other than half-to-even, ORT's only rounding"),
    "ort.bias-float": (W, "a bias ORT's integer kernels would misread as int32 codes is written as float values"),
    "ort.weight-requantized": (W, "a float weight ORT quantizes to int8 itself, unlike qtool's simulation"),
    "ort.nbits-accuracy-level": (W, "MatMulNBits at accuracy_level 4 quantizes its float input to int8 inside the "
                                    "kernel, unlike qtool's simulation"),
    "ort.gather-block-size": (W, "an embedding table in smaller blocks than configured: its row length is not a "
                                 "whole number of blocks, which GatherBlockQuantized needs"),
    "ort.nbits-padding": (W, "MatMulNBits layers whose input size K is not a whole number of blocks: the last "
                             "block is padded (more bytes than a block size that divides K)"),
    "ort.float32-compute": (W, "a float16 or bfloat16 model is written to compute in float32 (Casts at its inputs and "
                               "outputs keep their types): ORT's CPU integer kernels take float32 Q/DQ only"),
    "ort.activation-kept": (W, "a Relu/Clip kept although activation removal was asked: dropping it is not exact"),
}
