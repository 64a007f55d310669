"""nnopt_lab.measure: parameters, bytes, FLOPs (vs torch FlopCounterMode), activation memory, latency."""
import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from nnopt_lab import backend as B
from nnopt_lab import measure as M
from nnopt_lab import models
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


def test_count_nonzero_parameters():
    model = models.mlp((4, 3, 2))
    w = model[0]._params["weight"]
    w.data = w.data * B.asarray([[1.0, 0.0, 1.0, 0.0]] * 3, w.data)     # 6 of 12 zeroed
    assert M.count_parameters(model, nonzero=True) == (4 * 3 + 3 + 3 * 2 + 2) - 6


@pytest.mark.parametrize("dtype,expected", [("float64", 60080), ("float32", 30040), ("float16", 15020),
                                            ("bfloat16", 15020), ("int8", 7510), ("int4", 3755),
                                            ("binary", 939), (3, 2817)])
def test_model_bytes(dtype, expected):
    # 7510 parameters × bits / 8, rounded up: 7510 * 3 / 8 = 2816.25 -> 2817, 7510 / 8 = 938.75 -> 939
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
    for bad in [(0,), (), "64", (8.0,)]:
        with pytest.raises(ValueError, match="input_shape must be a non-empty tuple of positive ints"):
            M.flops(model, bad)
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


@pytest.mark.parametrize("kwargs,match", [({"warmup": -1}, "warmup must be an int >= 0, got -1"),
                                          ({"repeats": 0}, "repeats must be an int >= 1, got 0"),
                                          ({"repeats": 2.5}, "repeats must be an int >= 1, got 2.5")])
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
