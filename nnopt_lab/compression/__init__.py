"""Model compression (seed §2.2): quantization (shared by all three quantization chapters),
weight sharing, factorization, pruning, trimming."""
