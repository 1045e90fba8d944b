"""The quantization engine: statistics -> plan -> algorithms -> writer, and autotuning."""
