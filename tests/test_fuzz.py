"""Fuzz test of the public API: every public callable x bad arguments, one parameter at a time.

Every callable name in the ``__all__`` of every module of ``nnopt_lab`` (functions and class
constructors), and the methods users call on the objects (``fit``, ``transform``, ``forward``,
``__call__`` of a transform, ...), is called with valid example arguments (the tables below)
except for ONE parameter, which gets a bad value: None, a str, a bool, -1, 0, 2.5, nan, inf,
huge ints, an empty array, an array with NaN or inf, an array of the wrong ndim, integer and
float32 arrays, a torch tensor among numpy arrays ... and, as values that must be ACCEPTED, the
numpy scalars (np.int64 / np.float32 / np.bool_) of valid Python values. Every example whose
arrays can move to torch is fuzzed again there (``[torch]``: the mix is then a numpy array).
hypothesis adds random values (derandomized, so a CI run is reproducible).

Allowed outcomes:

* ``ValueError`` / ``TypeError`` whose message names the parameter (a whole word);
* a result with no NaN in it (NaN may come out only where an array with NaN went in, or where
  a callable returns NaN by design: ``NAN_BY_DESIGN``);
* ``AssertionError`` from the checking helpers of ``nnopt_lab.testing`` (their way to fail);
* ``FileNotFoundError`` naming the missing path, for a path that does not exist (or, for None,
  when the default place holds no such file).

Anything else is a failure: another exception type (ZeroDivisionError, IndexError, a
RuntimeError from torch, MemoryError, ...), a NaN in a result, a numpy scalar refused where the
Python value is accepted, or a call running past the time guard (``TIME_GUARD_S``); a public
callable without an example is a failure too (add one to ``_examples``).

Only the ``value`` of the checks in ``nnopt_lab.validation`` is fuzzed (their bounds and choices
are the programmer's constants). Skipped, and listed in the summary: ``nnopt_lab.widgets`` (they
need a display), ``nnopt_lab.exercises`` (checkers of a learner's function: their failures are
AssertionErrors by design), the result records (dataclasses built by the library, not by users)
and abstract base classes.

All failures are collected and asserted at once, one line each; ``pytest -s`` prints the figures.
The calls run in a temporary folder (fuzzed paths such as "abc" are written there) under a
memory guard (an allocation of several GiB is a failure, not a swapping machine).
"""
from __future__ import annotations

import contextlib
import dataclasses
import importlib
import importlib.util
import inspect
import io
import itertools
import math
import os
import pkgutil
import re
import resource
import signal
import time
import types
import warnings
from collections.abc import Iterator

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import nnopt_lab
from nnopt_lab import backend as B

SKIPPED_PACKAGES = ("nnopt_lab.widgets", "nnopt_lab.exercises")
# Parameters fuzzed where not all are: the checkers' bounds and choices are the programmer's constants,
# the value is what a user passes.
ONLY_PARAMS = {"nnopt_lab.validation.": ("value",)}
# NaN that a callable returns by design, documented in its docstring: {callable: parameters, "*" = any}
NAN_BY_DESIGN = {
    "nnopt_lab.preprocessing.cleaning.drop_at_random": "*",            # marks entries missing (MCAR)
    "nnopt_lab.functions2d.run_optimizer": ("escape",),                # rows after a divergence
    "nnopt_lab.validation.as_float": "*",                              # a conversion: nan stays nan
    "nnopt_lab.backend.to_numpy": ("x",),                              # conversions: nan stays nan
    "nnopt_lab.backend.to_backend": ("x",),
    "nnopt_lab.backend.asarray": ("x",),
    "nnopt_lab.backend.copy": ("x",),
    "nnopt_lab.backend.float_of": ("x",),
    "nnopt_lab.training.loop.TrainState": ("batch_loss",),             # a record of what the step computed
}
# The argument a message must name, where the callable takes the caller's name for it as an argument.
NAMED_BY_ARGUMENT = {"nnopt_lab.training.loop.check_xy": {"data": "train"}}
# Clear errors of their own kind: fit stops on a diverging loss with TrainingDiverged (a
# FloatingPointError carrying the history), as torch users expect from a NaN check.
CLEAR_ERRORS = {"nnopt_lab.training.": (FloatingPointError,)}
TIME_GUARD_S = 3          # per call
MEMORY_GUARD_BYTES = 3 * 2 ** 30   # extra address space a call may take (a bigger allocation is a failure)
HUGE = 2 ** 62


# ----------------------------------------------------------------------------- valid examples
def rand(*shape, seed=0):
    return np.random.default_rng(seed).random(shape)


def labels(n=4, classes=3):
    return np.arange(n, dtype=np.int64) % classes


def _model():
    from nnopt_lab import models
    return models.mlp((3, 4, 3), backend=B.Backend("numpy", "float64"))


def _cnn():
    from nnopt_lab import models
    return models.small_cnn(in_channels=1, image_size=8, channels=(2, 2), num_classes=3,
                            backend=B.Backend("numpy", "float64"))


def _linear(n_in, n_out):
    from nnopt_lab.nn import layers as L
    return L.Linear(n_in, n_out, backend=B.Backend("numpy", "float64"))


def _bn1d(n):
    from nnopt_lab.nn import layers as L
    return L.BatchNorm1d(n, backend=B.Backend("numpy", "float64"))


def _bn_model():
    from nnopt_lab import models
    return models.mlp((3, 4, 3), batchnorm=True, backend=B.Backend("numpy", "float64"))


def _deep_model():
    from nnopt_lab import models
    return models.mlp((3, 3, 3, 3), backend=B.Backend("numpy", "float64"))


def _global_prune_args():
    model = _model()
    return dict(layers=[model[0], model[2]], amount=0.5)


def _distillation_backward_args():
    from nnopt_lab.inference import distillation
    return dict(cache=distillation.distillation_forward(rand(4, 3), rand(4, 3, seed=1), labels())[1])


def _csr():
    from nnopt_lab.inference import sparse
    return sparse.csr_from_dense(rand(3, 4) * (rand(3, 4, seed=1) > 0.5))


def _csr_matmul_args():
    return dict(a=_csr(), x=rand(4, 2))


def _restore_args():
    from nnopt_lab.compression import quantization as Q
    model = _model()
    return dict(model=model, saved=Q.fake_quantize_model(model, 4))


def _conv():
    from nnopt_lab.nn import layers as L
    return L.Conv2d(2, 3, 3, backend=B.Backend("numpy", "float64"))


def _train(n=8):
    return rand(n, 3, seed=1), labels(n)


def _optimizer():
    from nnopt_lab.training import optim
    return optim.SGD(_model(), lr=0.1)


def _model_with_grads():
    from nnopt_lab.nn.layers import CrossEntropyLoss
    from nnopt_lab.training import loop
    model = _model()
    loop.train_step(model, CrossEntropyLoss(), _optimizer_for(model), *_train())
    return model


def _unregistered_layer():
    """A new layer type for register_twin (the decorator it returns is never applied)."""
    from nnopt_lab.nn.layers import Module
    return type("UnregisteredLayer", (Module,), {})


def _col2im_args():
    from nnopt_lab.nn import functional as F
    cols, geometry = F.im2col(rand(2, 1, 4, 4), 2, 2)
    return dict(dcols=rand(*cols.shape, seed=4), geometry=geometry, kh=2, kw=2)


def _optimizer_for(model):
    from nnopt_lab.training import optim
    return optim.SGD(model, lr=0.1)


def _forward(name, *args, **kwargs):
    from nnopt_lab.nn import functional as F
    return getattr(F, name)(*args, **kwargs)


def _tmp():
    import tempfile
    return tempfile.mkdtemp(prefix="nnopt_fuzz_", dir=os.getcwd())   # inside the sandbox folder


def _idx_file():
    from nnopt_lab import datasets
    path = _tmp() + "/a-idx3-ubyte"
    datasets.write_idx(path, np.arange(24, dtype=np.uint8).reshape(2, 3, 4))
    return path


def _npz_file():
    path = _tmp() + "/a.npz"
    B.save_npz(path, {"a": np.arange(3.0)})
    return path


def _mnist_dir():
    from nnopt_lab import datasets
    d = _tmp()
    g = np.random.default_rng(0)
    for split, n in (("train", 12), ("t10k", 6)):
        datasets.write_idx(f"{d}/{split}-images-idx3-ubyte", g.integers(0, 255, (n, 28, 28), dtype=np.uint8))
        datasets.write_idx(f"{d}/{split}-labels-idx1-ubyte", (np.arange(n) % 3).astype(np.uint8))
    return d


def _conv_cache():
    x, w = rand(2, 1, 5, 5), rand(2, 1, 3, 3, seed=2)
    return {"dout": rand(2, 2, 3, 3, seed=3), "cache": _forward("conv2d_forward", x, w, rand(2))[1]}


def _bn_args(training=True):
    return dict(x=rand(4, 3), gamma=np.ones(3), beta=np.zeros(3), running_mean=np.zeros(3),
                running_var=np.ones(3), training=training)


def _square(x):
    return x * x


def _examples():
    """Valid keyword arguments for each callable that has required parameters: ``{qualname: factory}``."""
    F = "nn.functional."
    from nnopt_lab.functions2d import Rosenbrock
    from nnopt_lab.preprocessing import augmentation as A
    from nnopt_lab.training import optim, schedules
    ex = {
        # backend
        "backend.Backend": lambda: dict(name="numpy"),
        "backend.is_torch": lambda: dict(x=rand(3)),
        "backend.namespace": lambda: dict(arrays=(rand(3), rand(2))),
        "backend.device": lambda: dict(x=rand(3)),
        "backend.int_matmul": lambda: dict(a=np.arange(6, dtype=np.int8).reshape(2, 3),
                                           b=np.arange(12, dtype=np.int8).reshape(3, 4)),
        "backend.int_matmul_portable": lambda: dict(a=np.arange(6, dtype=np.int8).reshape(2, 3),
                                                    b=np.arange(12, dtype=np.int8).reshape(3, 4)),
        "backend.device_of": lambda: dict(x=rand(3)),
        "backend.to_numpy": lambda: dict(x=rand(3)),
        "backend.to_backend": lambda: dict(x=rand(3), backend="numpy"),
        "backend.asarray": lambda: dict(x=rand(3), like=rand(2)),
        "backend.dtype_name": lambda: dict(x=rand(3)),
        "backend.same_kind": lambda: dict(x=rand(3), like=rand(2)),
        "backend.seed": lambda: dict(value=1),
        "backend.generator": lambda: dict(seed_value=1),
        "backend.backend_of": lambda: dict(x=rand(3)),
        "backend.randn": lambda: dict(shape=(2, 3)),
        "backend.rand": lambda: dict(shape=(2, 3)),
        "backend.uniform": lambda: dict(low=0.0, high=1.0, shape=(2, 3)),
        "backend.permutation": lambda: dict(n=5),
        "backend.sliding_windows": lambda: dict(x=rand(1, 1, 4, 4), kh=2, kw=2),
        "backend.sliding_windows_portable": lambda: dict(x=rand(1, 1, 4, 4), kh=2, kw=2),
        "backend.scatter_add": lambda: dict(out=np.zeros(4), index=np.array([0, 1, 1]), values=rand(3)),
        "backend.scatter_add_portable": lambda: dict(out=np.zeros(4), index=np.array([0, 1, 1]), values=rand(3)),
        "backend.segment_sum": lambda: dict(values=rand(5, 2), offsets=np.array([0, 2, 2, 5])),
        "backend.segment_sum_portable": lambda: dict(values=rand(5, 2), offsets=np.array([0, 2, 2, 5])),
        "backend.float_of": lambda: dict(x=np.float64(2.0)),
        "backend.copy": lambda: dict(x=rand(3)),
        "backend.from_bytes": lambda: dict(buffer=bytes(8), dtype="uint8", shape=(2, 4)),
        "backend.to_bytes": lambda: dict(x=np.arange(4, dtype=np.uint8), dtype="uint8"),
        "backend.save_npz": lambda: dict(file=_tmp() + "/b.npz", arrays={"a": rand(2)}),
        "backend.load_npz": lambda: dict(path=_npz_file()),
        # compression
        "compression.quantization.integer_range": lambda: dict(bits=8),
        "compression.quantization.code_dtype": lambda: dict(qmin=-128, qmax=127),
        "compression.quantization.qparams_per_channel": lambda: dict(x_min=-rand(3), x_max=rand(3, seed=1), bits=8),
        "compression.quantization.channel_minmax": lambda: dict(x=rand(3, 4)),
        "compression.quantization.qparams": lambda: dict(x_min=-1.0, x_max=1.0, bits=8),
        "compression.quantization.quantize": lambda: dict(x=rand(5), scale=0.01, zero_point=0, qmin=-128, qmax=127),
        "compression.quantization.dequantize": lambda: dict(q=np.arange(5, dtype=np.int8), scale=0.01, zero_point=0),
        "compression.quantization.fake_quantize": lambda: dict(x=rand(5), scale=0.01, zero_point=0, qmin=-128,
                                                               qmax=127),
        "compression.quantization.quantize_uniform": lambda: dict(x=rand(5), bits=4, lo=0.0, hi=1.0),
        "compression.factorization.rank_for_energy": lambda: dict(singular_values=np.array([3.0, 2.0, 1.0]),
                                                                 energy=0.9),
        "compression.factorization.truncation_error": lambda: dict(singular_values=np.array([3.0, 2.0, 1.0]), rank=2),
        "compression.factorization.low_rank_linear": lambda: dict(layer=_model()[0], rank=2),
        "compression.factorization.spatially_separable": lambda: dict(conv=_conv(), rank=1),
        "compression.factorization.depthwise_separable": lambda: dict(in_channels=2, out_channels=3, kernel_size=3),
        "compression.factorization.to_depthwise_separable": lambda: dict(conv=_conv()),
        "compression.factorization.savings": lambda: dict(before=_model(), after=_model(), input_shape=(3,)),
        "compression.trimming.fold_batchnorm": lambda: dict(layer=_model()[0], bn=_bn1d(4)),
        "compression.trimming.fold_batchnorms": lambda: dict(model=_bn_model()),
        "compression.trimming.fuse_linear": lambda: dict(first=_model()[0], second=_linear(4, 2)),
        "compression.trimming.fuse_linears": lambda: dict(model=_model()),
        "compression.trimming.duplicate_groups": lambda: dict(weight=np.array([[1.0, 2.0], [1.0, 2.0], [0.0, 1.0]]),
                                                              bias=np.array([0.5, 0.5, 0.0])),
        "compression.trimming.merge_duplicate_neurons": lambda: dict(model=_model(), layer=0),
        "compression.trimming.remove_layers": lambda: dict(model=_deep_model(), start=1, stop=3, input_shape=(3,)),
        "compression.trimming.removal_damage": lambda: dict(model=_deep_model(), start=1, stop=3, data=_train()),
        "compression.trimming.dead_units": lambda: dict(layer=_model()[0]),
        "compression.trimming.remove_units": lambda: dict(model=_model(), layer=0, indices=[1]),
        "compression.weight_sharing.init_centroids": lambda: dict(w=rand(4, 3), k=3),
        "compression.weight_sharing.kmeans": lambda: dict(w=rand(4, 3), k=3),
        "compression.weight_sharing.index_dtype": lambda: dict(k=16),
        "compression.weight_sharing.index_bits": lambda: dict(k=16),
        "compression.weight_sharing.share_weights": lambda: dict(w=rand(4, 3), k=3),
        "compression.weight_sharing.compression_ratio": lambda: dict(n=1000, k=16),
        "compression.weight_sharing.SharedLayer": lambda: dict(layer=_model()[0], k=3),
        "compression.huffman.symbol_counts": lambda: dict(symbols=np.array([1, 2, 2, 3, 3, 3])),
        "compression.huffman.huffman_code": lambda: dict(counts={1: 1, 2: 2, 3: 3}),
        "compression.huffman.encode": lambda: dict(symbols=np.array([1, 2, 2, 3]), code={1: "10", 2: "11", 3: "0"}),
        "compression.huffman.decode": lambda: dict(data=bytes([0b10111100]), code={1: "10", 2: "11", 3: "0"},
                                                   n_symbols=4),
        "compression.huffman.entropy": lambda: dict(counts={1: 1, 2: 2, 3: 3}),
        "compression.huffman.average_length": lambda: dict(code={1: "10", 2: "11", 3: "0"}, counts={1: 1, 2: 2, 3: 3}),
        "compression.huffman.total_bits": lambda: dict(code={1: "10", 2: "11", 3: "0"}, counts={1: 1, 2: 2, 3: 3}),
        "compression.pruning.pruned_count": lambda: dict(amount=0.5, n=10),
        "compression.pruning.select_lowest": lambda: dict(scores=rand(6), amount=2),
        "compression.pruning.prune_mask": lambda: dict(scores=rand(3, 4), amount=0.5),
        "compression.pruning.ln_structured_mask": lambda: dict(weight=rand(4, 3), amount=1),
        "compression.pruning.prunable": lambda: dict(model=_model()),
        "compression.pruning.l1_unstructured": lambda: dict(layer=_model()[0], amount=0.5),
        "compression.pruning.random_unstructured": lambda: dict(layer=_model()[0], amount=0.5),
        "compression.pruning.global_unstructured": _global_prune_args,
        "compression.pruning.ln_structured": lambda: dict(layer=_model()[0], amount=1),
        "compression.pruning.remove_masks": lambda: dict(model=_model()),
        "compression.pruning.prune": lambda: dict(model=_model(), sparsity=0.5),
        "compression.pruning.taylor_scores": lambda: dict(model=_model(), data=_train()),
        "compression.pruning.apoz": lambda: dict(model=_model(), x=rand(5, 3), layer=0),
        "compression.pruning.mask_units": lambda: dict(layer=_model()[0], indices=[1]),
        "compression.pruning.remove_pruned_units": lambda: dict(model=_model()),
        "compression.pruning.sparsity": lambda: dict(x=np.array([0.0, 1.0, 0.0, 2.0])),
        "compression.pruning.sparsity_report": lambda: dict(model=_model()),
        "compression.pruning.Penalty": lambda: dict(kind="l1", strength=1e-3),
        "compression.pruning.soft_threshold": lambda: dict(w=rand(3, 4) - 0.5, threshold=0.1),
        "compression.pruning.ProximalL1": lambda: dict(strength=1e-3),
        "compression.pruning.PolynomialDecay": lambda: dict(initial_sparsity=0.0, final_sparsity=0.5, begin_step=0,
                                                            end_step=10, frequency=2),
        "compression.pruning.GradualPruning": lambda: dict(schedule=importlib.import_module(
            "nnopt_lab.compression.pruning").PolynomialDecay(0.0, 0.5, 0, 10, frequency=2)),
        "compression.pruning.iterative_prune": lambda: dict(model=_model(), train=_train(), final_sparsity=0.5,
                                                            rounds=2, epochs=1, batch_size=4, lr=0.1, progress=False),
        "compression.pruning.sensitivity_scan": lambda: dict(model=_model(), data=_train(), sparsities=(0.25, 0.5)),
        "compression.quantization.quantize_weight": lambda: dict(w=rand(3, 4) - 0.5, bits=4),
        "compression.quantization.binarize_weight": lambda: dict(w=rand(3, 4) - 0.5),
        "compression.quantization.fake_quantize_model": lambda: dict(model=_model(), bits=4),
        "compression.quantization.restore_model": _restore_args,
        "compression.quantization.quantized_size": lambda: dict(source=_model()),
        "compression.quantization.FakeQuantizedModel": lambda: dict(model=_model(), records={}, parameters={}),
        "inference.distillation.softmax_temperature": lambda: dict(logits=rand(4, 3), temperature=2.0),
        "inference.distillation.log_softmax_temperature": lambda: dict(logits=rand(4, 3), temperature=2.0),
        "inference.distillation.distillation_forward": lambda: dict(student_logits=rand(4, 3),
                                                                    teacher_logits=rand(4, 3, seed=1), labels=labels()),
        "inference.distillation.distillation_backward": _distillation_backward_args,
        "inference.distillation.distillation_loss": lambda: dict(student_logits=rand(4, 3),
                                                                 teacher_logits=rand(4, 3, seed=1), labels=labels()),
        "inference.distillation.DistillationLoss": lambda: dict(teacher=_model().eval()),
        "inference.distillation.check_temperature": lambda: dict(temperature=2.0),
        "inference.sparse.csr_from_dense": lambda: dict(weight=rand(3, 4) * (rand(3, 4, seed=1) > 0.5)),
        "inference.sparse.csr_matmul": _csr_matmul_args,
        "inference.sparse.SparseLinear": lambda: dict(weight=_csr(), bias=rand(3)),
        "inference.sparse.sparsify": lambda: dict(model=_model()),
        "inference.sparse.three_ways": lambda: dict(model=_model()),
        # datasets
        "datasets.load_mnist1d": lambda: dict(num_samples=60, cache_dir=_tmp()),
        "datasets.make_moons": lambda: dict(n=10),
        "datasets.make_spirals": lambda: dict(n=12),
        "datasets.stratified_split": lambda: dict(y=labels(30)),
        "datasets.load_idx": lambda: dict(path=_idx_file()),
        "datasets.write_idx": lambda: dict(path=_tmp() + "/w-idx1-ubyte", array=np.arange(4, dtype=np.uint8)),
        "datasets.load_mnist_family": lambda: dict(directory=_mnist_dir()),
        # functions2d
        "functions2d.Param2D": lambda: dict(fn=Rosenbrock(), start=(-1.0, 1.0)),
        "functions2d.run_optimizer": lambda: dict(opt_factory=lambda p: optim.SGD(p, lr=1e-3), fn=Rosenbrock(),
                                                  start=(-1.0, 1.0), steps=3),
        # measure
        "measure.count_parameters": lambda: dict(model=_model()),
        "measure.model_bytes": lambda: dict(model=_model()),
        "measure.bits_of": lambda: dict(dtype="float32"),
        "measure.summary": lambda: dict(model=_model(), input_shape=(3,)),
        "measure.flops": lambda: dict(model=_model(), input_shape=(3,)),
        "measure.activation_memory": lambda: dict(model=_model(), input_shape=(3,)),
        "measure.latency": lambda: dict(fn=lambda: None, warmup=1, repeats=2),
        "measure.measure_model_latency": lambda: dict(model=_model(), input_shape=(3,), warmup=1, repeats=2),
        # models
        "models.mlp": lambda: dict(sizes=(3, 4, 3)),
        "models.small_cnn": lambda: dict(channels=(2, 2)),
        # nn.functional
        F + "linear_forward": lambda: dict(x=rand(2, 3), weight=rand(4, 3, seed=1), bias=rand(4, seed=2)),
        F + "linear_backward": lambda: dict(dout=rand(2, 4),
                                            cache=_forward("linear_forward", rand(2, 3), rand(4, 3), rand(4))[1]),
        F + "conv2d_forward": lambda: dict(x=rand(2, 1, 5, 5), weight=rand(2, 1, 3, 3, seed=2), bias=rand(2)),
        F + "conv2d_backward": _conv_cache,
        F + "im2col": lambda: dict(x=rand(2, 1, 4, 4), kh=2, kw=2),
        F + "col2im": _col2im_args,
        F + "maxpool2d_forward": lambda: dict(x=rand(2, 1, 4, 4), kernel=2),
        F + "maxpool2d_backward": lambda: dict(dout=rand(2, 1, 2, 2),
                                               cache=_forward("maxpool2d_forward", rand(2, 1, 4, 4), 2)[1]),
        F + "avgpool2d_forward": lambda: dict(x=rand(2, 1, 4, 4), kernel=2),
        F + "avgpool2d_backward": lambda: dict(dout=rand(2, 1, 2, 2),
                                               cache=_forward("avgpool2d_forward", rand(2, 1, 4, 4), 2)[1]),
        F + "relu_forward": lambda: dict(x=rand(2, 3) - 0.5),
        F + "relu_backward": lambda: dict(dout=rand(2, 3), cache=_forward("relu_forward", rand(2, 3) - 0.5)[1]),
        F + "batchnorm_forward": _bn_args,
        F + "batchnorm_backward": lambda: dict(dout=rand(4, 3), cache=_forward("batchnorm_forward",
                                                                               **_bn_args())[1]),
        F + "dropout_forward": lambda: dict(x=rand(2, 3), p=0.5, training=True),
        F + "dropout_backward": lambda: dict(dout=rand(2, 3),
                                             cache=_forward("dropout_forward", rand(2, 3), 0.5, True)[1]),
        F + "softmax": lambda: dict(logits=rand(4, 3)),
        F + "log_softmax": lambda: dict(logits=rand(4, 3)),
        F + "cross_entropy_forward": lambda: dict(logits=rand(4, 3), labels=labels()),
        F + "cross_entropy_backward": lambda: dict(cache=_forward("cross_entropy_forward", rand(4, 3), labels())[1]),
        F + "conv_output_size": lambda: dict(size=5, kernel=3, stride=1, padding=0),
        # nn.layers
        "nn.layers.Parameter": lambda: dict(data=rand(3)),
        "nn.layers.Linear": lambda: dict(in_features=3, out_features=2),
        "nn.layers.Conv2d": lambda: dict(in_channels=1, out_channels=2, kernel_size=3),
        "nn.layers.MaxPool2d": lambda: dict(kernel_size=2),
        "nn.layers.AvgPool2d": lambda: dict(kernel_size=2),
        "nn.layers.BatchNorm1d": lambda: dict(num_features=3),
        "nn.layers.BatchNorm2d": lambda: dict(num_features=3),
        "nn.layers.Sequential": lambda: dict(layers=(_model(),)),
        # preprocessing
        "preprocessing.augmentation.hflip": lambda: dict(x=rand(2, 1, 4, 4)),
        "preprocessing.augmentation.vflip": lambda: dict(x=rand(2, 1, 4, 4)),
        "preprocessing.augmentation.rot90": lambda: dict(x=rand(2, 1, 4, 4)),
        "preprocessing.augmentation.rotate": lambda: dict(x=rand(2, 1, 4, 4), angle=30.0),
        "preprocessing.augmentation.crop": lambda: dict(x=rand(2, 1, 4, 4), top=1, left=0, height=2, width=3),
        "preprocessing.augmentation.center_crop": lambda: dict(x=rand(2, 1, 4, 4), size=2),
        "preprocessing.augmentation.pad": lambda: dict(x=rand(2, 1, 4, 4), padding=1),
        "preprocessing.augmentation.resize": lambda: dict(x=rand(2, 1, 4, 4), size=6),
        "preprocessing.augmentation.resized_crop": lambda: dict(x=rand(2, 1, 4, 4), boxes=[(0, 0, 2, 2), (1, 1, 3, 3)],
                                                                size=3),
        "preprocessing.augmentation.RandomCrop": lambda: dict(size=2),
        "preprocessing.augmentation.CenterCrop": lambda: dict(size=2),
        "preprocessing.augmentation.Resize": lambda: dict(size=3),
        "preprocessing.augmentation.RandomResizedCrop": lambda: dict(size=3),
        "preprocessing.augmentation.Compose": lambda: dict(transforms=[A.HorizontalFlip()]),
        "preprocessing.augmentation.for_flat_batches": lambda: dict(transform=A.HorizontalFlip(),
                                                                    image_shape=(1, 4, 4)),
        "preprocessing.cleaning.pad_axis": lambda: dict(x=rand(2, 4), before=1, after=2, axis=1),
        "preprocessing.cleaning.mean_filter": lambda: dict(x=rand(2, 5, 5)),
        "preprocessing.cleaning.median_filter": lambda: dict(x=rand(2, 5, 5)),
        "preprocessing.cleaning.gaussian_kernel1d": lambda: dict(sigma=1.0),
        "preprocessing.cleaning.gaussian_filter": lambda: dict(x=rand(2, 5, 5)),
        "preprocessing.cleaning.nan_euclidean_distances": lambda: dict(X=rand(3, 2), Y=rand(4, 2, seed=1)),
        "preprocessing.cleaning.add_gaussian_noise": lambda: dict(x=rand(2, 3), std=0.1),
        "preprocessing.cleaning.add_salt_and_pepper": lambda: dict(x=rand(2, 3), amount=0.1),
        "preprocessing.cleaning.drop_at_random": lambda: dict(x=rand(2, 3), rate=0.1),
        "preprocessing.input_compression.quantize_inputs": lambda: dict(x=rand(2, 3), bits=2),
        "preprocessing.input_compression.floyd_steinberg": lambda: dict(images=rand(2, 1, 4, 4), bits=1),
        "preprocessing.input_compression.binarize": lambda: dict(x=rand(2, 3), threshold=0.5),
        "preprocessing.input_compression.otsu_threshold": lambda: dict(x=rand(2, 3)),
        "preprocessing.input_compression.downsample": lambda: dict(images=rand(2, 1, 4, 4), factor=2),
        "preprocessing.input_compression.upsample": lambda: dict(images=rand(2, 1, 2, 2), factor=2),
        "preprocessing.input_compression.to_patches": lambda: dict(images=rand(2, 1, 4, 4), patch=2),
        "preprocessing.input_compression.from_patches": lambda: dict(patches=rand(2, 4, 4), image_shape=(1, 4, 4),
                                                                     patch=2),
        "preprocessing.input_compression.TopVarianceSelector": lambda: dict(k=2),
        "preprocessing.input_compression.PCA": lambda: dict(n_components=2),
        "preprocessing.input_compression.bytes_per_sample": lambda: dict(method="kbit", n_features=64, bits=4),
        # reference
        "reference.torch_twin": lambda: dict(model=_model()),
        "reference.torch_module": lambda: dict(layer=_model()[0]),
        "reference.train_torch_twin": lambda: dict(twin=torch.nn.Linear(3, 3).double(), train=_train(),
                                                   epochs=1, batch_size=4, lr=0.1, seed=0),
        "reference.register_twin": lambda: dict(layer_types=(_unregistered_layer(),)),
        # source
        "source.source_of": lambda: dict(obj=_square),
        "source.show_source": lambda: dict(obj=_square),
        # testing
        "testing.rel_error": lambda: dict(a=rand(3), b=rand(3, seed=1)),
        "testing.max_abs_diff": lambda: dict(a=rand(3), b=rand(3, seed=1)),
        "testing.compare": lambda: dict(ours=rand(3), reference=rand(3), name="itself", quiet=True),
        "testing.numerical_gradient": _numerical_gradient_args,
        "testing.gradcheck": _gradcheck_args,
        "testing.claim": lambda: dict(text="ours is faster", condition=True, quick=True, speedup=1.5),
        # training
        "training.batch_size.throughput": lambda: dict(model_factory=_model, data=_train(), batch_sizes=[2, 4],
                                                       steps=2, warmup=1),
        "training.batch_size.full_gradient": lambda: dict(model=_model(), data=_train()),
        "training.batch_size.gradient_noise": lambda: dict(model=_model(), data=_train(), batch_sizes=[2, 4], repeats=2),
        "training.batch_size.linear_scaling_rule": lambda: dict(base_lr=0.1, base_batch=32, batch=64),
        "training.batch_size.linear_scaling_warmup": lambda: dict(optimizer=_optimizer(), base_lr=0.1, base_batch=32,
                                                                  batch=64, warmup_steps=3),
        "training.batch_size.updates_per_epoch": lambda: dict(n_samples=10, batch_size=3),
        "training.batch_size.BatchSizeSchedule": lambda: dict(batch_size=2),
        "training.batch_size.fit_with_batch_schedule": lambda: dict(model=_model(), train=_train(),
                                                                    schedule=_batch_schedule(), epochs=1, lr=0.1,
                                                                    progress=False),
        "training.clipping.clip_grad_norm": lambda: dict(params=_model_with_grads(), max_norm=1.0),
        "training.clipping.clip_grad_value": lambda: dict(params=_model_with_grads(), clip_value=0.1),
        "training.clipping.total_grad_norm": lambda: dict(grads=[rand(3), rand(2, 2)]),
        "training.clipping.ClippedOptimizer": lambda: dict(optimizer=_optimizer(), max_norm=1.0),
        "training.loop.check_xy": lambda: dict(name="train", data=_train()),
        "training.loop.batches": lambda: dict(x=rand(6, 3), y=labels(6), batch_size=4),
        "training.loop.fit": _fit_args,
        "training.loop.evaluate": lambda: dict(model=_model(), data=_train()),
        "training.loop.predict": lambda: dict(model=_model(), x=rand(5, 3)),
        "training.loop.accuracy": lambda: dict(logits=rand(4, 3), labels=labels()),
        "training.loop.check_loss_fn": lambda: dict(loss_fn=importlib.import_module("nnopt_lab.nn.layers").CrossEntropyLoss()),
        "training.loop.compute_loss": lambda: dict(loss_fn=importlib.import_module("nnopt_lab.nn.layers").CrossEntropyLoss(),
                                                   logits=rand(4, 3), labels=labels(), inputs=rand(4, 3)),
        "training.loop.train_step": _train_step_args,
        "training.loop.TrainState": lambda: dict(model=_model(), optimizer=_optimizer(),
                                                 history=importlib.import_module("nnopt_lab.training.loop").History(),
                                                 epochs=1),
        "training.optim.Optimizer": lambda: dict(params=_model(), lr=0.1),
        "training.optim.SGD": lambda: dict(params=_model()),
        "training.optim.Adagrad": lambda: dict(params=_model()),
        "training.optim.RMSprop": lambda: dict(params=_model()),
        "training.optim.Adam": lambda: dict(params=_model()),
        "training.optim.AdamW": lambda: dict(params=_model()),
        "training.optim.check_lr": lambda: dict(lr=0.1),
        "training.schedules.LRScheduler": lambda: dict(optimizer=_optimizer()),
        "training.schedules.ConstantLR": lambda: dict(optimizer=_optimizer()),
        "training.schedules.StepLR": lambda: dict(optimizer=_optimizer(), step_size=2),
        "training.schedules.MultiStepLR": lambda: dict(optimizer=_optimizer(), milestones=[2, 4]),
        "training.schedules.ExponentialLR": lambda: dict(optimizer=_optimizer(), gamma=0.9),
        "training.schedules.LinearLR": lambda: dict(optimizer=_optimizer()),
        "training.schedules.LinearWarmup": lambda: dict(optimizer=_optimizer(), warmup_steps=3),
        "training.schedules.CosineAnnealingLR": lambda: dict(optimizer=_optimizer(), T_max=5),
        "training.schedules.CosineAnnealingWarmRestarts": lambda: dict(optimizer=_optimizer(), T_0=5),
        "training.schedules.OneCycleLR": lambda: dict(optimizer=_optimizer(), max_lr=0.1, total_steps=10),
        "training.schedules.SequentialLR": _sequential_args,
        "training.schedules.ReduceLROnPlateau": lambda: dict(optimizer=_optimizer()),
        "training.schedules.with_warmup": lambda: dict(after=schedules.StepLR(_optimizer(), 2), warmup_steps=2),
        "training.schedules.lr_curve": lambda: dict(build=lambda o: schedules.StepLR(o, 2), steps=5),
        "training.schedules.ScheduleCallback": lambda: dict(schedule=schedules.StepLR(_optimizer(), 2)),
        "training.schedules.lr_range_test": lambda: dict(model=_model(), data=_train(), steps=5, batch_size=4),
        "training.range_test.lr_range_test": lambda: dict(model=_model(), data=_train(), steps=5, batch_size=4),
        "training.snapshot.preserved": lambda: dict(model=_model()),
    }
    for check in ("check_int", "check_number", "check_probability", "check_bool", "check_path",
                  "check_callable"):
        ex["validation." + check] = (lambda c: lambda: dict(name="arg", value=_VALID_VALUE[c]))(check)
    ex["validation.check_choice"] = lambda: dict(name="arg", value="a", choices=("a", "b"))
    ex["validation.check_shape"] = lambda: dict(name="arg", value=(2, 3))
    ex["validation.check_sequence"] = lambda: dict(name="arg", value=[1, 2])
    ex["validation.check_array"] = lambda: dict(name="arg", value=rand(2, 3), ndim=2)
    ex["validation.check_generator"] = lambda: dict(name="arg", value=np.random.default_rng(0))
    ex["validation.as_int"] = lambda: dict(value=3)
    ex["validation.as_float"] = lambda: dict(value=0.5)
    examples, _ = _area_tables()
    ex.update(examples)
    return {"nnopt_lab." + k: v for k, v in ex.items()}


FUZZ_AREAS = os.path.join(os.path.dirname(__file__), "fuzz_examples")


def _area_tables():
    """The example tables of ``tests/fuzz_examples/*.py``, one file per area of the library.

    Each file defines ``examples(h)`` -> ``{qualname: factory}`` (qualname without the leading
    ``nnopt_lab.``) and may define ``methods(h)`` -> ``{label: (make, method, factory)}``, as in
    ``_examples`` and ``_methods`` here; ``h`` is this module, for its helpers (``h.rand``,
    ``h.labels``, ``h._model``, ...).
    """
    import sys
    examples, methods = {}, {}
    this = sys.modules[__name__]
    for name in sorted(os.listdir(FUZZ_AREAS)) if os.path.isdir(FUZZ_AREAS) else ():
        if not name.endswith(".py") or name.startswith("_"):
            continue
        spec = importlib.util.spec_from_file_location(f"fuzz_examples_{name[:-3]}", os.path.join(FUZZ_AREAS, name))
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        examples.update(module.examples(this))
        if hasattr(module, "methods"):
            methods.update(module.methods(this))
    return examples, methods


_VALID_VALUE = {"check_int": 3, "check_number": 0.5, "check_probability": 0.5, "check_bool": True,
                "check_path": "a/b", "check_callable": len}


def _numerical_gradient_args():
    x = rand(3)
    return dict(f=lambda: float((x * x).sum()), x=x)


def _gradcheck_args():
    """forward/backward that work on whatever x gradcheck is given (the backward reads forward's x)."""
    seen = {}

    def forward(x):
        seen["x"] = x
        return x * x

    return dict(forward=forward, backward=lambda g: 2 * seen["x"] * g, x=rand(3))


def _fit_args(**extra):
    return dict(model=_model(), train=_train(), epochs=1, batch_size=4, lr=0.1, progress=False, **extra)


def _batch_schedule():
    from nnopt_lab.training.batch_size import BatchSizeSchedule
    return BatchSizeSchedule(2, milestones=(1,))


def _train_step_args():
    from nnopt_lab.nn.layers import CrossEntropyLoss
    model = _model()
    return dict(model=model, loss_fn=CrossEntropyLoss(), optimizer=_optimizer_for(model), xb=rand(4, 3),
                yb=labels())


def _sequential_args():
    from nnopt_lab.training import schedules
    opt = _optimizer()
    return dict(optimizer=opt, schedulers=[schedules.LinearLR(opt, total_iters=2), schedules.StepLR(opt, 2)],
                milestones=[2])


# Methods users call on the objects (constructor example, method, its valid arguments).
def _linear_after_forward():
    from nnopt_lab.nn import layers as L
    layer = L.Linear(3, 2, backend=B.Backend("numpy", "float64"))
    layer.forward(rand(4, 3))
    return layer


def _model_after_forward():
    model = _model()
    model.forward(rand(4, 3))
    return model


def _dataset():
    from nnopt_lab import datasets
    return datasets.load_mnist1d(num_samples=30, cache_dir=_tmp(), backend="numpy")


def _methods():
    from nnopt_lab.nn import layers as L
    from nnopt_lab.preprocessing import cleaning as C
    from nnopt_lab.preprocessing import input_compression as IC
    from nnopt_lab.preprocessing import augmentation as A
    from nnopt_lab.functions2d import Rosenbrock
    table = rand(6, 3)
    return {
        "StandardScaler.fit": (C.StandardScaler, "fit", lambda: dict(X=table)),
        "MinMaxScaler.fit": (C.MinMaxScaler, "fit", lambda: dict(X=table)),
        "SimpleImputer.fit": (C.SimpleImputer, "fit", lambda: dict(X=table)),
        "KNNImputer.fit": (lambda: C.KNNImputer(2), "fit", lambda: dict(X=table)),
        "StandardScaler.transform": (lambda: C.StandardScaler().fit(table), "transform", lambda: dict(X=table)),
        "KNNImputer.transform": (lambda: C.KNNImputer(2).fit(table), "transform", lambda: dict(X=table)),
        "PCA.fit": (lambda: IC.PCA(2), "fit", lambda: dict(x=table)),
        "PCA.transform": (lambda: IC.PCA(2).fit(table), "transform", lambda: dict(x=table)),
        "TopVarianceSelector.fit": (lambda: IC.TopVarianceSelector(2), "fit", lambda: dict(x=table)),
        "Linear.forward": (lambda: L.Linear(3, 2, backend=B.Backend("numpy", "float64")), "forward",
                           lambda: dict(x=rand(4, 3))),
        "Conv2d.forward": (lambda: L.Conv2d(1, 2, 3, backend=B.Backend("numpy", "float64")), "forward",
                           lambda: dict(x=rand(2, 1, 5, 5))),
        "BatchNorm1d.forward": (lambda: L.BatchNorm1d(3, backend=B.Backend("numpy", "float64")), "forward",
                                lambda: dict(x=rand(4, 3))),
        "CrossEntropyLoss.__call__": (L.CrossEntropyLoss, "__call__", lambda: dict(logits=rand(4, 3), labels=labels())),
        "Sequential.load_state_dict": (_model, "load_state_dict", lambda: dict(state=_model().state_dict())),
        "RandomCrop.__call__": (lambda: A.RandomCrop(2, padding=1), "__call__", lambda: dict(x=rand(2, 1, 4, 4))),
        "RandomRotation.__call__": (A.RandomRotation, "__call__", lambda: dict(x=rand(2, 1, 4, 4))),
        "RandomResizedCrop.__call__": (lambda: A.RandomResizedCrop(4), "__call__", lambda: dict(x=rand(2, 1, 4, 4))),
        "RandomRotate90.__call__": (A.RandomRotate90, "__call__", lambda: dict(x=rand(2, 1, 4, 4))),
        "Compose.__call__": (lambda: A.Compose([A.HorizontalFlip(), A.RandomCrop(4, padding=1)]), "__call__",
                             lambda: dict(x=rand(2, 1, 4, 4))),
        "for_flat_batches(...)": (lambda: types.SimpleNamespace(augment=A.for_flat_batches(A.HorizontalFlip(1.0),
                                                                                           (1, 4, 4))),
                                  "augment", lambda: dict(xb=rand(2, 16))),
        "SimpleImputer.transform": (lambda: C.SimpleImputer().fit(table), "transform", lambda: dict(X=table)),
        "MinMaxScaler.transform": (lambda: C.MinMaxScaler().fit(table), "transform", lambda: dict(X=table)),
        "MinMaxScaler.inverse_transform": (lambda: C.MinMaxScaler().fit(table), "inverse_transform",
                                           lambda: dict(Z=table)),
        "StandardScaler.inverse_transform": (lambda: C.StandardScaler().fit(table), "inverse_transform",
                                             lambda: dict(Z=table)),
        "PCA.inverse_transform": (lambda: IC.PCA(2).fit(table), "inverse_transform", lambda: dict(z=rand(6, 2))),
        "PCA.reconstruct": (lambda: IC.PCA(2).fit(table), "reconstruct", lambda: dict(x=table)),
        "TopVarianceSelector.transform": (lambda: IC.TopVarianceSelector(2).fit(table), "transform",
                                          lambda: dict(x=table)),
        "TopVarianceSelector.inverse_transform": (lambda: IC.TopVarianceSelector(2).fit(table), "inverse_transform",
                                                  lambda: dict(z=rand(6, 2))),
        "Function2D.grid": (Rosenbrock, "grid", lambda: dict(n=5)),
        "Module.to": (_model, "to", lambda: dict(backend="torch-cpu")),
        "Module.train": (_model, "train", lambda: dict(mode=False)),
        "Linear.backward": (_linear_after_forward, "backward", lambda: dict(dout=rand(4, 2))),
        "Sequential.backward": (_model_after_forward, "backward", lambda: dict(dout=rand(4, 3))),
        "ReduceLROnPlateau.step": (lambda: importlib.import_module("nnopt_lab.training.schedules").ReduceLROnPlateau(
            _optimizer()), "step", lambda: dict(metrics=0.5)),
        "Dataset.split": (_dataset, "split", lambda: dict(name="val")),
        "Dataset.to": (_dataset, "to", lambda: dict(backend="torch-cpu")),
        "Dataset.images": (_dataset, "images", lambda: dict(x=rand(3, 40))),
        "Dataset.flat": (_dataset, "flat", lambda: dict(x=rand(3, 1, 40))),
        **_area_tables()[1],
    }


# ----------------------------------------------------------------------------- the callables
def public_callables():
    """``[(qualname, obj)]`` for every callable in every module's ``__all__``; and what was skipped."""
    found, skipped = [], []
    seen = set()
    for info in sorted(pkgutil.walk_packages(nnopt_lab.__path__, "nnopt_lab."), key=lambda i: i.name):
        if info.name.startswith(SKIPPED_PACKAGES):
            skipped.append(f"{info.name} (module skipped)")
            continue
        module = importlib.import_module(info.name)
        for name in getattr(module, "__all__", ()):
            obj = getattr(module, name)
            if not callable(obj) or (isinstance(obj, type) and issubclass(obj, BaseException)):
                continue
            qualname = f"{info.name}.{name}"
            if dataclasses.is_dataclass(obj) and name not in ("TrainState",):
                skipped.append(f"{qualname} (result record)")
                continue
            if id(obj) in seen:
                continue
            seen.add(id(obj))
            found.append((qualname, obj))
    return found, skipped


# ----------------------------------------------------------------------------- bad values
class Bad:
    """A bad (or, with ``must_accept``, a must-be-accepted) value for one parameter."""

    def __init__(self, label, value, has_nan=False, must_accept=False):
        self.label, self.value, self.has_nan, self.must_accept = label, value, has_nan, must_accept


def generic_bad_values():
    return [Bad("None", None), Bad("str", "abc"), Bad("True", True), Bad("-1", -1), Bad("0", 0), Bad("2.5", 2.5),
            Bad("nan", math.nan), Bad("inf", math.inf), Bad("-inf", -math.inf), Bad("huge", HUGE),
            Bad("-huge", -HUGE), Bad("1e300", 1e300), Bad("object", object())]


def _is_array(v):
    return isinstance(v, (np.ndarray, torch.Tensor))


def array_bad_values(valid):
    a = B.to_numpy(valid)
    out = [Bad("empty", a[:0]), Bad("0-d", a.reshape(-1)[0] if a.size else a)]
    if a.ndim:
        out.append(Bad("ndim+1", a[None]))
        out.append(Bad("ndim-1", a.reshape(-1)[:max(1, a.shape[-1])] if a.ndim > 1 else a.reshape(1, -1)))
        out.append(Bad("zero-size axis", a[..., :0]))
    if a.dtype.kind == "f":
        with_nan = a.copy()
        with_nan.reshape(-1)[0] = math.nan
        out.append(Bad("NaN entry", with_nan, has_nan=True))
        with_inf = a.copy()
        with_inf.reshape(-1)[-1] = math.inf
        out.append(Bad("inf entry", with_inf, has_nan=True))   # non-finite data in: NaN out is not silent
        out.append(Bad("int array", (a * 3).astype(np.int64)))
        out.append(Bad("uint8 array", (a * 3).astype(np.uint8)))
        out.append(Bad("float32 array", a.astype(np.float32)))
        out.append(Bad("huge entries", a * 1e300, has_nan=True))   # overflows to inf in float32
    else:
        out.append(Bad("float array", a.astype(np.float64) + 0.5))
        out.append(Bad("negative entries", -1 - a.astype(np.int64)))
        out.append(Bad("huge entries", a.astype(np.int64) + 10 ** 9))
    out.append(Bad("torch tensor", torch.from_numpy(a.copy()) if not isinstance(valid, torch.Tensor) else a))
    out.append(Bad("list", a.tolist()))
    return out


def scalar_twins(valid):
    """The numpy scalar of a valid Python number (or bool): must be accepted."""
    if isinstance(valid, bool):
        return [Bad("np.bool_", np.bool_(valid), must_accept=True)]
    if not isinstance(valid, (int, float)):
        return []
    if isinstance(valid, int):
        return [Bad("np.int64", np.int64(valid), must_accept=True), Bad("np.int32", np.int32(valid), must_accept=True)]
    return [Bad("np.float32", np.float32(valid), must_accept=True),
            Bad("np.float64", np.float64(valid), must_accept=True)]


def bad_values(valid):
    values = generic_bad_values() + scalar_twins(valid)
    if _is_array(valid):
        values += array_bad_values(valid)
    if isinstance(valid, tuple) and valid and all(isinstance(v, int) for v in valid):
        values += [Bad("tuple with 0", (0,) + valid[1:]), Bad("tuple with -1", valid[:-1] + (-1,)),
                   Bad("tuple of floats", tuple(float(v) + 0.5 for v in valid)), Bad("empty tuple", ())]
    return values


# ----------------------------------------------------------------------------- running one case
class Timeout(Exception):
    pass


def _alarm(signum, frame):
    raise Timeout()


def has_nan(value, depth=0):
    """True when a NaN is found in an array, number or container (recursively, a few levels)."""
    if depth > 4:
        return False
    if isinstance(value, float):
        return math.isnan(value)
    if isinstance(value, (np.ndarray, np.generic)):
        return value.dtype.kind in "fc" and bool(np.isnan(value).any())
    if isinstance(value, torch.Tensor):
        return value.is_floating_point() and bool(torch.isnan(value.detach()).any())
    if isinstance(value, dict):
        return any(has_nan(v, depth + 1) for v in value.values())
    if isinstance(value, (list, tuple)):
        return any(has_nan(v, depth + 1) for v in list(value)[:1000])
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return any(has_nan(getattr(value, f.name), depth + 1) for f in dataclasses.fields(value))
    if hasattr(value, "state_dict") and callable(value.state_dict) and not isinstance(value, type):
        try:
            return has_nan(dict(value.state_dict()), depth + 1)
        except Exception:
            return False
    return False


def names_parameter(message, param):
    return re.search(rf"(?<![A-Za-z0-9_]){re.escape(param)}(?![A-Za-z0-9_])", message) is not None


class Outcome:
    def __init__(self, kind, detail="", result=None):
        self.kind, self.detail, self.result = kind, detail, result   # kind: "error", "result", "fail"


# Results that differ from call to call by nature (clocks), so a numpy scalar's result is not compared.
TIMED = ("nnopt_lab.measure.latency", "nnopt_lab.measure.measure_model_latency",
         "nnopt_lab.training.batch_size.throughput")
EXACT_TWINS = ("np.int64", "np.int32", "np.float64", "np.bool_")   # must give exactly the Python value's result


def digest(value, depth=0, loose=False):
    """A comparable summary of a result: arrays as (dtype, shape, values), objects by their state.

    ``loose``: numpy scalars count as the Python numbers they hold.
    """
    if depth > 5:
        return "..."
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    if loose and isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, (np.ndarray, np.generic)):
        return ("array", str(value.dtype), value.shape, value.tobytes())
    if isinstance(value, float):
        return ("float", value if value == value else "nan")
    if isinstance(value, (bool, int, bytes, type(None))):
        return value
    if isinstance(value, str):
        return re.sub(r"nnopt_fuzz_\w+", "<tmp>", value)
    if isinstance(value, dict):
        return tuple((str(k), digest(v, depth + 1, loose)) for k, v in value.items()
                     if not any(w in str(k) for w in ("second", "time")))
    if isinstance(value, (list, tuple)):
        return tuple(digest(v, depth + 1, loose) for v in list(value)[:1000])
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return digest({f.name: getattr(value, f.name) for f in dataclasses.fields(value)}, depth + 1, loose)
    if hasattr(value, "state_dict") and callable(value.state_dict):
        try:
            return (type(value).__name__, digest(dict(value.state_dict()), depth + 1, loose))
        except Exception:   # noqa: BLE001 -- a state that cannot be read is compared by type only
            return type(value).__name__
    if hasattr(value, "__dict__") and not callable(value):
        return (type(value).__name__, digest(vars(value), depth + 1, loose))
    return type(value).__name__


def judge(qualname, param, bad, call, default_is_none=False):
    """Run ``call()`` under the guards and classify what happened."""
    old = signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(TIME_GUARD_S)
    start = time.perf_counter()
    B.seed(0)                                     # the same random draws for every call
    torch.manual_seed(0)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), \
                contextlib.redirect_stderr(io.StringIO()):
            warnings.simplefilter("ignore")
            result = call()
            if isinstance(result, (Iterator, types.GeneratorType)):
                result = list(itertools.islice(result, 1000))
    except Timeout:
        if _long_run_asked_for(param, bad.value):
            return Outcome("result")
        return Outcome("fail", f"no answer within {TIME_GUARD_S} s")
    except (ValueError, TypeError) as error:
        message = str(error)
        expected = "arg" if qualname.startswith("nnopt_lab.validation.check_") and param == "value" else param
        expected = NAMED_BY_ARGUMENT.get(qualname.replace("[torch]", ""), {}).get(param, expected)
        if bad.must_accept:
            return Outcome("fail", f"refused a numpy scalar: {type(error).__name__}: {_short(message)}")
        if names_parameter(message, expected) or (expected != param and names_parameter(message, param)):
            return Outcome("error")
        return Outcome("fail", f"{type(error).__name__} not naming {expected!r}: {_short(message)}")
    except AssertionError as error:
        if qualname.startswith("nnopt_lab.testing.") and not bad.must_accept:
            return Outcome("error")
        return Outcome("fail", f"AssertionError: {_short(str(error))}")
    except FileNotFoundError as error:
        if (isinstance(bad.value, str) and bad.value in str(error)) or (bad.value is None and default_is_none):
            return Outcome("error")      # the path given, or the default place (None), holds no such file
        return Outcome("fail", f"FileNotFoundError: {_short(str(error))}")
    except Exception as error:   # noqa: BLE001 -- any other type is what this test is looking for
        clear = [kinds for prefix, kinds in CLEAR_ERRORS.items() if qualname.startswith(prefix)]
        if clear and isinstance(error, clear[0]) and not bad.must_accept:
            return Outcome("error")
        return Outcome("fail", f"{type(error).__name__}: {_short(str(error))}")
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
        B.set_backend("numpy")
    by_design = NAN_BY_DESIGN.get(qualname.replace("[torch]", ""), ())
    if has_nan(result) and not bad.has_nan and not (by_design == "*" or param in by_design):
        return Outcome("fail", "silent NaN in the result")
    if time.perf_counter() - start > TIME_GUARD_S:
        return Outcome("fail", "slow")
    return Outcome("result", result=result)


# Counts of work (epochs, steps, rounds, ...): a value up to the library's caps (10**6) is a long run
# the caller asked for, not a hang; beyond the caps every callable must refuse at once.
WORK_PARAMS = ("epochs", "steps", "rounds", "repeats", "warmup", "max_iter", "n_iter", "iterations")
WORK_CAP = 10 ** 6


def _long_run_asked_for(param, value):
    return (param in WORK_PARAMS and isinstance(value, (int, np.integer)) and not isinstance(value, bool)
            and 0 < int(value) <= WORK_CAP)


def _short(text, n=110):
    text = " ".join(text.split())
    return text if len(text) <= n else text[:n - 1] + "…"


def _call(obj, kwargs, sig):
    """Call ``obj`` with keyword arguments, passing var-positional ones positionally."""
    positional, keywords = [], {}
    for name, param in sig.parameters.items():
        if name not in kwargs:
            continue
        if param.kind == param.VAR_POSITIONAL:
            value = kwargs[name]
            positional.extend(value if isinstance(value, tuple) else (value,))
        elif param.kind == param.POSITIONAL_ONLY or (positional and param.kind == param.POSITIONAL_OR_KEYWORD):
            positional.append(kwargs[name])
        else:
            keywords[name] = kwargs[name]
    if any(p.kind == p.VAR_KEYWORD for p in sig.parameters.values()):        # **options: the rest
        keywords.update({k: v for k, v in kwargs.items() if k not in sig.parameters})
    return obj(*positional, **keywords)


def _bound_method(factory, method):
    def call(**kwargs):
        return getattr(factory(), method)(**kwargs)
    return call


# ----------------------------------------------------------------------------- the whole run
class Report:
    def __init__(self):
        self.callables = self.torch_callables = 0
        self.cases = self.errors = self.results = 0
        self.failures = []
        self.no_example = []
        self.skipped = []
        self.bad_examples = []
        self.seconds = {}

    def add(self, qualname, param, bad, outcome):
        self.cases += 1
        if outcome.kind == "error":
            self.errors += 1
        elif outcome.kind == "result":
            self.results += 1
        else:
            self.failures.append(f"{qualname}({param}={bad.label}): {outcome.detail}")

    def summary(self):
        return (f"fuzz: {self.callables} callables ({self.torch_callables} also on torch), {self.cases} cases, {self.errors} clear errors, "
                f"{self.results} results, {len(self.failures)} failures; {len(self.no_example)} without an "
                f"example, {len(self.skipped)} skipped, {len(self.bad_examples)} invalid examples")


def targets():
    """``[(qualname, callable, signature, example_factory)]`` for the functions, classes and methods."""
    examples = _examples()
    found, skipped = public_callables()
    out, missing = [], []
    for qualname, obj in found:
        try:
            sig = inspect.signature(obj)
        except (TypeError, ValueError):
            skipped.append(f"{qualname} (no signature)")
            continue
        required = [p for p in sig.parameters.values()
                    if p.default is p.empty and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
        factory = examples.get(qualname)
        if factory is None and required:
            missing.append(qualname)
            continue
        out.append((qualname, obj, sig, factory or dict))
    for label, (make, method, factory) in _methods().items():
        call = _bound_method(make, method)
        sig = inspect.signature(getattr(make(), method))
        out.append((f"nnopt_lab.{label}", call, sig, factory))
    return out, missing, skipped


def _value_of(name, kwargs, sig):
    if name in kwargs:
        return kwargs[name]
    default = sig.parameters[name].default
    return None if default is inspect.Parameter.empty else default


def fuzz_target(report, qualname, obj, sig, factory, values_for=bad_values):
    check = _example_is_valid(report, qualname, obj, sig, factory)
    if not check:
        return
    only = next((names for prefix, names in ONLY_PARAMS.items() if qualname.startswith(prefix)), None)
    for name, param in sig.parameters.items():
        if param.kind == param.VAR_KEYWORD or (only is not None and name not in only):
            continue
        valid = _value_of(name, factory(), sig)
        expected = None
        for bad in values_for(valid):
            def call(name=name, value=bad.value):
                kwargs = factory()
                kwargs[name] = value
                return _call(obj, kwargs, sig)
            outcome = judge(qualname, name, bad, call, param.default is None)
            if outcome.kind == "result" and bad.label in EXACT_TWINS and qualname not in TIMED:
                if expected is None:
                    expected = judge(qualname, name, Bad("valid", valid), lambda: call(value=valid)).result
                outcome = _same_as_python(outcome, bad, valid, expected)
            report.add(qualname, name, bad, outcome)


def _same_as_python(outcome, bad, valid, expected):
    """A numpy scalar must give what its Python value gives, holding no numpy scalar that it would not."""
    if digest(outcome.result, loose=True) != digest(expected, loose=True):
        return Outcome("fail", f"{bad.label} gives another result than the Python value {valid!r}")
    if digest(outcome.result) != digest(expected):
        return Outcome("fail", f"keeps the {bad.label} in its result/state where {valid!r} gives a Python "
                               f"number (numpy scalars upcast float32 arrays)")
    return outcome


def _to_torch(value):
    if isinstance(value, np.ndarray):
        return torch.from_numpy(value.copy())
    if isinstance(value, tuple) and any(isinstance(v, np.ndarray) for v in value):
        return tuple(_to_torch(v) for v in value)
    return value


def _on_torch(factory):
    """The example with its numpy arrays as torch tensors; None when it has no array."""
    kwargs = factory()
    if not any(isinstance(v, np.ndarray) or (isinstance(v, tuple) and any(isinstance(i, np.ndarray) for i in v))
               for v in kwargs.values()):
        return None
    return lambda: {k: _to_torch(v) for k, v in factory().items()}


def _runs(obj, sig, factory):
    """True when the example runs as it is (a torch version of a numpy example may not: models are numpy)."""
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), \
                contextlib.redirect_stderr(io.StringIO()):
            warnings.simplefilter("ignore")
            _call(obj, factory(), sig)
        return True
    except Exception:   # noqa: BLE001 -- not a torch example then
        return False


def _array_bad_values_only(valid):
    """The array variants, as torch tensors when ``valid`` is one (the numpy one becomes the mix)."""
    if not _is_array(valid):
        return []
    values = array_bad_values(valid)
    if isinstance(valid, torch.Tensor):
        for bad in values:
            if bad.label == "torch tensor":
                bad.label = "numpy array"
            elif isinstance(bad.value, (np.ndarray, np.generic)):
                bad.value = torch.from_numpy(np.ascontiguousarray(bad.value))
    return values


def _example_is_valid(report, qualname, obj, sig, factory):
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            _call(obj, factory(), sig)
    except NotImplementedError:
        report.skipped.append(f"{qualname} (abstract base class)")
        return False
    except Exception:   # noqa: BLE001 -- judged below
        pass
    outcome = judge(qualname, "-", Bad("valid", None, must_accept=True), lambda: _call(obj, factory(), sig))
    if outcome.kind != "result":
        report.bad_examples.append(f"{qualname}: the valid example fails: {outcome.detail}")
        return False
    return True


@pytest.fixture(scope="module")
def memory_guard():
    """Refuse allocations beyond a few GiB for the duration of the fuzz test (they are failures)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    with open("/proc/self/statm") as f:
        used = int(f.read().split()[0]) * resource.getpagesize()
    limit = used + MEMORY_GUARD_BYTES
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
    yield
    resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


@pytest.fixture
def sandbox(tmp_path, monkeypatch):
    """Run in an empty folder, with the data folders there too: fuzzed paths ("abc") write nowhere else."""
    from nnopt_lab import datasets
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(datasets, "DATA_DIR", tmp_path / "data")
    monkeypatch.setattr(datasets, "CACHE_DIR", tmp_path / "data" / "cache")
    return tmp_path


def test_every_public_callable_refuses_bad_arguments_clearly(memory_guard, sandbox, capsys):
    report = Report()
    all_targets, report.no_example, report.skipped = targets()
    only = [part for part in os.environ.get("FUZZ_ONLY", "").split(",") if part]   # to narrow a local run
    if only:
        all_targets = [t for t in all_targets if any(part in t[0] for part in only)]
        report.no_example = [q for q in report.no_example if any(part in q for part in only)]
    report.callables = len(all_targets)
    torch.set_num_threads(1)
    start = time.perf_counter()
    for qualname, obj, sig, factory in all_targets:
        t0 = time.perf_counter()
        fuzz_target(report, qualname, obj, sig, factory)
        report.seconds[qualname] = time.perf_counter() - t0
    for qualname, obj, sig, factory in all_targets:      # the same with the example's arrays on torch
        torch_factory = _on_torch(factory)
        if torch_factory is not None and _runs(obj, sig, torch_factory):
            report.torch_callables += 1
            fuzz_target(report, qualname + "[torch]", obj, sig, torch_factory, values_for=_array_bad_values_only)
    _run_hypothesis(report, all_targets)
    seconds = time.perf_counter() - start
    with capsys.disabled():
        print("\n" + report.summary() + f" in {seconds:.0f} s")
        for line in report.skipped:
            print("  skipped:", line)
        slowest = sorted(report.seconds.items(), key=lambda kv: -kv[1])[:8]
        print("  slowest:", ", ".join(f"{q.replace('nnopt_lab.', '')} {t:.1f} s" for q, t in slowest))
        for line in report.no_example:
            print("  no example (add one to _examples):", line)
    problems = report.bad_examples + [f"no example: {q}" for q in report.no_example] + report.failures
    if os.environ.get("FUZZ_REPORT"):
        with open(os.environ["FUZZ_REPORT"], "w") as f:
            f.write("\n".join([report.summary() + f" in {seconds:.0f} s"] + problems) + "\n")
    assert not problems, report.summary() + "\n" + "\n".join(problems)


# ----------------------------------------------------------------------------- random extra cases
def _random_value():
    numbers = st.one_of(st.integers(-2 ** 70, 2 ** 70), st.floats(allow_nan=True, allow_infinity=True),
                        st.sampled_from([np.int64(3), np.float32(0.5), np.float64(-2.0), np.bool_(True)]))
    shapes = st.lists(st.integers(0, 3), min_size=0, max_size=4).map(tuple)
    arrays = st.tuples(shapes, st.sampled_from(["float64", "float32", "int64", "uint8", "bool"]),
                       st.sampled_from(["numpy", "torch"]), st.booleans()).map(_make_array)
    others = st.sampled_from([None, "", "abc", (), [], {}, (1, 2), (0, -1), [1.5]])
    return st.one_of(numbers, arrays, others)


def _make_array(spec):
    shape, dtype, kind, with_nan = spec
    a = np.asarray(np.random.default_rng(len(shape)).standard_normal(shape) * 3).astype(dtype)
    if with_nan and a.size and a.dtype.kind == "f":
        a.reshape(-1)[0] = math.nan
    return torch.from_numpy(a) if kind == "torch" else a


def _run_hypothesis(report, all_targets):
    def fuzzed(qualname, name):
        only = next((names for prefix, names in ONLY_PARAMS.items() if qualname.startswith(prefix)), None)
        return only is None or name in only

    cases = [(q, o, s, f, n) for q, o, s, f in all_targets for n, p in s.parameters.items()
             if p.kind != p.VAR_KEYWORD and not _fails_example(report, q) and fuzzed(q, n)]

    @settings(max_examples=300, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    @given(case=st.sampled_from(cases), value=_random_value())
    def one(case, value):
        qualname, obj, sig, factory, name = case
        nan_in = _is_array(value) and has_nan(value)
        bad = Bad(f"random {_short(repr(value), 40)}", value, has_nan=nan_in)

        def call():
            kwargs = factory()
            kwargs[name] = value
            return _call(obj, kwargs, sig)
        report.add(qualname, name, bad, judge(qualname, name, bad, call))

    one()


def _fails_example(report, qualname):
    return any(line.startswith(qualname + ":") for line in report.bad_examples)
