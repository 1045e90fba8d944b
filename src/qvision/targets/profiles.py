"""Target profiles as data: what each runtime quantizes and on which integer grids.

A rule such as "AVX2 without VNNI keeps GEMM weights to 7 bits" is a field here, never
an `if` in the planner or writer.
"""

from __future__ import annotations

from pydantic import BaseModel, Field

from qvision.qmath import QFormat


class Fmt(BaseModel):
    dtype: str
    bits: int
    symmetric: bool
    narrow: bool = False

    def q(self) -> QFormat:
        return QFormat(self.dtype, self.bits, self.symmetric, self.narrow)


# op type -> handler kind. Kinds decide Q/DQ placement and scale sharing:
#   conv/gemm/matmul: quantized input, quantized weight, int32 bias;
#   binary/unary/pool: quantized inputs and output, own scales;
#   concat / same-scale: one scale shared by inputs and output (data is only moved).
ORT_CPU_OPS = {
    "Conv": "conv",
    "Gemm": "gemm",
    "MatMul": "matmul",
    "Add": "binary",
    "Mul": "binary",
    "Concat": "concat",
    "GlobalAveragePool": "pool",
    "AveragePool": "pool",
    "MaxPool": "same-scale",
    "Resize": "same-scale",
    "Reshape": "same-scale",
    "Flatten": "same-scale",
    "Transpose": "same-scale",
    "Squeeze": "same-scale",
    "Unsqueeze": "same-scale",
    "Slice": "same-scale",
    "Sigmoid": "unary",
    "LeakyRelu": "unary",
    "Softmax": "unary",
}
# Not listed, so left in float with a warning: HardSwish, HardSigmoid, ReduceMean, Split,
# Pad... ONNX Runtime's CPU provider has no QDQ fusion for them, and a lone Q/DQ pair
# around a float op only adds work.


class Target(BaseModel):
    name: str
    description: str
    # The runtime that executes the model: a warning that this CPU cannot run a model as its
    # target would sends the user to another profile of the same runtime.
    runtime: str = "onnxruntime"
    # A Conv/Gemm kept float gets a per-channel DQ of its input (the writer's
    # _float_layer_dq): ONNX Runtime would otherwise quantize it itself; OpenVINO runs it in
    # float either way, so its models score alike in ONNX Runtime; TensorRT takes
    # per-channel scales on weights only.
    float_layer_dq: bool = True
    activation: Fmt
    weight: Fmt
    per_channel: bool = True
    # Weight bits by handler kind, overriding weight.bits (e.g. 7 on AVX2 for GEMM-backed ops).
    weight_bits: dict[str, int] = Field(default_factory=dict)
    ops: dict[str, str] = Field(default_factory=lambda: dict(ORT_CPU_OPS))
    # Activations folded into the producer's output range (the runtime drops them after Q).
    fold: list[str] = Field(default_factory=lambda: ["Relu", "Clip"])
    # Graph outputs stay float (logits, box regressions): the last op dequantizes.
    float_outputs: bool = True
    # Post-processing after the last weighted layers stays float: a detector's sigmoid,
    # DFL softmax, decode arithmetic and head concats/reshapes. One 8-bit grid over [0, 1]
    # zeroes every score under 1/510 (mAP integrates down to 0.001) and a concat of box
    # and class logits shares one scale; YOLO users keep these float for 3-7 mAP points.
    float_tail: bool = True
    # Depthwise layers whose per-tensor input grid crushes many live channels stay float
    # (quant/channel_guard.py): the runtime's integer kernels take one input scale a tensor.
    guard_channels: bool = True
    # Per-image min/max averaged (batch 1): with bias correction it gave MobileNetV2 20.1 dB
    # output SQNR and 96.2 % agreement vs 16.7 dB / 94.7 % for MSE ranges, and tied MSE on
    # EfficientNet-Lite0 (BENCHMARKS.md). Autotune tries the other methods.
    default_method: str = "mean-minmax"
    # Recovery run when --algo is not given; bias correction raised SQNR by 2-4 dB on both zoo
    # classifiers for a few seconds of extra calibration (BENCHMARKS.md).
    default_algos: list[str] = Field(default_factory=lambda: ["bias-correction"])

    def weight_format(
        self, kind: str, depthwise: bool = False, max_bits: int | None = None
    ) -> QFormat:
        """The weight grid for a handler kind; ``max_bits`` caps it (4 for ``--weights int4``)."""
        key = f"{kind}-depthwise" if depthwise else kind
        bits = self.weight_bits.get(key, self.weight_bits.get(kind, self.weight.bits))
        if max_bits is not None:
            bits = min(bits, max_bits)
        return QFormat(self.weight.dtype, bits, self.weight.symmetric, self.narrow(bits))

    def narrow(self, bits: int) -> bool:
        """Whether ``bits``-bit weights drop the most negative value. 4-bit weights use the
        whole signed range (-8..7, as INT4 itself): narrow ranges keep 8-bit kernels' pair
        sums from saturating, which 4-bit values cannot; 16 levels fit better than 15."""
        return self.weight.narrow and bits > 4


_U8_ASYM = Fmt(dtype="uint8", bits=8, symmetric=False)
_S8_SYM = Fmt(dtype="int8", bits=8, symmetric=True, narrow=True)
# x86 without VNNI sums pairs of u8·s8 products in 16 bits: 7-bit weights cannot overflow them
# (255·63·2 < 32767); depthwise convolutions run on their own kernel and keep 8
_AVX2_BITS = {"conv": 7, "gemm": 7, "matmul": 7, "conv-depthwise": 8}

TARGETS: dict[str, Target] = {
    t.name: t
    for t in [
        Target(
            name="ort-cpu-avx2",
            description=(
                "ONNX Runtime CPU on AVX2 without VNNI: u8 activations, s8 per-channel weights; "
                "weights of GEMM-backed ops use 7 bits so the u8s8 kernel's 16-bit pair sums cannot "
                "saturate (255·63·2 < 32767); depthwise convolutions use their own exact kernel and keep 8"
            ),
            activation=_U8_ASYM,
            weight=_S8_SYM,
            weight_bits=_AVX2_BITS,
        ),
        Target(
            name="ort-cpu-vnni",
            description="ONNX Runtime CPU with VNNI (AVX512-VNNI / AVX-VNNI) or ARM dot-product: full 8-bit weights",
            activation=_U8_ASYM,
            weight=_S8_SYM,
        ),
        Target(
            name="tensorrt",
            description="TensorRT explicit quantization: symmetric s8 activations (zero point 0), s8 per-channel weights",
            runtime="tensorrt",
            activation=Fmt(dtype="int8", bits=8, symmetric=True, narrow=True),
            weight=_S8_SYM,
            float_layer_dq=False,
        ),
        Target(
            name="openvino",
            description=(
                "OpenVINO CPU, any x86: u8 activations, s8 per-channel weights at 7 bits for "
                "GEMM-backed ops, since OpenVINO's int8 kernels on AVX2 without VNNI saturate "
                "as ONNX Runtime's do (MobileNetV2 W8A8 in OpenVINO: 71.4 % top-1 with 8-bit "
                "weights, 83.0 % with 7; BENCHMARKS.md); depthwise keeps 8"
            ),
            runtime="openvino",
            activation=_U8_ASYM,
            weight=_S8_SYM,
            weight_bits=_AVX2_BITS,
        ),
        Target(
            name="openvino-vnni",
            description="OpenVINO CPU with VNNI or AMX: full 8-bit weights",
            runtime="openvino",
            activation=_U8_ASYM,
            weight=_S8_SYM,
        ),
    ]
}
