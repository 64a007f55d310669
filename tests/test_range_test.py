"""The learning-rate range test (training/range_test.py) and the snapshot it restores the model with
(training/snapshot.py)."""
import numpy as np
import pytest

from nnopt_lab import backend as B
from nnopt_lab import models
from nnopt_lab.training import lr_range_test, preserved
from nnopt_lab.training import range_test as RT


def tiny_data(backend, n=96, d=6, seed=1):
    g = np.random.default_rng(seed)
    x = g.standard_normal((n, d))
    y = (x[:, 0] + 0.5 * x[:, 1] > 0).astype("int64") + (x[:, 2] > 1).astype("int64")
    return B.to_backend(x, backend), B.to_backend(y, backend)


def bad(exc, match, fn):
    with pytest.raises(exc, match=match):
        fn()


def test_range_test_finds_a_rate_below_divergence_and_leaves_the_model_alone(backend_name):
    be = B.get_backend(backend_name, "float64")
    x, y = tiny_data(be, n=256)
    B.seed(0)
    model = models.mlp((6, 16, 3), backend=be)
    before = {k: B.to_numpy(v).copy() for k, v in model.state_dict().items()}
    res = lr_range_test(model, (x, y), lr_min=1e-4, lr_max=100.0, steps=120, batch_size=32)
    for k, v in model.state_dict().items():
        assert np.array_equal(B.to_numpy(v), before[k]), f"{k} changed"
    assert res.diverged and res.lrs[-1] < 100.0
    assert len(res.lrs) == len(res.losses) == len(res.raw_losses)
    ratios = [b / a for a, b in zip(res.lrs, res.lrs[1:])]
    assert max(ratios) / min(ratios) - 1 < 1e-9                       # geometric spacing
    assert 1e-4 < res.steepest_lr < res.min_loss_lr < res.lrs[-1]
    assert res.suggested_lr == res.steepest_lr
    i_min = res.losses.index(min(res.losses))
    assert res.losses[i_min] < 0.9 * res.losses[0]                    # the loss did fall
    res10 = lr_range_test(lambda: models.mlp((6, 16, 3), backend=be), (x, y), 1e-4, 100.0, 120, 32,
                            rule="min/10")
    assert res10.suggested_lr == pytest.approx(res10.min_loss_lr / 10)


def test_range_test_bad_arguments():
    x, y = tiny_data(B.get_backend("numpy", "float64"))
    factory = lambda: models.mlp((6, 4, 3))  # noqa: E731
    bad(ValueError, r"lr_min must be < lr_max, got lr_min=0.01 and lr_max=0.001",
        lambda: lr_range_test(factory, (x, y), 0.01, 0.001))
    bad(ValueError, r"steps must be an int in \[2, 1000000\]", lambda: lr_range_test(factory, (x, y), steps=2 ** 62))
    bad(TypeError, r"loss_fn must be a loss object", lambda: lr_range_test(factory, (x, y), loss_fn="ce"))
    bad(TypeError, r"optimizer must be callable", lambda: lr_range_test(factory, (x, y), optimizer=3))
    bad(ValueError, r"rule must be one of \('steepest', 'min/10'\), got 'valley'",
        lambda: lr_range_test(factory, (x, y), rule="valley"))
    bad(ValueError, r"smooth must be .* got 1.0", lambda: lr_range_test(factory, (x, y), smooth=1.0))
    bad(TypeError, r"model must be a Module or a callable", lambda: lr_range_test(3, (x, y)))


def test_range_test_lives_in_its_own_module_and_restores_mode_buffers_and_grads(backend_name):
    be = B.get_backend(backend_name, "float64")
    x, y = tiny_data(be, n=128)
    model = models.mlp((6, 8, 3), batchnorm=True, backend=be)
    assert RT.lr_range_test is lr_range_test
    model.eval()
    grads = [B.asarray(np.full(p.shape, 0.5), p.data) for p in model.parameters()]
    for p, g in zip(model.parameters(), grads):
        p.grad = g
    before = {k: B.to_numpy(v).copy() for k, v in model.state_dict().items()}
    lr_range_test(model, (x, y), lr_min=1e-4, lr_max=10.0, steps=30, batch_size=16)
    assert not any(m.training for m in model.modules())
    for k, v in model.state_dict().items():                 # running statistics included
        np.testing.assert_array_equal(B.to_numpy(v), before[k], err_msg=k)
    for p in model.parameters():
        np.testing.assert_array_equal(B.to_numpy(p.grad), np.full(p.shape, 0.5))


# ----------------------------------------------------------------------------- preserved
def test_preserved_restores_everything_even_after_an_error(backend_name):
    be = B.get_backend(backend_name, "float64")
    model = models.mlp((4, 5, 3), batchnorm=True, backend=be)
    first = model.parameters()[0]
    first.mask = B.asarray(np.ones(first.shape), first.data)
    model[1].training = False                                 # a sub-module in another mode than the root
    snapshot = {k: B.to_numpy(v).copy() for k, v in model.state_dict().items()}
    modes = [m.training for m in model.modules()]
    x = B.asarray(np.random.default_rng(0).standard_normal((8, 4)), first.data)
    model.forward(x)
    model.backward(B.asarray(np.ones((8, 3)), first.data))
    grads = [B.to_numpy(p.grad).copy() for p in model.parameters()]
    with pytest.raises(RuntimeError, match="inside"):
        with preserved(model):
            for p in model.parameters():
                p.data *= 0.0                                 # in place
                p.grad *= 3.0                                 # in place, as clipping does
                p.requires_grad = False
            first.mask = None
            model.train()
            model.forward(x * 10)                             # moves BatchNorm's running statistics
            raise RuntimeError("inside")
    for k, v in model.state_dict().items():
        np.testing.assert_array_equal(B.to_numpy(v), snapshot[k], err_msg=k)
    assert [m.training for m in model.modules()] == modes
    assert all(p.requires_grad for p in model.parameters()) and first.mask is not None
    for p, g in zip(model.parameters(), grads):
        np.testing.assert_array_equal(B.to_numpy(p.grad), g)


def test_preserved_can_keep_only_the_mode():
    model = models.mlp((4, 3))
    w = model.parameters()[0]
    w0 = B.to_numpy(w.data).copy()
    with preserved(model, weights=False, grads=False):
        model.eval()
        w.data = w.data + 1.0
    assert model.training
    np.testing.assert_array_equal(B.to_numpy(w.data), w0 + 1.0)     # weights were not asked for
    bad(TypeError, "model must be an nnopt_lab Module, got int", lambda: preserved(3).__enter__())
    bad(TypeError, "weights must be a bool, got 1", lambda: preserved(model, weights=1).__enter__())
