"""Plan + model -> QDQ ONNX. The only code that emits QuantizeLinear/DequantizeLinear."""

from qvision.quant.writer.qdq import QDQ_OPS, write_qdq

__all__ = ["QDQ_OPS", "write_qdq"]
