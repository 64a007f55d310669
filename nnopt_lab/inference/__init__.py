"""Inference optimizations (seed §2.4, §3.4): sparse kernels for pruned weights, distillation."""
from . import sparse
