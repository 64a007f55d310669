"""Gradient clipping against torch.nn.utils.clip_grad_norm_ / clip_grad_value_."""
import numpy as np
import pytest
import torch

from nnopt_lab import backend as B
from nnopt_lab.nn import CrossEntropyLoss, Linear, Parameter
from nnopt_lab.testing import compare
from nnopt_lab.training import fit
from nnopt_lab.training.clipping import ClippedOptimizer, clip_grad_norm, clip_grad_value, total_grad_norm
from nnopt_lab.training.optim import SGD, Adam



SHAPES = [(4, 3), (3,), (2, 2, 2)]


def make(be, scale, seed=0):
    gen = np.random.default_rng(seed)
    grads = [scale * gen.standard_normal(s) for s in SHAPES]
    ours = []
    for g in grads:
        p = Parameter(B.to_backend(np.zeros(g.shape), be))
        p.grad = B.to_backend(g, be)
        ours.append(p)
    ref = []
    for g in grads:
        t = torch.zeros(g.shape, dtype=getattr(torch, be.dtype), requires_grad=True)
        t.grad = torch.tensor(g, dtype=getattr(torch, be.dtype))
        ref.append(t)
    return ours, ref


@pytest.mark.parametrize("norm_type", [2.0, 1.0, 3.0, float("inf")])
@pytest.mark.parametrize("scale, max_norm", [(3.0, 1.0), (0.01, 1.0), (1.0, 0.0)])
def test_clip_grad_norm_matches_torch(norm_type, scale, max_norm, be64):
    ours, ref = make(be64, scale)
    total = clip_grad_norm(ours, max_norm, norm_type)
    ref_total = torch.nn.utils.clip_grad_norm_(ref, max_norm, norm_type, foreach=False)
    compare(total, ref_total, "clip_grad_norm_ total", rtol=1e-12, atol=0, quiet=True)
    assert B.is_torch(total) == be64.is_torch
    for p, t in zip(ours, ref):
        compare(p.grad, t.grad, "torch.nn.utils.clip_grad_norm_", rtol=1e-12, atol=1e-15, quiet=True)


def test_clip_grad_norm_float32(be32):
    ours, ref = make(be32, 5.0)
    clip_grad_norm(ours, 0.5)
    torch.nn.utils.clip_grad_norm_(ref, 0.5)
    for p, t in zip(ours, ref):
        assert B.dtype_name(p.grad) == "float32"
        compare(p.grad, t.grad, "torch.nn.utils.clip_grad_norm_", rtol=1e-5, atol=1e-7, quiet=True)


def test_clipped_norm_is_max_norm_and_direction_kept(be64):
    ours, _ = make(be64, 10.0)
    before = [B.to_numpy(p.grad).copy() for p in ours]
    total = B.float_of(clip_grad_norm(ours, 2.0))
    after = B.float_of(total_grad_norm([p.grad for p in ours]))
    assert after == pytest.approx(2.0 * total / (total + 1e-6), rel=1e-12)
    for b, p in zip(before, ours):
        np.testing.assert_allclose(B.to_numpy(p.grad) * total / after, b, rtol=1e-10)


@pytest.mark.parametrize("clip_value", [0.5, 0.0, 100.0])
def test_clip_grad_value_matches_torch(clip_value, be64):
    ours, ref = make(be64, 2.0)
    assert clip_grad_value(ours, clip_value) is None
    torch.nn.utils.clip_grad_value_(ref, clip_value, foreach=False)
    for p, t in zip(ours, ref):
        compare(p.grad, t.grad, "torch.nn.utils.clip_grad_value_", rtol=0, atol=0, quiet=True)


def test_frozen_and_gradless_params_are_left_out(be64):
    ours, ref = make(be64, 3.0)
    ours[1].requires_grad = False
    frozen = B.to_numpy(ours[1].grad).copy()
    ours.append(Parameter(B.to_backend(np.zeros(2), be64)))          # no gradient at all
    total = clip_grad_norm(ours, 1.0)
    ref_total = torch.nn.utils.clip_grad_norm_([ref[0], ref[2]], 1.0)
    compare(total, ref_total, "clip_grad_norm_ without the frozen parameter", rtol=1e-12, quiet=True)
    np.testing.assert_array_equal(B.to_numpy(ours[1].grad), frozen)
    assert clip_grad_norm([ours[-1]], 1.0) == 0.0


def test_masked_gradient_is_measured_masked_without_rewriting_grad(be64):
    ours, ref = make(be64, 3.0)
    mask = (np.arange(12).reshape(4, 3) % 2).astype(float)
    ours[0].mask = B.to_backend(mask, be64)
    ref[0].grad *= torch.tensor(mask)
    before = [B.to_numpy(p.grad).copy() for p in ours]
    grad_objects = [p.grad for p in ours]
    total = clip_grad_norm(ours, 1.0)
    compare(total, torch.nn.utils.clip_grad_norm_(ref, 1.0), "masked clip", quiet=True)
    coef = 1.0 / (B.float_of(total) + 1e-6)
    for p, g0, obj in zip(ours, before, grad_objects):
        assert p.grad is obj                                  # scaled in place, never replaced
        np.testing.assert_allclose(B.to_numpy(p.grad), g0 * coef, rtol=1e-14)
    assert (B.to_numpy(ours[0].grad)[mask == 0] != 0).all()   # reading the masked norm did not mask p.grad


def test_nonfinite_norm(be64):
    ours, _ = make(be64, 1.0)
    ours[0].grad[0, 0] = float("inf")
    with pytest.raises(FloatingPointError, match="total gradient norm .* is inf"):
        clip_grad_norm(ours, 1.0, error_if_nonfinite=True)


def _train(be, clip, steps=60):
    """A Linear(5, 3) + cross-entropy trained with SGD(momentum) and clipping, ours and torch."""
    gen = np.random.default_rng(1)
    x, y = gen.standard_normal((16, 5)) * 3, gen.integers(0, 3, 16)
    w0, b0 = gen.standard_normal((3, 5)), gen.standard_normal(3)
    layer = Linear(5, 3, backend=be).load_state_dict({"weight": w0.copy(), "bias": b0.copy()})
    opt = ClippedOptimizer(SGD(layer, lr=0.2, momentum=0.9), **clip)
    lossf, xb, yb = CrossEntropyLoss(), B.to_backend(x, be), B.to_backend(y, be)
    for _ in range(steps):
        lossf(layer.forward(xb), yb)
        layer.backward(lossf.backward())
        opt.step()
    w, b = torch.tensor(w0, requires_grad=True), torch.tensor(b0, requires_grad=True)
    topt = torch.optim.SGD([w, b], lr=0.2, momentum=0.9, foreach=False)
    for _ in range(steps):
        topt.zero_grad()
        torch.nn.functional.cross_entropy(torch.nn.functional.linear(torch.tensor(x), w, b),
                                          torch.tensor(y)).backward()
        if "max_norm" in clip:
            torch.nn.utils.clip_grad_norm_([w, b], clip["max_norm"])
        else:
            torch.nn.utils.clip_grad_value_([w, b], clip["clip_value"])
        topt.step()
    return layer, opt, w, b


@pytest.mark.parametrize("clip", [dict(max_norm=0.1), dict(clip_value=0.02)], ids=["norm", "value"])
def test_clipped_optimizer_trains_like_torch(clip, be64):
    layer, opt, w, b = _train(be64, clip)
    compare(layer.state_dict()["weight"], w.detach(), "SGD + clipping in torch", rtol=1e-10, atol=1e-12,
            quiet=True)
    compare(layer.state_dict()["bias"], b.detach(), "SGD + clipping in torch", rtol=1e-10, atol=1e-12,
            quiet=True)
    if "max_norm" in clip:
        assert B.float_of(opt.last_norm) > 0.1                         # it really clipped


def test_clipped_optimizer_forwards_lr_state_and_works_in_fit(be64):
    layer = Linear(4, 3, backend=be64)
    inner = Adam(layer, lr=0.01)
    opt = ClippedOptimizer(inner, max_norm=1.0)
    opt.lr = 0.05                                      # schedules set optimizer.lr
    assert inner.lr == 0.05 and opt.params is inner.params and opt.state is inner.state
    gen = np.random.default_rng(0)
    x, y = B.to_backend(gen.standard_normal((40, 4)), be64), B.to_backend(gen.integers(0, 3, 40), be64)
    hist = fit(layer, (x, y), epochs=3, batch_size=8, optimizer=opt, progress=False, seed=0)
    assert len(hist["loss"]) == 3 and hist["lr"] == [0.05] * 3 and inner.step_count == 15
    sd = opt.state_dict()
    assert sd["hyperparameters"] == inner.hyperparameters()
    opt.load_state_dict(sd)
    assert "max_norm=1.0" in repr(opt)


@pytest.mark.parametrize("call, match", [
    (lambda ps: clip_grad_norm(ps, -1.0), r"max_norm must be a finite number in \[0, inf\), got -1.0"),
    (lambda ps: clip_grad_norm(ps, 1.0, norm_type=0), r"norm_type must be a number > 0 or float\('inf'\), got 0"),
    (lambda ps: clip_grad_norm(ps, 1.0, norm_type=float("nan")), r"norm_type must be"),
    (lambda ps: clip_grad_value(ps, -0.5), r"clip_value must be a finite number in \[0, inf\), got -0.5"),
    (lambda ps: ClippedOptimizer(SGD(ps, lr=0.1)), r"give exactly one of max_norm and clip_value"),
    (lambda ps: ClippedOptimizer(SGD(ps, lr=0.1), max_norm=1.0, clip_value=1.0), r"give exactly one"),
])
def test_bad_arguments(call, match):
    ours, _ = make(B.get_backend("numpy", "float64"), 1.0)
    with pytest.raises(ValueError, match=match):
        call(ours)


def test_bad_types():
    with pytest.raises(TypeError, match="optimizer must be an nnopt_lab Optimizer, got str"):
        ClippedOptimizer("sgd", max_norm=1.0)
    with pytest.raises(TypeError, match=r"params\[0\] must be a Parameter, got ndarray"):
        clip_grad_norm([np.zeros(3)], 1.0)
