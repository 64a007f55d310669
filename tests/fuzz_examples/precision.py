"""Fuzz examples of nnopt_lab.inference.precision and the backend's bfloat16 rounding."""


def examples(h):
    return {
        "inference.precision.cast": lambda: dict(x=h.rand(3, 4) * 10 - 5, dtype="float16", overflow="raise"),
        "inference.precision.precision_error": lambda: dict(x=h.rand(3, 4) * 10 - 5, dtype="bfloat16"),
        "inference.precision.cast_model": lambda: dict(model=h._model(), dtype="float16"),
        "inference.precision.CastModel": lambda: dict(model=h._model(), dtype="float16", originals={}),
        "backend.round_bfloat16": lambda: dict(x=h.rand(3, 4)),
        "backend.round_bfloat16_portable": lambda: dict(x=h.rand(3, 4)),
    }
