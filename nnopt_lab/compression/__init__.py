"""Model compression (seed §2.2): quantization (shared by all three quantization chapters),
weight sharing (k-means codebooks, Huffman coding), factorization (low-rank, separable),
pruning and trimming (BN folding, fusion, merging, physical removal).

Each technique family is one module; use them by module name, e.g.
``from nnopt_lab.compression import trimming; trimming.fold_batchnorms(model)``.
"""
from . import factorization, huffman, pruning, quantization, trimming, weight_sharing

__all__ = ["factorization", "huffman", "pruning", "quantization", "trimming", "weight_sharing"]
