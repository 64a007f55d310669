"""Batch-size tools: throughput, gradient noise (against torch autograd), the linear scaling rule
with warm-up (against torch's LinearLR), batch-size schedules and their update counts, the
explorer's arithmetic and the chapter 4.2 exercise checkers."""
import math
import warnings

import numpy as np
import pytest
import torch

from nnopt_lab import backend as B
from nnopt_lab import models
from nnopt_lab.exercises import batch_size as ex
from nnopt_lab.reference import torch_twin
from nnopt_lab.testing import compare
from nnopt_lab.training import SGD, fit
from nnopt_lab.training import batch_size as BS
from nnopt_lab.training.schedules import LRProbe
from nnopt_lab.widgets.batch_size import batch_tradeoff


def blobs(backend, n=400, d=8, k=4, seed=2):
    """Four overlapping Gaussian classes (so gradients stay non-zero)."""
    g = np.random.default_rng(seed)
    y = g.integers(0, k, n)
    x = g.standard_normal((n, d)) + 1.5 * np.eye(k, d)[y]
    return B.to_backend(x, backend), B.to_backend(y.astype("int64"), backend)


# ----------------------------------------------------------------------------- scaling rule
def test_linear_scaling_rule_arithmetic():
    assert BS.linear_scaling_rule(0.1, 256, 8192) == pytest.approx(3.2, rel=1e-15)
    assert BS.linear_scaling_rule(0.05, 32, 16) == pytest.approx(0.025, rel=1e-15)
    assert BS.linear_scaling_rule(0.2, 64, 64) == 0.2
    with pytest.raises(ValueError, match=r"^base_lr must be a finite number in \[0, inf\), got -0.1"):
        BS.linear_scaling_rule(-0.1, 32, 64)
    with pytest.raises(TypeError, match=r"optimizer must have a float attribute 'lr'"):
        BS.linear_scaling_warmup(None, 0.1, 32, 64, 10)
    with pytest.raises(TypeError, match=r"milestones must be a sequence"):
        BS.BatchSizeSchedule(8, milestones=3)
    with pytest.raises(ValueError, match=r"base_batch must be an int >= 1, got 0"):
        BS.linear_scaling_rule(0.1, 0, 64)
    with pytest.raises(ValueError, match=r"batch must be an int >= 1, got 12.5"):
        BS.linear_scaling_rule(0.1, 32, 12.5)


def test_linear_scaling_warmup_matches_torch_linear_lr():
    probe = LRProbe(0.1)
    sched = BS.linear_scaling_warmup(probe, base_lr=0.1, base_batch=32, batch=512, warmup_steps=25)
    ours = []
    for _ in range(300):
        ours.append(probe.lr)
        sched.step()
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1 * 512 / 32)
    tsched = torch.optim.lr_scheduler.LinearLR(opt, start_factor=32 / 512, end_factor=1.0, total_iters=25)
    ref = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for _ in range(300):
            ref.append(opt.param_groups[0]["lr"])
            opt.step()
            tsched.step()
    compare(ours, ref, "linear_scaling_warmup vs torch LinearLR", rtol=1e-12, quiet=True)
    assert ours[0] == pytest.approx(0.1, rel=1e-14) and ours[-1] == pytest.approx(1.6, rel=1e-14)


# ----------------------------------------------------------------------------- gradient noise
def test_full_gradient_matches_torch_autograd(be64):
    x, y = blobs(be64)
    B.seed(1)
    model = models.mlp((8, 16, 4), backend=be64)
    twin = torch_twin(model)
    ours = BS.full_gradient(model, (x, y), chunk=96)           # chunks of unequal size: 4×96 + 16
    loss = torch.nn.functional.cross_entropy(twin(torch.as_tensor(B.to_numpy(x))), torch.as_tensor(B.to_numpy(y)))
    ref = torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss, list(twin.parameters()))])
    compare(ours, ref, "full-batch gradient vs torch autograd", rtol=1e-10, atol=1e-13, quiet=True)


def test_gradient_noise_falls_as_one_over_b_and_vanishes_at_full_batch():
    be = B.get_backend("numpy", "float64")
    x, y = blobs(be)
    B.seed(1)
    model = models.mlp((8, 16, 4), backend=be)
    sizes = [2, 8, 32, 128, 400]
    res = BS.gradient_noise(model, (x, y), sizes, repeats=40, seed=0)
    v = res.variance
    assert v[-1] <= 1e-24 * res.grad_norm2 + 1e-30                      # the full batch IS the gradient
    for a, b in zip(v[:3], v[1:4]):                                     # 4× the batch: ~1/4 the noise
        assert b < 0.5 * a, (a, b)
    assert -1.35 < BS._slope(sizes[:4], v[:4]) < -0.75
    for b, vb in zip(sizes[:4], v[:4]):                                 # the fitted law explains each point
        assert abs(res.predicted(b) - vb) < 0.35 * vb
    assert res.noise_scale == pytest.approx(res.trace_cov / res.grad_norm2)


def test_gradient_noise_is_the_same_on_every_backend_and_leaves_the_model_alone(backend_name):
    results = {}
    for name in ("numpy", backend_name):
        be = B.get_backend(name, "float64")
        x, y = blobs(be, n=120)
        B.seed(3)
        model = models.mlp((8, 6, 4), backend=be)
        model.train()
        before = {k: B.to_numpy(v).copy() for k, v in model.state_dict().items()}
        results[name] = BS.gradient_noise(model, (x, y), [4, 16], repeats=5, seed=9)
        assert model.training and all(p.grad is None for p in model.parameters())
        for k, v in model.state_dict().items():
            assert np.array_equal(B.to_numpy(v), before[k])
    compare(results[backend_name].variance, results["numpy"].variance, "gradient noise across backends",
            rtol=1e-10, quiet=True)


def test_gradient_noise_bad_arguments():
    be = B.get_backend("numpy", "float64")
    x, y = blobs(be, n=50)
    model = models.mlp((8, 4, 4), backend=be)
    with pytest.raises(ValueError, match=r"batch_sizes\[1\] must be <= the number of samples 50, got 64"):
        BS.gradient_noise(model, (x, y), [8, 64])
    with pytest.raises(ValueError, match=r"repeats must be an int in \[2, 1000000\], got 1"):
        BS.gradient_noise(model, (x, y), [8], repeats=1)
    with pytest.raises(ValueError, match=r"batch_sizes\[0\] must be an int >= 1, got 0"):
        BS.gradient_noise(model, (x, y), [0])


# ----------------------------------------------------------------------------- throughput
def test_throughput_returns_positive_rates_per_batch_size(backend_name):
    be = B.get_backend(backend_name, "float32")
    x, y = blobs(be, n=100)
    out = BS.throughput(lambda: models.mlp((8, 16, 4), backend=be), (x, y), [4, 32, 256], backend=be,
                        steps=2, warmup=1)
    assert list(out) == [4, 32, 256]
    assert all(math.isfinite(v) and v > 0 for v in out.values())
    with pytest.raises(ValueError, match=r"steps must be an int in \[1, 1000000\], got 0"):
        BS.throughput(lambda: models.mlp((8, 4, 4)), (x, y), [4], steps=0)


# ----------------------------------------------------------------------------- batch-size schedules
def test_batch_size_schedule_sizes_phases_and_update_count():
    s = BS.BatchSizeSchedule(32, milestones=[5, 10], factor=4)
    assert [s.batch_size_at(e) for e in (0, 4, 5, 9, 10, 14)] == [32, 32, 128, 128, 512, 512]
    assert s.phases(15) == [(32, 5), (128, 5), (512, 5)]
    # by hand, N = 1078: ceil(1078/32) = 34, ceil(1078/128) = 9, ceil(1078/512) = 3
    assert s.total_updates(1078, 15) == 5 * 34 + 5 * 9 + 5 * 3 == 230
    assert s.total_updates(1078, 15, drop_last=True) == 5 * 33 + 5 * 8 + 5 * 2
    assert BS.BatchSizeSchedule(32).total_updates(1078, 15) == 15 * 34
    capped = BS.BatchSizeSchedule(100, [1, 2], factor=10, max_batch_size=1078)
    assert [capped.batch_size_at(e) for e in range(3)] == [100, 1000, 1078]
    assert BS.BatchSizeSchedule.instead_of_step_decay(64, [3], gamma=0.2).batch_size_at(3) == 320
    assert BS.updates_per_epoch(100, 30) == 4 and BS.updates_per_epoch(100, 30, drop_last=True) == 3


def test_fit_with_batch_schedule_counts_the_updates_it_makes(backend_name):
    be = B.get_backend(backend_name, "float64")
    x, y = blobs(be, n=100)
    model = models.mlp((8, 6, 4), backend=be)
    opt = SGD(model, lr=0.1)
    h = BS.fit_with_batch_schedule(model, (x, y), BS.BatchSizeSchedule(10, [2], factor=5), epochs=4,
                                   optimizer=opt, val=(x, y), seed=0, progress=False)
    assert h["batch_size"] == [10, 10, 50, 50]
    assert h["updates"] == [10, 20, 22, 24]            # 100/10 = 10 per epoch, then 100/50 = 2
    assert opt.step_count == 24                        # what the optimizer really did
    assert len(h["loss"]) == len(h["val_acc"]) == 4


def test_fit_with_a_constant_batch_schedule_is_fit():
    be = B.get_backend("numpy", "float64")
    x, y = blobs(be, n=100)
    B.seed(4)
    a = models.mlp((8, 6, 4), backend=be)
    b = models.mlp((8, 6, 4), backend=be)
    b.load_state_dict({k: v.copy() for k, v in a.state_dict().items()})   # copies: loading may alias
    ha = fit(a, (x, y), epochs=3, batch_size=16, lr=0.1, seed=2, progress=False)
    hb = BS.fit_with_batch_schedule(b, (x, y), BS.BatchSizeSchedule(16), epochs=3, lr=0.1, seed=2, progress=False)
    assert ha["loss"] == hb["loss"]
    for k, v in a.state_dict().items():
        assert np.array_equal(B.to_numpy(v), B.to_numpy(b.state_dict()[k]))


def test_batch_size_schedule_bad_arguments():
    with pytest.raises(ValueError, match=r"milestones must be strictly increasing, got \[5, 5\]"):
        BS.BatchSizeSchedule(32, [5, 5])
    with pytest.raises(ValueError, match=r"factor must be a finite number in \[1, inf\), got 0.5"):
        BS.BatchSizeSchedule(32, [5], factor=0.5)
    with pytest.raises(ValueError, match=r"gamma must be a finite number in \(0, 1\], got 2"):
        BS.BatchSizeSchedule.instead_of_step_decay(32, [5], gamma=2)
    with pytest.raises(TypeError, match=r"schedule must be a BatchSizeSchedule, got int"):
        BS.fit_with_batch_schedule(models.mlp((8, 4, 4)), blobs(B.active(), n=20), 32, epochs=1)


# ----------------------------------------------------------------------------- explorer
def test_batch_tradeoff_arithmetic():
    r = batch_tradeoff(batch_size=100, lr=0.5, n_samples=1001, trace_cov=20.0, grad_norm2=0.5, epochs=3)
    assert r["updates_per_epoch"] == 11 and r["total_updates"] == 33
    assert r["noise"] == pytest.approx(20.0 / 100 * 901 / 1000, rel=1e-14)
    assert r["snr"] == pytest.approx(0.5 / r["noise"], rel=1e-14)
    assert r["noise_scale"] == 40.0 and r["sgd_temperature"] == pytest.approx(0.5 * 1001 / 100)
    assert batch_tradeoff(1001, 0.5, 1001, 20.0, 0.5)["noise"] == 0.0
    with pytest.raises(ValueError, match=r"batch_size must be <= n_samples = 10, got 11"):
        batch_tradeoff(11, 0.1, 10, 1.0, 1.0)


# ----------------------------------------------------------------------------- exercise checkers
def test_checkers_pass_right_answers(capsys):
    ex.check_warmup_lr(lambda t, lr, b0, b, w: lr + (lr * b / b0 - lr) * min(t, w) / w)

    def count(n, b, milestones, factor, epochs):
        return sum(-(-n // (b * factor ** sum(m <= e for m in milestones))) for e in range(epochs))
    ex.check_update_count(count)
    ex.check_noise_prediction(lambda v0, b0, b, n: v0 * b0 / b * (n - b) / (n - b0))
    assert capsys.readouterr().out.count("✓") == 3


@pytest.mark.parametrize("check, wrong, hint", [
    (ex.check_warmup_lr, lambda t, lr, b0, b, w: lr * b / b0, "no warm-up"),
    (ex.check_warmup_lr, lambda t, lr, b0, b, w: lr + (lr * math.sqrt(b / b0) - lr) * min(t, w) / w, "square-root"),
    (ex.check_update_count, lambda n, b, m, f, e: sum(n // (b * f ** sum(x <= ep for x in m)) for ep in range(e)),
     "rounded down"),
    (ex.check_update_count, lambda n, b, m, f, e: sum(-(-n // (b * f ** sum(x < ep for x in m))) for ep in range(e)),
     "one epoch late"),
    (ex.check_noise_prediction, lambda v0, b0, b, n: v0 * b0 / b, "finite-population"),
    (ex.check_noise_prediction, lambda v0, b0, b, n: v0 * math.sqrt(b0 / b) * (n - b) / (n - b0), "1/√B"),
])
def test_checkers_say_what_is_wrong(check, wrong, hint):
    with pytest.raises(AssertionError, match=hint):
        check(wrong)


def test_fit_with_batch_schedule_joins_extra_metrics_across_phases():
    from nnopt_lab import models
    from nnopt_lab.training import BatchSizeSchedule, fit_with_batch_schedule
    B.seed(0)
    x = B.randn(40, 4, backend=B.get_backend("numpy", "float64"))
    y = B.to_backend(B.rng().integers(0, 3, 40), "numpy")
    model = models.mlp((4, 3), backend=B.get_backend("numpy", "float64"))
    hist = fit_with_batch_schedule(model, (x, y), BatchSizeSchedule(8, [2], 2.0), epochs=4, lr=0.1,
                                   progress=False, metrics={"epoch_marker": lambda m: 1.0})
    assert hist["epoch_marker"] == [1.0] * 4 and hist["batch_size"] == [8, 8, 16, 16]
    assert hist.stopped is None
