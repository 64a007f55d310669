"""Fuzz examples of nnopt_lab.inference.binary."""
import numpy as np


def examples(h):
    return {
        "inference.binary.ternarize_weight": lambda: dict(w=h.rand(3, 4) - 0.5, threshold_factor=0.7,
                                                          per_channel=True, axis=0),
        "inference.binary.two_level": lambda: dict(w=h.rand(3, 4) - 0.5, per_channel=False, axis=0),
        "inference.binary.binarize_activations": lambda: dict(x=h.rand(3, 4) - 0.5),
        "inference.binary.pack_signs": lambda: dict(x=h.rand(3, 10) - 0.5),
        "inference.binary.popcount": lambda: dict(words=np.arange(5, dtype=np.uint8)),
        "inference.binary.xnor_dot": lambda: dict(a_packed=np.array([[3, 1]], dtype=np.uint8),
                                                  b_packed=np.array([[5, 0]], dtype=np.uint8), n=10),
        "inference.binary.xnor_linear": lambda: dict(x=h.rand(2, 5) - 0.5, w=h.rand(3, 5, seed=1) - 0.5,
                                                     bias=h.rand(3, seed=2)),
    }


def methods(h):
    from nnopt_lab.inference import binary as BI
    return {"QuantizedWeight(ternary).dequantize": (lambda: BI.ternarize_weight(h.rand(3, 4) - 0.5), "dequantize",
                                                    lambda: dict(dtype="float64"))}
