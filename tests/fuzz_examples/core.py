"""Fuzz examples of the core helpers: nnopt_lab.measure.csr_bytes and nnopt_lab.nn.layers' input checks."""


def examples(h):
    return {
        "measure.csr_bytes": lambda: dict(rows=3, cols=4, nnz=5, value_bits=32, index_bits=32, pointer_bits=64),
        "nn.layers.check_layer_input": lambda: dict(layer=h._model()[0], x=h.rand(2, 3)),
        "nn.layers.check_layer_dtype": lambda: dict(layer=h._model()[0], x=h.rand(2, 3), weight=h.rand(4, 3)),
    }
