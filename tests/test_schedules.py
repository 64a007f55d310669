"""Learning-rate schedules against torch.optim.lr_scheduler, the fit callback, the range test,
the schedule explorer and the chapter 4.1 exercise checkers."""
import math
import warnings

import numpy as np
import pytest
import torch
from torch.optim import lr_scheduler as T

from nnopt_lab import backend as B
from nnopt_lab import models
from nnopt_lab.exercises import learning_rate as ex
from nnopt_lab.reference import torch_twin
from nnopt_lab.testing import compare
from nnopt_lab.training import SGD, fit
from nnopt_lab.training import schedules as S
from nnopt_lab.training.loop import batches
from nnopt_lab.widgets import learning_rate as W

STEPS = 400
LR = 0.1


# ----------------------------------------------------------------------------- helpers
def torch_curve(build, steps=STEPS, lr=LR, metrics=None, adam=False):
    """(lrs, momenta) read from torch's param group before each of ``steps`` steps."""
    p = torch.zeros(1, requires_grad=True)
    opt = torch.optim.Adam([p], lr=lr) if adam else torch.optim.SGD([p], lr=lr, momentum=0.9)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sched = build(opt)
        lrs, moms = [], []
        for t in range(steps):
            g = opt.param_groups[0]
            lrs.append(g["lr"])
            moms.append(g["betas"][0] if adam else g["momentum"])
            opt.step()
            sched.step(metrics[t]) if metrics is not None else sched.step()
    return lrs, moms


class AdamLike:
    """A stand-in with Adam's betas, for OneCycleLR's beta1 cycling."""

    def __init__(self, lr):
        self.lr, self.betas = lr, (0.9, 0.999)


def ours_curve(build, steps=STEPS, lr=LR, metrics=None, adam=False, sched_out=None):
    probe = AdamLike(lr) if adam else S.LRProbe(lr, momentum=0.9)
    sched = build(probe)
    if sched_out is not None:
        sched_out.append(sched)
    lrs, moms = [], []
    for t in range(steps):
        lrs.append(probe.lr)
        moms.append(probe.betas[0] if adam else probe.momentum)
        sched.step(metrics[t]) if metrics is not None else sched.step()
    return lrs, moms


def same_class(name, **kw):
    """The pair (ours, torch's) of builders for the class ``name`` with arguments ``kw``."""
    return (lambda o: getattr(S, name)(o, **kw)), (lambda o: getattr(T, name)(o, **kw))


SINGLE = {
    "ConstantLR": same_class("ConstantLR", factor=0.25, total_iters=7),
    "StepLR": same_class("StepLR", step_size=30, gamma=0.5),
    "StepLR-gamma>1": same_class("StepLR", step_size=50, gamma=1.1),
    "MultiStepLR": same_class("MultiStepLR", milestones=[50, 120, 120, 300], gamma=0.3),
    "ExponentialLR": same_class("ExponentialLR", gamma=0.99),
    "LinearLR-warmup": same_class("LinearLR", start_factor=0.05, end_factor=1.0, total_iters=100),
    "LinearLR-decay": same_class("LinearLR", start_factor=1.0, end_factor=0.01, total_iters=250),
    "CosineAnnealingLR-past-Tmax": same_class("CosineAnnealingLR", T_max=90, eta_min=1e-3),
    "CosineAnnealingLR": same_class("CosineAnnealingLR", T_max=STEPS),
    "CosineAnnealingWarmRestarts-Tmult2": same_class("CosineAnnealingWarmRestarts", T_0=10, T_mult=2, eta_min=1e-4),
    "CosineAnnealingWarmRestarts": same_class("CosineAnnealingWarmRestarts", T_0=37),
    "OneCycleLR-cos": same_class("OneCycleLR", max_lr=1.0, total_steps=STEPS),
    "OneCycleLR-linear": same_class("OneCycleLR", max_lr=0.5, total_steps=STEPS + 50, anneal_strategy="linear",
                                    pct_start=0.25),
    "OneCycleLR-three-phase-cos": same_class("OneCycleLR", max_lr=2.0, epochs=8, steps_per_epoch=50,
                                             three_phase=True, div_factor=10.0),
    "OneCycleLR-three-phase-linear": same_class("OneCycleLR", max_lr=2.0, total_steps=STEPS, three_phase=True,
                                                anneal_strategy="linear", final_div_factor=100.0),
    "OneCycleLR-no-momentum": same_class("OneCycleLR", max_lr=1.0, total_steps=STEPS, cycle_momentum=False),
}


def seq_ours_warmup_cosine(o):
    return S.SequentialLR(o, [S.LinearLR(o, 0.1, 1.0, 20), S.CosineAnnealingLR(o, T_max=380)], [20])


def seq_torch_warmup_cosine(o):
    return T.SequentialLR(o, [T.LinearLR(o, 0.1, 1.0, 20), T.CosineAnnealingLR(o, T_max=380)], [20])


def seq_three(mod):
    def build(o):
        return mod.SequentialLR(o, [mod.ConstantLR(o, factor=0.1, total_iters=5), mod.ExponentialLR(o, gamma=0.99),
                                    mod.StepLR(o, step_size=30, gamma=0.5)], milestones=[10, 150])
    return build


def seq_cos_restarts(mod):
    def build(o):
        return mod.SequentialLR(o, [mod.LinearLR(o, start_factor=0.2, total_iters=15),
                                    mod.CosineAnnealingWarmRestarts(o, T_0=20, T_mult=2)], milestones=[15])
    return build


def with_warmup_torch(o):   # what S.with_warmup(after, 10) builds, in torch: the cosine first
    cos = T.CosineAnnealingLR(o, T_max=390)
    return T.SequentialLR(o, [T.LinearLR(o, 0.1, 1.0, 10), cos], [10])


SEQUENTIAL = {
    "warmup+cosine": (seq_ours_warmup_cosine, seq_torch_warmup_cosine),
    "constant+exponential+step": (seq_three(S), seq_three(T)),
    "linear+warm-restarts": (seq_cos_restarts(S), seq_cos_restarts(T)),
    "with_warmup": (lambda o: S.with_warmup(S.CosineAnnealingLR(o, T_max=390), 10), with_warmup_torch),
}


def plateau_metrics(n=STEPS, seed=3):
    """A noisy loss that falls, stalls and falls again (deterministic)."""
    g = np.random.default_rng(seed)
    t = np.arange(n)
    base = 1.0 / (1.0 + 0.02 * t) + 0.3 * (t > 200) * np.exp(-(t - 200) / 50.0) * (t > 200)
    return [float(v) for v in base + 0.01 * g.standard_normal(n)]


PLATEAU = {
    "min-rel-cooldown": dict(mode="min", factor=0.5, patience=3, threshold=1e-2, cooldown=2),
    "min-abs-minlr": dict(mode="min", factor=0.3, patience=0, threshold=0.01, threshold_mode="abs", min_lr=1e-3),
    "max-rel": dict(mode="max", factor=0.5, patience=5, threshold=1e-3, cooldown=1),
    "max-abs-eps": dict(mode="max", factor=0.9, patience=2, threshold=0.005, threshold_mode="abs", cooldown=4,
                        eps=1e-3, min_lr=0.02),
    "defaults": dict(),
}


# ----------------------------------------------------------------------------- agreement with torch
@pytest.mark.parametrize("case", sorted(SINGLE))
def test_single_schedules_match_torch(case):
    ours, ref = SINGLE[case]
    lr_o, mom_o = ours_curve(ours)
    lr_t, mom_t = torch_curve(ref)
    compare(lr_o, lr_t, f"torch.optim.lr_scheduler {case}", rtol=1e-12, atol=1e-300, quiet=True)
    if case.startswith("OneCycleLR"):
        compare(mom_o, mom_t, f"{case} momentum", rtol=1e-12, atol=1e-300, quiet=True)
    assert len(set(lr_t)) > 1 or case.startswith("Constant")   # the schedule really moves


def test_one_cycle_cycles_adam_beta1_like_torch():
    ours, ref = SINGLE["OneCycleLR-cos"]
    lr_o, b_o = ours_curve(ours, adam=True)
    lr_t, b_t = torch_curve(ref, adam=True)
    compare(lr_o, lr_t, "OneCycleLR with Adam", rtol=1e-12, atol=1e-300, quiet=True)
    compare(b_o, b_t, "OneCycleLR beta1", rtol=1e-12, atol=1e-300, quiet=True)


@pytest.mark.parametrize("case", sorted(SEQUENTIAL))
def test_sequential_compositions_match_torch(case):
    ours, ref = SEQUENTIAL[case]
    compare(ours_curve(ours)[0], torch_curve(ref)[0], f"SequentialLR {case}", rtol=1e-12, atol=1e-300,
            quiet=True)


@pytest.mark.parametrize("case", sorted(PLATEAU))
@pytest.mark.parametrize("sign", [1, -1])
def test_reduce_on_plateau_matches_torch(case, sign):
    kw = PLATEAU[case]
    metrics = [sign * m if kw.get("mode") == "max" else m for m in plateau_metrics()]
    if kw.get("mode") == "max" and sign == 1:
        metrics = [-m for m in metrics]                  # an accuracy-like rising curve
    lr_o = ours_curve(lambda o: S.ReduceLROnPlateau(o, **kw), metrics=metrics)[0]
    lr_t = torch_curve(lambda o: T.ReduceLROnPlateau(o, **kw), metrics=metrics)[0]
    compare(lr_o, lr_t, f"ReduceLROnPlateau {case}", rtol=1e-12, atol=1e-300, quiet=True)
    if case != "defaults":
        assert len(set(lr_t)) > 2, "the metric sequence must trigger reductions for the test to mean anything"


def test_warm_restarts_with_fractional_epochs_match_torch():
    epochs = [e + i / 7 for e in range(30) for i in range(7)]
    ours_p, ref_p = S.LRProbe(LR), torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=LR)
    ours = S.CosineAnnealingWarmRestarts(ours_p, T_0=3, T_mult=2, eta_min=0.001)
    ref = T.CosineAnnealingWarmRestarts(ref_p, T_0=3, T_mult=2, eta_min=0.001)
    got, want = [], []
    for e in epochs:
        ours.step(e)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ref.step(e)
        got.append(ours.get_last_lr()[0])
        want.append(ref.get_last_lr()[0])
    compare(got, want, "CosineAnnealingWarmRestarts.step(epoch)", rtol=1e-12, atol=1e-300, quiet=True)


@pytest.mark.parametrize("case", ["StepLR", "ExponentialLR", "LinearLR-decay", "CosineAnnealingLR", "MultiStepLR",
                                  "ConstantLR"])
def test_closed_forms_equal_the_recursions(case):
    ours, _ = SINGLE[case]
    probe = S.LRProbe(LR)
    sched = ours(probe)
    for t in range(1, 300):
        sched.step()
        assert math.isclose(sched.closed_form_lr(), probe.lr, rel_tol=1e-9, abs_tol=1e-15), (case, t)


def test_lr_curve_is_the_rate_in_force_at_each_step():
    ours, ref = SINGLE["OneCycleLR-cos"]
    compare(S.lr_curve(ours, STEPS, lr=LR), torch_curve(ref)[0], "lr_curve", rtol=1e-12, quiet=True)
    assert S.lr_curve(lambda o: S.StepLR(o, step_size=2, gamma=0.5), 5) == [1.0, 1.0, 0.5, 0.5, 0.25]


def test_get_last_lr_is_a_list_like_torch():
    probe = S.LRProbe(0.3)
    sched = S.ExponentialLR(probe, gamma=0.5)
    sched.step()
    assert sched.get_last_lr() == [0.15] and probe.lr == 0.15


# ----------------------------------------------------------------------------- checkpoints
ROUND_TRIP = {**{k: SINGLE[k][0] for k in ("StepLR", "MultiStepLR", "LinearLR-warmup", "CosineAnnealingLR-past-Tmax",
                                          "CosineAnnealingWarmRestarts-Tmult2", "OneCycleLR-three-phase-cos",
                                          "ConstantLR")},
              "warmup+cosine": seq_ours_warmup_cosine, "three": seq_three(S)}


@pytest.mark.parametrize("case", sorted(ROUND_TRIP))
def test_state_dict_round_trip_continues_the_same_curve(case):
    build = ROUND_TRIP[case]
    whole = ours_curve(build)
    first = []
    lrs1, _ = ours_curve(build, steps=150, sched_out=first)
    state = first[0].state_dict()
    first[0].step()                                       # changing the original must not change the copy
    probe = S.LRProbe(LR, momentum=0.9)
    fresh = build(probe)
    fresh.load_state_dict(state)
    rest = []
    for _ in range(STEPS - 150):
        rest.append(probe.lr)
        fresh.step()
    assert lrs1 + rest == whole[0]


def test_reduce_on_plateau_state_dict_round_trip():
    metrics = plateau_metrics()
    kw = PLATEAU["min-rel-cooldown"]
    whole = ours_curve(lambda o: S.ReduceLROnPlateau(o, **kw), metrics=metrics)[0]
    probe = S.LRProbe(LR)
    sched = S.ReduceLROnPlateau(probe, **kw)
    for m in metrics[:220]:
        sched.step(m)
    state = sched.state_dict()
    probe2 = S.LRProbe(LR)
    fresh = S.ReduceLROnPlateau(probe2, **kw)
    fresh.load_state_dict(state)
    rest = []
    for m in metrics[220:]:
        rest.append(probe2.lr)
        fresh.step(m)
    assert rest == whole[220:]


# ----------------------------------------------------------------------------- bad input
def bad(exc, match, fn):
    with pytest.raises(exc, match=match):
        fn()


@pytest.mark.parametrize("make, match", [
    (lambda o: S.StepLR(o, step_size=3, gamma=0), r"gamma must be a finite number in \(0, inf\), got 0"),
    (lambda o: S.StepLR(o, step_size=3, gamma=-0.5), r"gamma must be .* got -0.5"),
    (lambda o: S.ExponentialLR(o, gamma=float("nan")), r"gamma must be .* got nan"),
    (lambda o: S.MultiStepLR(o, [5, 3]), r"milestones must be non-decreasing, got \[5, 3\]"),
    (lambda o: S.StepLR(o, step_size=0), r"step_size must be an int >= 1, got 0"),
    (lambda o: S.StepLR(o, step_size=2.5), r"step_size must be an int >= 1, got 2.5"),
    (lambda o: S.LinearLR(o, start_factor=0), r"start_factor must be a finite number in \(0, 1\], got 0"),
    (lambda o: S.ConstantLR(o, factor=1.5), r"factor must be a finite number in \[0, 1\], got 1.5"),
    (lambda o: S.CosineAnnealingLR(o, T_max=0), r"T_max must be an int >= 1, got 0"),
    (lambda o: S.CosineAnnealingLR(o, T_max=10, eta_min=-1), r"eta_min must be .* \[0, inf\), got -1"),
    (lambda o: S.CosineAnnealingWarmRestarts(o, T_0=5, T_mult=0), r"T_mult must be an int >= 1, got 0"),
    (lambda o: S.OneCycleLR(o, max_lr=1.0, total_steps=10, anneal_strategy="sine"),
     r"anneal_strategy must be one of \('cos', 'linear'\), got 'sine'"),
    (lambda o: S.OneCycleLR(o, max_lr=1.0), r"needs total_steps, or both epochs and steps_per_epoch"),
    (lambda o: S.OneCycleLR(o, max_lr=-1.0, total_steps=10), r"max_lr must be .* got -1.0"),
    (lambda o: S.OneCycleLR(o, max_lr=1.0, total_steps=10, pct_start=1.5), r"pct_start must be .* got 1.5"),
    (lambda o: S.ReduceLROnPlateau(o, mode="sideways"), r"mode must be one of \('min', 'max'\), got 'sideways'"),
    (lambda o: S.ReduceLROnPlateau(o, threshold_mode="percent"),
     r"threshold_mode must be one of \('rel', 'abs'\), got 'percent'"),
    (lambda o: S.ReduceLROnPlateau(o, factor=1.0), r"factor must be a finite number in \(0, 1\), got 1.0"),
    (lambda o: S.ReduceLROnPlateau(o, patience=-1), r"patience must be an int >= 0, got -1"),
    (lambda o: S.SequentialLR(o, [S.StepLR(o, 3)], [5]), r"milestones must have len\(schedulers\) - 1 = 0"),
    (lambda o: S.SequentialLR(o, [S.StepLR(o, 3), S.ReduceLROnPlateau(o)], [5]), r"ReduceLROnPlateau"),
    (lambda o: S.SequentialLR(o, [S.StepLR(o, 3), S.StepLR(S.LRProbe(1.0), 3)], [5]), r"another optimizer"),
    (lambda o: S.SequentialLR(o, [S.StepLR(o, 3), S.StepLR(o, 3), S.StepLR(o, 3)], [5, 5]),
     r"strictly increasing, got \[5, 5\]"),
])
def test_bad_arguments_are_refused_with_clear_messages(make, match):
    bad(ValueError, match, lambda: make(S.LRProbe(LR)))


def test_negative_or_missing_learning_rate_is_refused():
    probe = S.LRProbe(LR)
    probe.lr = -1
    bad(ValueError, r"lr must be a finite number in \[0, inf\), got -1", lambda: S.StepLR(probe, 3))
    bad(ValueError, r"lr must be a finite number in \[0, inf\), got -0.1", lambda: S.LRProbe(-0.1))
    bad(TypeError, r"optimizer must have a float attribute 'lr'", lambda: S.StepLR(object(), 3))


def test_one_cycle_refuses_momentum_cycling_without_momentum_and_overstepping():
    class Bare:
        lr = 0.1
    bad(ValueError, r"cycle_momentum=True needs an optimizer with a 'momentum' or 'betas'",
        lambda: S.OneCycleLR(Bare(), max_lr=1.0, total_steps=10))
    sched = S.OneCycleLR(Bare(), max_lr=1.0, total_steps=3, cycle_momentum=False)
    for _ in range(3):
        sched.step()
    bad(ValueError, r"stepped 4 times, but total_steps is 3", sched.step)


def test_reduce_on_plateau_refuses_nan_metric():
    sched = S.ReduceLROnPlateau(S.LRProbe(LR))
    bad(ValueError, r"metrics must be a finite number, got nan", lambda: sched.step(float("nan")))


# ----------------------------------------------------------------------------- fit integration
def tiny_data(backend, n=96, d=6, k=3, seed=1):
    g = np.random.default_rng(seed)
    x = g.standard_normal((n, d))
    y = (x[:, 0] + 0.5 * x[:, 1] > 0).astype("int64") + (x[:, 2] > 1).astype("int64")
    return B.to_backend(x, backend), B.to_backend(y, backend)


def test_schedule_callback_per_step_trains_like_torch_with_its_scheduler(be64):
    B.set_backend(be64)
    x, y = tiny_data(be64)
    B.seed(5)
    model = models.mlp((6, 10, 3), backend=be64)
    twin = torch_twin(model)
    opt = SGD(model, lr=0.5)
    epochs, bs = 4, 16
    sched = S.with_warmup(S.CosineAnnealingLR(opt, T_max=epochs * 6 - 5), 5)
    cb = S.ScheduleCallback(sched, every="step")
    fit(model, (x, y), epochs=epochs, batch_size=bs, optimizer=opt, seed=7, callbacks=[cb], progress=False)

    topt = torch.optim.SGD(twin.parameters(), lr=0.5)
    tsched = T.SequentialLR(topt, [T.LinearLR(topt, 0.1, 1.0, 5), T.CosineAnnealingLR(topt, T_max=epochs * 6 - 5)],
                            [5])
    xt, yt = torch.as_tensor(B.to_numpy(x)), torch.as_tensor(B.to_numpy(y))
    lossf, seen = torch.nn.CrossEntropyLoss(), []
    B.seed(7)
    for _ in range(epochs):
        for xb, yb in batches(xt, yt, bs):
            seen.append(topt.param_groups[0]["lr"])
            topt.zero_grad()
            lossf(twin(xb), yb).backward()
            topt.step()
            tsched.step()
    compare(cb.lrs, seen, "rates used by fit + ScheduleCallback", rtol=1e-12, quiet=True)
    for (name, ours), ref in zip(model.state_dict().items(), twin.state_dict().values()):
        compare(ours, ref, f"weights {name} after training with the schedule", rtol=1e-9, atol=1e-12, quiet=True)


def test_schedule_callback_per_epoch_and_plateau_on_val_loss(backend_name):
    be = B.get_backend(backend_name, "float64")
    x, y = tiny_data(be)
    model = models.mlp((6, 4, 3), backend=be)
    opt = SGD(model, lr=0.5)
    step = S.StepLR(opt, step_size=2, gamma=0.5)
    plateau = S.ReduceLROnPlateau(opt, factor=0.5, patience=0, threshold=0.05)
    h = fit(model, (x, y), epochs=6, batch_size=32, optimizer=opt, val=(x, y), seed=0, progress=False,
            callbacks=[S.ScheduleCallback(step, every="epoch"), S.ScheduleCallback(plateau)])
    # replay in torch: after epoch e, StepLR then ReduceLROnPlateau(val_loss[e]) act on the same lr
    topt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.5)
    tstep = T.StepLR(topt, step_size=2, gamma=0.5)
    tplateau = T.ReduceLROnPlateau(topt, factor=0.5, patience=0, threshold=0.05)
    want = [0.5]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for v in h["val_loss"]:
            topt.step()
            tstep.step()
            tplateau.step(v)
            want.append(topt.param_groups[0]["lr"])
    compare(h["lr"], want[:-1], "per-epoch StepLR + ReduceLROnPlateau(val_loss) in fit", rtol=1e-12, quiet=True)
    assert len(set(want)) > 2


def test_schedule_callback_refuses_a_foreign_optimizer_and_missing_metric():
    x, y = tiny_data(B.get_backend("numpy", "float64"))
    model = models.mlp((6, 4, 3), backend=B.get_backend("numpy", "float64"))
    sched = S.StepLR(S.LRProbe(0.1), 2)
    bad(ValueError, "drives another optimizer", lambda: fit(model, (x, y), epochs=1, optimizer=SGD(model, 0.1),
                                                            callbacks=[S.ScheduleCallback(sched)], progress=False))
    opt = SGD(model, 0.1)
    bad(ValueError, r"history\['val_loss'\], which is empty",
        lambda: fit(model, (x, y), epochs=1, optimizer=opt, progress=False,
                    callbacks=[S.ScheduleCallback(S.ReduceLROnPlateau(opt))]))
    bad(ValueError, r"every must be one of \('step', 'epoch'\), got 'batch'",
        lambda: S.ScheduleCallback(sched, every="batch"))


# ----------------------------------------------------------------------------- explorer
def test_schedule_curve_is_the_schedule_classes_curve():
    got = W.schedule_curve("cosine", total_steps=100, lr=0.2, warmup_steps=10, eta_min=0.01)
    want = torch_curve(lambda o: T.SequentialLR(o, [T.LinearLR(o, 0.1, 1.0, 10),
                                                    T.CosineAnnealingLR(o, T_max=90, eta_min=0.01)], [10]),
                       steps=100, lr=0.2)[0]
    compare(got, want, "schedule_curve('cosine', warmup)", rtol=1e-12, quiet=True)
    for kind in W.SCHEDULE_KINDS:
        curve = W.schedule_curve(kind, total_steps=60, lr=0.1)
        assert len(curve) == 60 and all(v >= 0 for v in curve), kind
    bad(ValueError, r"kind must be one of .* got 'sine'", lambda: W.schedule_curve("sine"))


def test_schedule_explorer_builds():
    pytest.importorskip("ipywidgets")
    w = W.schedule_explorer()
    assert w is not None


# ----------------------------------------------------------------------------- exercise checkers
def cosine_right(step, base_lr, T_max, eta_min=0.0):
    return eta_min + 0.5 * (base_lr - eta_min) * (1 + math.cos(math.pi * step / T_max))


@pytest.mark.parametrize("wrong, hint", [
    (lambda s, b, T, e=0.0: e + (b - e) * (1 + math.cos(math.pi * s / T)), "1/2"),
    (lambda s, b, T, e=0.0: cosine_right(s + 1, b, T, e), "one step"),
    (lambda s, b, T, e=0.0: cosine_right(s, b, T, 0.0), "eta_min"),
    (lambda s, b, T, e=0.0: e + 0.5 * (b - e) * (1 - math.cos(math.pi * s / T)), "sign"),
    (lambda s, b, T, e=0.0: e + 0.5 * (b - e) * (1 + math.cos(s / T)), "π"),
])
def test_cosine_checker_says_what_is_wrong(wrong, hint):
    with pytest.raises(AssertionError, match=hint):
        ex.check_cosine_annealing(wrong)


def test_checkers_pass_right_answers(capsys):
    ex.check_cosine_annealing(cosine_right)

    def warm_cos(step, base_lr, warmup_steps, total_steps, start_factor=0.1):
        if step < warmup_steps:
            return base_lr * (start_factor + (1 - start_factor) * step / warmup_steps)
        return cosine_right(step - warmup_steps, base_lr, total_steps - warmup_steps)
    ex.check_warmup_cosine(warm_cos)

    def plateau(metrics, lr, factor, patience):
        best, bad_epochs, out = math.inf, 0, []
        for m in metrics:
            if m < best:
                best, bad_epochs = m, 0
            else:
                bad_epochs += 1
            if bad_epochs > patience:
                lr, bad_epochs = lr * factor, 0
            out.append(lr)
        return out
    ex.check_plateau(plateau)
    assert capsys.readouterr().out.count("✓") == 3


def test_warmup_and_plateau_checkers_diagnose():
    def late(step, base_lr, warmup_steps, total_steps, start_factor=0.1):   # cosine not shifted
        if step < warmup_steps:
            return base_lr * (start_factor + (1 - start_factor) * step / warmup_steps)
        return cosine_right(step, base_lr, total_steps - warmup_steps)
    with pytest.raises(AssertionError, match="shift"):
        ex.check_warmup_cosine(late)

    def impatient(metrics, lr, factor, patience):
        best, bad_epochs, out = math.inf, 0, []
        for m in metrics:
            if m < best:
                best, bad_epochs = m, 0
            else:
                bad_epochs += 1
            if bad_epochs >= patience:
                lr, bad_epochs = lr * factor, 0
            out.append(lr)
        return out
    with pytest.raises(AssertionError, match="more than `patience`"):
        ex.check_plateau(impatient)


# ----------------------------------------------------------------------------- numpy scalars
def _numpy_leaves(value, where="state"):
    """The paths of the numpy scalars / arrays inside a (nested) state."""
    if isinstance(value, (np.generic, np.ndarray)):
        return [f"{where}: {type(value).__name__}"]
    if isinstance(value, dict):
        return [p for k, v in value.items() for p in _numpy_leaves(v, f"{where}[{k!r}]")]
    if isinstance(value, (list, tuple)):
        return [p for i, v in enumerate(value) for p in _numpy_leaves(v, f"{where}[{i}]")]
    return []


@pytest.mark.parametrize("steps", [np.int64(10), np.int32(10)])
def test_with_warmup_stores_python_ints_for_numpy_steps(steps):
    curves, states = [], []
    for warmup in (10, steps):
        probe = S.LRProbe(LR, momentum=0.9)
        sched = S.with_warmup(S.CosineAnnealingLR(probe, T_max=390), warmup)
        states.append(sched.state_dict())
        curve = []
        for _ in range(STEPS):
            curve.append(probe.lr)
            sched.step()
        curves.append(curve)
    assert _numpy_leaves(states[1]) == []               # the np.int64 milestone used to stay in the state
    assert states[0] == states[1] and curves[0] == curves[1]
    torch_lrs, _ = torch_curve(with_warmup_torch)
    np.testing.assert_allclose(curves[1], torch_lrs, rtol=1e-12, atol=0)


def test_lr_probe_and_one_cycle_take_numpy_scalars_as_python_numbers():
    probe = S.LRProbe(np.float64(LR), momentum=np.float64(0.9))
    assert type(probe.momentum) is float and type(probe.lr) is float
    ours = S.OneCycleLR(probe, max_lr=1.0, total_steps=50, cycle_momentum=np.bool_(True), three_phase=np.bool_(False))
    ref = S.OneCycleLR(S.LRProbe(LR, momentum=0.9), max_lr=1.0, total_steps=50)
    assert _numpy_leaves(ours.state_dict()) == [] and ours.state_dict() == ref.state_dict()
    for bad_value in (np.zeros((0, 2)), "yes", 1):     # the empty array was an ambiguous-truth error
        bad(TypeError, r"cycle_momentum must be a bool, got",
            lambda: S.OneCycleLR(S.LRProbe(LR), max_lr=1.0, total_steps=50, cycle_momentum=bad_value))
    bad(TypeError, r"three_phase must be a bool, got", lambda: S.OneCycleLR(S.LRProbe(LR), 1.0, 50, three_phase=None))
    bad(ValueError, r"momentum must be a finite number in \[0, inf\), got -0.5", lambda: S.LRProbe(LR, momentum=-0.5))
