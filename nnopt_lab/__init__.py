"""nnopt-lab: neural-network optimization, every technique built from scratch.

One implementation of each technique runs on numpy arrays and on torch tensors (CPU or
CUDA); see :mod:`nnopt_lab.backend`. The chapters in ``chapters/`` teach them.
"""
from . import backend, models, nn, testing, training
from .backend import get_backend, seed, set_backend, to_backend, to_numpy

__version__ = "0.1.0"
