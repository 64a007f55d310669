"""Inference optimizations (seed §2.4, §3.4): sparse kernels for pruned weights (CSR), knowledge
distillation into a small student, and quantized inference: calibration of activation ranges,
integer-only int8 layers, fp16/bf16, binary and ternary networks, quantization-aware training.

Each technique family is one module; use them by module name, e.g.
``from nnopt_lab.inference import distillation; distillation.distillation_loss(s, t, y)``.
"""
from . import binary, calibration, distillation, integer, precision, qat, sparse

__all__ = ["binary", "calibration", "distillation", "integer", "precision", "qat", "sparse"]
