"""Inference optimizations (seed §2.4, §3.4): sparse kernels for pruned weights (CSR), knowledge
distillation into a small student.

Each technique family is one module; use them by module name, e.g.
``from nnopt_lab.inference import distillation; distillation.distillation_loss(s, t, y)``.
"""
from . import distillation, sparse

__all__ = ["distillation", "sparse"]
