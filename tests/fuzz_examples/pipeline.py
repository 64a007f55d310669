"""Fuzz examples of nnopt_lab.pipeline, the torch import/export of nnopt_lab.reference (the capstone) and
Deep Compression's relative-index storage (nnopt_lab.inference.sparse.relative_from_dense)."""
from __future__ import annotations

import dataclasses
import functools


@functools.lru_cache(maxsize=1)
def _digits():
    from nnopt_lab import backend as B
    from nnopt_lab import datasets
    return datasets.load_digits(B.Backend("numpy", "float64"))


def _data():
    """Digits cut to 60 / 20 / 20 samples: a pipeline runs on it in milliseconds."""
    d = _digits()
    cut = (lambda pair, n: (pair[0][:n], pair[1][:n]))
    return dataclasses.replace(d, train=cut(d.train, 60), val=cut(d.val, 20), test=cut(d.test, 20))


def _model():
    from nnopt_lab import backend as B
    from nnopt_lab import models
    return models.mlp((64, 6, 10), backend=B.Backend("numpy", "float64"))


def _integer_model():
    from nnopt_lab.inference import integer
    return integer.convert(_model(), _data().train[0][:20])


def _torch_net():
    import torch
    return torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2)).double()


def _report():
    from nnopt_lab import pipeline as P
    return P.Pipeline([P.Prune(0.5), P.ShareWeights(2)]).run(_model(), _data(), latency=False)


def _pipeline():
    from nnopt_lab import pipeline as P
    return P.Pipeline([P.Prune(0.5, fine_tune_epochs=1), P.Trim(), P.QuantizeInt8(calibration_samples=20)])


def _row():
    return dict(row=_report().rows[0].as_dict())


def examples(h):
    return {**_capstone_examples(h), **_storage_examples(h)}


def methods(h):
    return {**_capstone_methods(h), **_storage_methods(h)}


def _capstone_examples(h):
    from nnopt_lab import pipeline as P
    return {
        "pipeline.Prune": lambda: dict(sparsity=0.5),
        "pipeline.Pipeline": lambda: dict(steps=[P.Prune(0.5), P.Trim()]),
        "pipeline.stored_bytes": lambda: dict(model=_model()),
        "pipeline.evaluate_accuracy": lambda: dict(model=_model(), data=_data().test),
        "pipeline.measure_step": lambda: dict(model=_model(), data=_data(), latency=False),
        "reference.from_torch": lambda: dict(torch_sequential=_torch_net()),
        "reference.to_torch": lambda: dict(model=_model()),
        "reference.to_torch_quantized": lambda: dict(integer_model=_integer_model()),
        "reference.torch_tools_baseline": lambda: dict(model=_model(), data=_data(), sparsity=0.5, latency=False,
                                                       calibration_samples=20),
        "reference.QuantizedSequential": lambda: dict(engine="qnnpack"),
    }


def _capstone_methods(h):
    return {
        "Pipeline.run": (_pipeline, "run", lambda: dict(model=_model(), data=_data(), latency=False)),
        "Report.best_within": (_report, "best_within", lambda: dict(points=1.0)),
        "Report.pareto": (_report, "pareto", lambda: dict(metric="bytes")),
        "Report.to_json": (_report, "to_json", lambda: dict(path=h._tmp() + "/r.json")),
        "Report.to_csv": (_report, "to_csv", lambda: dict(path=h._tmp() + "/r.csv")),
        "Report.as_dict": (_report, "as_dict", lambda: dict(timings=False)),
        "Report.add": (_report, "add", _row),
        "StepResult.from_dict": (lambda: _report().rows[0], "from_dict", lambda: dict(d=_row()["row"])),
    }


def _relative():
    import numpy as np
    from nnopt_lab.inference import sparse
    return sparse.relative_from_dense(np.array([[0.0, 1.5, 0.0, 0.0], [0.0, 0.0, 0.0, -2.0]]), 2)


def _shared_model():
    from nnopt_lab import pipeline as P
    return P.Pipeline([P.Prune(0.5), P.ShareWeights(2)]).run(_model(), _data(), latency=False).final_model


def _storage_examples(h):
    import numpy as np
    return {
        "inference.sparse.relative_from_dense": lambda: dict(weight=np.array([[0.0, 1.5, 0.0], [0.0, 0.0, -2.0]]),
                                                             bits=2),
        "pipeline.encoded_bytes": lambda: dict(model=_shared_model(), relative_index_bits=3),
        "pipeline.Encode": lambda: dict(relative_index_bits=4),
    }


def _storage_methods(h):
    return {
        "RelativeIndexed.nbits": (_relative, "nbits", lambda: dict(value_bits=4)),
        "RelativeIndexed.to_dense": (_relative, "to_dense", dict),
        "RelativeIndexed.positions": (_relative, "positions", dict),
    }
