"""nnopt_lab.measure: parameters, bytes, FLOPs (vs torch FlopCounterMode), activation memory, latency."""
import math

import numpy as np
import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from nnopt_lab import backend as B
from nnopt_lab import measure as M
from nnopt_lab import models
from nnopt_lab import nn
from nnopt_lab.nn import Linear
from nnopt_lab.reference import torch_twin


# ----------------------------------------------------------------------------- size
def test_count_parameters_by_hand(backend_name):
    model = models.mlp((64, 100, 10), backend=backend_name)
    assert M.count_parameters(model) == 64 * 100 + 100 + 100 * 10 + 10 == 7510
    twin = torch_twin(model)
    assert M.count_parameters(model) == sum(p.numel() for p in twin.parameters())
    model[2]._params["bias"].requires_grad = False
    assert M.count_parameters(model, trainable_only=True) == 7500


def test_count_nonzero_parameters(backend_name):
    model = models.mlp((4, 3, 2), backend=backend_name)
    w = model[0]._params["weight"]
    w.data = w.data * B.asarray([[1.0, 0.0, 1.0, 0.0]] * 3, w.data)     # 6 of 12 zeroed
    assert M.count_parameters(model, nonzero=True) == (4 * 3 + 3 + 3 * 2 + 2) - 6
    assert M.model_bytes(model, "int8", nonzero=True) == 23 - 6
    assert M.summary(model, (4,)).total_macs == 4 * 3 + 3 * 2


@pytest.mark.parametrize("dtype,expected", [("float64", 60080), ("float32", 30040), ("float16", 15020),
                                            ("bfloat16", 15020), ("int8", 7510), ("int4", 3755),
                                            ("binary", 940), (3, 2817), (np.int64(8), 7510)])
def test_model_bytes(dtype, expected):
    # each layer's 6500 and 1010 parameters × bits / 8, rounded up to whole bytes per layer:
    # 3 bits: 2437.5 -> 2438 plus 378.75 -> 379 = 2817; 1 bit: 812.5 -> 813 plus 126.25 -> 127 = 940
    assert M.model_bytes(models.mlp((64, 100, 10)), dtype) == expected


@pytest.mark.parametrize("dtype,match", [("int3", "dtype must be one of"), (0, "dtype as bits must be in 1..64, got 0"),
                                         (True, "dtype must be one of")])
def test_model_bytes_bad_dtype(dtype, match):
    with pytest.raises(ValueError, match=match):
        M.model_bytes(models.mlp((4, 2)), dtype)


def test_bad_model():
    with pytest.raises(TypeError, match="model must be an nnopt_lab.nn Module, got Linear"):
        M.count_parameters(torch.nn.Linear(2, 2))


# ----------------------------------------------------------------------------- compute
def _torch_flops(model, input_shape):
    twin = torch_twin(model, dtype="float32").eval()
    with FlopCounterMode(display=False) as counter:
        twin(torch.zeros((1,) + input_shape))
    return counter.get_total_flops(), counter.get_flop_counts()


@pytest.mark.parametrize("build,input_shape", [
    (lambda: models.mlp((64, 100, 10)), (64,)),
    (lambda: models.mlp((784, 300, 100, 10)), (784,)),
    (lambda: models.small_cnn(), (1, 8, 8)),
    (lambda: models.small_cnn(channels=(4, 8, 8), image_size=8, batchnorm=True), (1, 8, 8)),
    (lambda: models.mlp((64, 32, 10), dropout=0.5, batchnorm=True), (64,)),
])
def test_flops_match_torch_flop_counter(build, input_shape):
    model = build()
    ours = M.flops(model, input_shape)
    total, per_module = _torch_flops(model, input_shape)
    assert ours.total_flops == total
    assert ours.total_macs * 2 == total
    for row in ours.rows:                  # per layer too, where torch counted anything
        counted = sum(per_module.get(f"Sequential.{row.name}", {}).values())
        assert row.flops == counted, row


def test_flops_table_shapes_and_batch():
    model = models.small_cnn()
    s = M.summary(model, (1, 8, 8), batch_size=3)
    assert [r.output_shape for r in s.rows][:3] == [(3, 16, 8, 8), (3, 16, 8, 8), (3, 16, 4, 4)]
    # conv1 by hand: 3 images × 8·8 positions × 16 out channels × (1·3·3) weights
    assert s.rows[0].macs == 3 * 8 * 8 * 16 * 9 and s.rows[0].flops == 2 * s.rows[0].macs
    assert s.total_params == M.count_parameters(model) == 6090
    assert s.total_param_bytes == 4 * 6090
    text = str(s)
    assert "Conv2d" in text and "total" in text and "168,448" in M.summary(model, (1, 8, 8)).table()


def test_summary_leaves_model_mode_and_bad_shapes():
    model = models.mlp((8, 4, 2), batchnorm=True, dropout=0.5)
    state = B.rng().bit_generator.state
    M.summary(model, (8,))
    assert model.training and B.rng().bit_generator.state == state   # no dropout draw, mode restored
    assert float(B.to_numpy(model[1]._buffers["num_batches_tracked"])) == 0
    for bad in [(0,), (), (8.0,), (8, -1)]:
        with pytest.raises(ValueError, match=r"input_shape must be .*int.* >= 1.*\(one sample, no batch axis"):
            M.flops(model, bad)
    for bad in ["64", None, 8.0]:
        with pytest.raises(TypeError, match="input_shape must be an int or a tuple of ints"):
            M.summary(model, bad)
    with pytest.raises(ValueError, match="batch_size must be an int >= 1, got 0"):
        M.summary(model, (8,), batch_size=0)


# ----------------------------------------------------------------------------- memory
def test_activation_memory_mlp_by_hand():
    model = models.mlp((4, 3, 2))                  # Linear(4,3) ReLU Linear(3,2)
    m = M.activation_memory(model, (4,))
    # float32 bytes: input 4·4=16, Linear 3·4=12, ReLU 12, Linear 2·4=8
    assert m.inference_peak_bytes == max(16 + 12, 12 + 12, 12 + 8) == 28
    assert m.training_bytes == 16 + 12 + 12 + 8 == 48
    m5 = M.activation_memory(model, (4,), dtype="int8", batch_size=5)
    assert m5.inference_peak_bytes == 5 * 4 + 5 * 3 and m5.training_bytes == 5 * (4 + 3 + 3 + 2)


def test_activation_memory_cnn_by_hand():
    model = models.small_cnn(in_channels=1, image_size=4, channels=(2,), num_classes=3)
    m = M.activation_memory(model, (1, 4, 4))
    # input 16 el → 64 B; conv (2,4,4) 128 B; relu 128 B; pool (2,2,2) 32 B; flatten 32 B; linear 3 → 12 B
    assert m.per_layer_output_bytes == (128, 128, 32, 32, 12)
    assert m.inference_peak_bytes == 256
    assert m.training_bytes == 64 + 128 + 128 + 32 + 32 + 12


# ----------------------------------------------------------------------------- latency
def test_latency_counts_and_order():
    calls = []
    result = M.latency(lambda a, b: calls.append(a + b), 1, 2, warmup=2, repeats=7)
    assert len(calls) == 9 and calls[0] == 3
    assert len(result.samples) == 7 and all(s > 0 for s in result.samples)
    assert result.min <= result.median <= result.max and result.iqr >= 0 and result.std >= 0
    assert "ms" in str(result)
    one = M.latency(lambda: None, warmup=0, repeats=1)
    assert len(one.samples) == 1 and one.iqr == 0.0


@pytest.mark.parametrize("kwargs,match", [({"warmup": -1}, r"warmup must be an int in \[0, 1000000\], got -1"),
                                          ({"repeats": 0}, r"repeats must be an int in \[1, 1000000\], got 0"),
                                          ({"repeats": 2.5}, r"repeats must be an int in \[1, 1000000\], got 2.5"),
                                          ({"repeats": 2 ** 62}, "repeats must be an int in")])
def test_latency_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        M.latency(lambda: None, **kwargs)
    with pytest.raises(TypeError, match="fn must be callable, got int"):
        M.latency(3)


def test_measure_model_latency(backend_name):
    model = models.mlp((64, 32, 10))
    result = M.measure_model_latency(model, (64,), batch_size=4, backend=backend_name, warmup=1, repeats=5)
    assert len(result.samples) == 5 and result.median > 0
    assert B.backend_of(model[0]._params["weight"].data).name == "numpy"     # the model was not moved
    assert model.training
    assert isinstance(model[0], Linear)


# ----------------------------------------------------------------------------- each layer reports its own cost
class PackedLinear(nn.Linear):
    """A layer that stores its weight as 2-bit codes plus one float32 scale per output row, and
    skips half its multiplications: it says so through macs and parameter_bytes."""

    def macs(self, in_shape, out_shape):
        return super().macs(in_shape, out_shape) // 2

    def parameter_bytes(self, bits=None, nonzero=False):
        return (self.in_features * self.out_features * 2 + 7) // 8 + 4 * self.out_features


class Counter(nn.Module):
    """No weights, yet 7 multiply-accumulates per input value and 3 bytes of own storage."""

    def forward(self, x):
        return x

    def macs(self, in_shape, out_shape):
        return 7 * math.prod(in_shape)

    def parameter_bytes(self, bits=None, nonzero=False):
        return 3


def test_custom_layers_are_reported_as_they_say():
    model = nn.Sequential(PackedLinear(8, 4), Counter(), nn.ReLU(), nn.Linear(4, 2))
    s = M.summary(model, (8,), batch_size=5)
    packed, counter, relu, linear = s.rows
    assert packed.macs == 5 * 8 * 4 // 2 and packed.param_bytes == (32 * 2 + 7) // 8 + 16 == 24
    assert packed.params == 36                                   # the parameters it holds, counted
    assert counter.macs == 7 * 5 * 4 and counter.param_bytes == 3 and counter.params == 0
    assert relu.macs == 0 and linear.macs == 5 * 4 * 2 and linear.param_bytes == 4 * 10
    assert s.total_macs == 80 + 140 + 40 and s.total_flops == 2 * s.total_macs
    assert s.total_param_bytes == 24 + 3 + 40 == M.model_bytes(model)
    assert M.flops(model, (8,)).total_macs == 16 + 28 + 8
    assert M.model_bytes(model, "int8") == 24 + 3 + 10          # the custom ones ignore the storage type


def test_layer_with_a_bad_macs_is_named():
    class Broken(Counter):
        def macs(self, in_shape, out_shape):
            return 2.5
    with pytest.raises(TypeError, match=r"layer 1 \(Broken\)\.macs returned 2\.5; it must return an int >= 0"):
        M.summary(nn.Sequential(nn.Linear(2, 2), Broken()), (2,))


def test_shared_layer_counts_once():
    shared = nn.Linear(4, 4)
    model = nn.Sequential(shared, nn.ReLU(), shared)
    s = M.summary(model, (4,))
    assert [r.params for r in s.rows] == [20, 0, 0] and s.total_macs == 2 * 16    # stored once, run twice
    assert M.count_parameters(model) == 20 == sum(p.numel() for p in torch.nn.Sequential(
        torch.nn.Linear(4, 4)).parameters())
    assert M.model_bytes(model) == 80 == s.total_param_bytes


def test_model_bytes_as_stored_and_nonzero():
    model = models.mlp((4, 3, 2), backend=B.get_backend("numpy", "float64"))
    assert M.model_bytes(model, None) == 8 * (15 + 8)
    assert M.summary(model, (4,), dtype=None).total_param_bytes == 8 * 23
    assert "bytes (as stored)" in str(M.summary(model, (4,), dtype=None))
    w = model[0]._params["weight"]
    w.data = w.data * B.asarray([[1.0, 0.0, 1.0, 0.0]] * 3, w.data)
    assert M.model_bytes(model, "int8", nonzero=True) == 23 - 6


def test_grouped_conv_macs_match_torch_flop_counter():
    model = nn.Sequential(nn.Conv2d(4, 4, 3, padding=1, groups=4), nn.ReLU(), nn.Conv2d(4, 8, 1),
                          nn.Conv2d(8, 6, (3, 1), stride=(2, 1), groups=2))
    ours = M.flops(model, (4, 9, 7), batch_size=2)
    twin = torch_twin(model).eval()
    with FlopCounterMode(display=False) as counter:
        twin(torch.zeros((2, 4, 9, 7)))
    assert ours.total_flops == counter.get_total_flops() > 0
    assert ours.rows[0].macs == 2 * 4 * 9 * 7 * 1 * 9             # depthwise: one input channel per output


# ----------------------------------------------------------------------------- arguments named as the caller's
def test_summary_names_input_shape_when_a_layer_refuses_it():
    with pytest.raises(ValueError, match=r"input_shape \(32,\) does not fit the model: layer 0 \(Linear\)"):
        M.summary(models.mlp((64, 10)), (32,))
    with pytest.raises(ValueError, match=r"input_shape \(3, 8, 8\) does not fit the model: layer 0 \(Conv2d\)"):
        M.activation_memory(models.small_cnn(), (3, 8, 8))


def test_numpy_numbers_accepted():
    model = models.mlp((8, 4, 2))
    s = M.summary(model, (np.int64(8),), dtype=np.int64(16), batch_size=np.int32(2))
    assert s.rows[0].output_shape == (2, 4) and s.total_param_bytes == 2 * 46
    assert M.summary(model, np.int64(8)).input_shape == (8,)
    assert M.activation_memory(model, (8,), batch_size=np.int64(3)).batch_size == 3
    assert len(M.latency(lambda: None, warmup=np.int64(0), repeats=np.int64(2)).samples) == 2


@pytest.mark.parametrize("call,error,match", [
    (lambda m: M.count_parameters(m, trainable_only=1), TypeError, "trainable_only must be a bool, got 1"),
    (lambda m: M.count_parameters(m, nonzero="yes"), TypeError, "nonzero must be a bool"),
    (lambda m: M.model_bytes(m, nonzero=None), TypeError, "nonzero must be a bool"),
    (lambda m: M.model_bytes(m, "int3"), ValueError, "dtype must be one of"),
    (lambda m: M.summary(m, (8,), dtype=65), ValueError, "dtype as bits must be in 1..64, got 65"),
    (lambda m: M.activation_memory(m, (8,), dtype=None), ValueError, "dtype must be one of"),
    (lambda m: M.activation_memory(m, (8,), batch_size=1.5), ValueError, "batch_size must be an int >= 1"),
    (lambda m: M.summary("model", (8,)), TypeError, "model must be an nnopt_lab.nn Module, got str"),
    (lambda m: M.latency(lambda: None, sync=1), TypeError, "sync must be a bool, got 1"),
    (lambda m: M.latency(lambda a: None, 1, 2), TypeError, r"args \(1, 2\) do not fit fn\(a\): too many"),
    (lambda m: M.latency(lambda a, b: None, 1), TypeError, r"args \(1,\) do not fit fn\(a, b\)"),
    (lambda m: M.latency(lambda: None, warmup="3"), TypeError, "warmup must be an int in"),
    (lambda m: M.measure_model_latency(m, (8,), repeats=0), ValueError, "repeats must be an int in .*, got 0"),
    (lambda m: M.measure_model_latency(m, (8,), warmup=2 ** 62), ValueError, "warmup must be an int in"),
    (lambda m: M.summary(m, (8,), batch_size=2 ** 62), ValueError,
     r"batch_size 4611686018427387904 with input_shape \(8,\) makes a batch of .* cannot be allocated"),
    (lambda m: M.activation_memory(m, (2 ** 40, 2 ** 40)), ValueError, "input_shape .* cannot be allocated"),
    (lambda m: M.measure_model_latency(m, (8,), backend=3), TypeError, "backend must be a str or Backend"),
    (lambda m: M.measure_model_latency(m, (8,), backend="gpu"), ValueError, "backend must be one of"),
    (lambda m: M.measure_model_latency(m, (9,)), ValueError, r"input_shape \(9,\) does not fit the model"),
])
def test_bad_arguments_are_named(call, error, match):
    with pytest.raises(error, match=match):
        call(models.mlp((8, 4, 2)))


# ----------------------------------------------------------------------------- CSR storage: one formula
@pytest.mark.parametrize("value_dtype", [np.float32, np.float64, np.int8])
@pytest.mark.parametrize("index_dtype", [np.int32, np.int64])
def test_csr_bytes_equal_scipy_csr_arrays(value_dtype, index_dtype):
    import scipy.sparse as sp

    rng = np.random.default_rng(0)
    for rows, cols, sparsity in ((1, 1, 0.0), (7, 5, 0.5), (30, 40, 0.9), (4, 9, 1.0)):
        dense = (rng.standard_normal((rows, cols)) * (rng.random((rows, cols)) >= sparsity)).astype(value_dtype)
        m = sp.csr_matrix(dense)
        m.indices, m.indptr = m.indices.astype(index_dtype), m.indptr.astype(index_dtype)
        want = m.data.nbytes + m.indices.nbytes + m.indptr.nbytes
        bits = (8 * np.dtype(value_dtype).itemsize, 8 * np.dtype(index_dtype).itemsize)
        assert M.csr_bytes(rows, cols, m.nnz, *bits) == want
    # row pointers of another width than the column indices: each array at its own width
    assert M.csr_bytes(3, 4, 5, 32, 16, pointer_bits=64) == 5 * 4 + 5 * 2 + 4 * 8
    assert M.csr_bytes(3, 4, 5, 3, 5) == math.ceil((5 * 3 + 5 * 5 + 4 * 5) / 8)      # packed bits, rounded up
    assert M.csr_bytes(0, 4, 0) == 4                                                 # an empty matrix: one pointer


def test_csr_bytes_is_the_one_formula(monkeypatch, be64):
    """CSRMatrix.nbytes and the pruning widget's csr_bytes / storage_bytes all ask measure.csr_bytes."""
    from nnopt_lab.inference import sparse as S
    from nnopt_lab.widgets import pruning as wp

    w = B.to_backend(np.array([[1.0, 0.0, 2.0], [0.0, 0.0, 3.0]]), be64)
    csr = S.csr_from_dense(w)
    assert csr.nbytes == M.csr_bytes(2, 3, 3, 64, 32) == 3 * 8 + 3 * 4 + 3 * 4 == wp.csr_bytes(2, 3, 3, 64, 32)
    calls = []
    monkeypatch.setattr(M, "csr_bytes", lambda *args: calls.append(args) or 1000 + len(calls))
    assert csr.nbytes == 1001 and calls[-1] == (2, 3, 3, 64, 32, 32)
    assert wp.csr_bytes(2, 3, 3, 64, 32) == 1002 and calls[-1] == (2, 3, 3, 64, 32)
    model = models.mlp((3, 2), backend=be64)
    assert wp.storage_bytes(model)["csr"] == 1003 + 2 * 4          # the weight through the formula, the bias dense


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(rows=2, cols=3, nnz=7), ValueError, r"nnz must be an int in \[0, 6\], got 7: a \(rows, cols\) = \(2, 3\)"),
    (dict(rows=-1, cols=3, nnz=0), ValueError, "rows"),
    (dict(rows=2, cols=3.5, nnz=0), ValueError, r"cols must be an int >= 0, got 3.5"),
    (dict(rows=2, cols=3, nnz=1, value_bits=0), ValueError, "value_bits"),
    (dict(rows=2, cols=3, nnz=1, pointer_bits="int32"), TypeError, "pointer_bits"),
])
def test_csr_bytes_bad_arguments_are_named(kwargs, error, match):
    with pytest.raises(error, match=match):
        M.csr_bytes(**kwargs)


# ----------------------------------------------------------------------------- models without parameters
def test_a_bias_less_sparse_linear_is_measured_where_its_weights_live(be64):
    """SparseLinear keeps its weights as buffers: without a bias the model has no parameter at all,
    and the batch used to be made on the active backend (numpy float32), which the layer refused."""
    import scipy.sparse as sp
    from nnopt_lab.inference import sparse as S

    dense = np.array([[1.0, 0.0, 2.0, 0.0], [0.0, 0.0, 3.0, 0.0], [0.0, -1.0, 0.0, 4.0]])
    model = nn.Sequential(S.SparseLinear(S.csr_from_dense(B.to_backend(dense, be64))), nn.ReLU())
    assert model.parameters() == []
    s = M.summary(model, (4,), dtype=None, batch_size=3)
    assert s.total_macs == 3 * sp.csr_matrix(dense).nnz == 15 and s.rows[0].output_shape == (3, 3)
    assert s.total_param_bytes == 5 * 8 + 5 * 4 + 4 * 4                # float64 values, int32 indices, as stored
    assert M.activation_memory(model, (4,), batch_size=3).per_layer_output_bytes == (36, 36)
    result = M.measure_model_latency(model, (4,), batch_size=3, warmup=0, repeats=2)
    assert len(result.samples) == 2
    assert M._model_backend(model) == be64
    empty = nn.Sequential(nn.ReLU())                                     # nothing stored: the active backend
    assert M._model_backend(empty) == B.active()
