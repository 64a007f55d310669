"""Pruning masks against torch.nn.utils.prune on the same weights and amounts, ties included:
l1_unstructured, random_unstructured (same draw), global_unstructured, ln_structured (n = 1, 2, inf;
any dim), composition (0.5 then 0.5 -> 75 %), torch's rounding and torch.topk's tie order; the MIT
(threshold) and tfmot (keep ties) rules against hand-coded copies of their code; bad input."""
import numpy as np
import pytest
import torch
import torch.nn.utils.prune as tprune

from nnopt_lab import backend as B
from nnopt_lab import nn
from nnopt_lab.compression import pruning as P

TRIALS = 25


def _np(x):
    return B.to_numpy(x)


def _torch_linear(w):
    """A torch module whose weight is ``w`` (any shape: prune only looks at the parameter)."""
    m = torch.nn.Linear(1, 1)
    m.weight = torch.nn.Parameter(torch.as_tensor(np.array(w)))
    return m


def _weights(rng, shape, tied):
    """Random weights; ``tied`` draws small integers so that many magnitudes are equal."""
    if tied:
        return rng.integers(-3, 4, shape).astype(np.float64)
    return rng.standard_normal(shape)


def _layer_with(w, be):
    lin = nn.Linear(1, 1, backend=be)
    lin._params["weight"] = nn.Parameter(B.to_backend(w, be))
    return lin


# ----------------------------------------------------------------------------- how many, which
@pytest.mark.parametrize("amount,n,expected", [(0.5, 5, 2), (0.5, 7, 4), (0.5, 3, 2), (0.25, 10, 2), (0.3, 10, 3),
                                               (0.0, 9, 0), (3, 9, 3), (9, 9, 9), (np.int64(4), 9, 4),
                                               (np.float32(0.5), 6, 3), (0.999, 10, 10)])
def test_pruned_count_is_torchs_banker_rounding(amount, n, expected):
    assert P.pruned_count(amount, n) == expected
    assert tprune._compute_nparams_toprune(amount if not isinstance(amount, np.generic) else amount.item(), n) == expected


@pytest.mark.parametrize("size", [5, 17, 63, 64, 65, 200, 1000, 3000])
def test_select_lowest_picks_the_ties_torch_topk_picks(size, backend_name):
    rng = np.random.default_rng(size)
    be = B.get_backend(backend_name, "float64")
    for trial in range(TRIALS):
        values = rng.integers(0, int(rng.integers(1, 8)), size).astype(np.float64)
        if trial % 4 == 1:
            values = np.sort(values)
        if trial % 4 == 2:
            values = np.sort(values)[::-1].copy()
        k = int(rng.integers(0, size + 1)) if trial % 3 else int(rng.integers(0, max(1, size // 64) + 1))
        ours = P.select_lowest(B.to_backend(values, be), k)
        ref = sorted(torch.topk(torch.as_tensor(values), k, largest=False).indices.tolist())
        assert ours == ref, (size, trial, k)


def test_select_lowest_without_ties_is_the_k_smallest(be64):
    values = np.random.default_rng(0).permutation(50).astype(np.float64)
    assert P.select_lowest(B.to_backend(values, be64), 10) == sorted(np.argsort(values)[:10].tolist())


# ----------------------------------------------------------------------------- l1_unstructured
@pytest.mark.parametrize("tied", [False, True])
def test_l1_unstructured_equals_torch_and_composes_like_it(tied, be64):
    rng = np.random.default_rng(1 + tied)
    for trial in range(TRIALS):
        shape = tuple(int(s) for s in rng.integers(1, 7, int(rng.integers(1, 5))))
        n = int(np.prod(shape))
        w = _weights(rng, shape, tied)
        first = float(rng.choice([0.0, 0.1, 0.25, 0.5, 0.7])) if trial % 2 else int(rng.integers(0, n + 1))
        second = float(rng.choice([0.0, 0.3, 0.5]))
        ref = _torch_linear(w)
        ours = _layer_with(w, be64)
        for amount in (first, second):
            tprune.l1_unstructured(ref, "weight", amount)
            P.l1_unstructured(ours, amount)
            p = ours._params["weight"]
            np.testing.assert_array_equal(_np(p.mask), ref.weight_mask.numpy(), err_msg=f"trial {trial}")
            np.testing.assert_array_equal(_np(p.data), ref.weight.detach().numpy())


def test_half_then_half_leaves_a_quarter(be64):
    lin = _layer_with(np.random.default_rng(3).standard_normal((8, 10)), be64)
    P.l1_unstructured(lin, 0.5)
    P.l1_unstructured(lin, 0.5)
    assert P.sparsity_report(nn.Sequential(lin)).layers[0].masked == 60      # 40 + 20 of 80
    assert P.sparsity(lin._params["weight"].data) == 0.75


def test_l1_unstructured_float32_equals_torch(be32):
    w = np.random.default_rng(4).standard_normal((12, 9)).astype(np.float32)
    ref = _torch_linear(w)
    tprune.l1_unstructured(ref, "weight", 0.37)
    ours = _layer_with(w, be32)
    P.l1_unstructured(ours, 0.37)
    np.testing.assert_array_equal(_np(ours._params["weight"].mask), ref.weight_mask.numpy())


# ----------------------------------------------------------------------------- random_unstructured
def test_random_unstructured_equals_torch_given_its_draw(be64):
    for seed in range(TRIALS):
        w = np.random.default_rng(seed).standard_normal((6, 7))
        ref = _torch_linear(w)
        torch.manual_seed(seed)
        draw = torch.rand_like(ref.weight)                    # the numbers torch draws inside the pruner
        torch.manual_seed(seed)
        tprune.random_unstructured(ref, "weight", 0.4)
        ours = _layer_with(w, be64)
        P.random_unstructured(ours, 0.4, scores=B.to_backend(draw.detach().numpy(), be64))
        np.testing.assert_array_equal(_np(ours._params["weight"].mask), ref.weight_mask.numpy())


def test_random_unstructured_draws_from_the_given_generator(be64):
    a, b = (_layer_with(np.ones((5, 8)), be64) for _ in range(2))
    P.random_unstructured(a, 13, generator=B.generator(7))
    P.random_unstructured(b, 13, generator=B.generator(7))
    np.testing.assert_array_equal(_np(a._params["weight"].mask), _np(b._params["weight"].mask))
    assert int(np.sum(_np(a._params["weight"].mask) == 0)) == 13


# ----------------------------------------------------------------------------- global_unstructured
@pytest.mark.parametrize("tied", [False, True])
def test_global_unstructured_equals_torch(tied, be64):
    rng = np.random.default_rng(10 + tied)
    for trial in range(TRIALS):
        shapes = [(int(rng.integers(1, 6)), int(rng.integers(1, 6))) for _ in range(int(rng.integers(1, 4)))]
        ws = [_weights(rng, s, tied) * float(rng.uniform(0.2, 3)) ** (not tied) for s in shapes]
        refs = [_torch_linear(w) for w in ws]
        ours = [_layer_with(w, be64) for w in ws]
        for amount in (float(rng.choice([0.2, 0.5, 0.6])), float(rng.choice([0.0, 0.5]))):
            tprune.global_unstructured([(m, "weight") for m in refs], tprune.L1Unstructured, amount=amount)
            P.global_unstructured(ours, amount)
            for r, o in zip(refs, ours):
                np.testing.assert_array_equal(_np(o._params["weight"].mask), r.weight_mask.numpy(),
                                              err_msg=f"trial {trial}")


# ----------------------------------------------------------------------------- ln_structured
@pytest.mark.parametrize("n", [1, 2, np.inf])
@pytest.mark.parametrize("tied", [False, True])
def test_ln_structured_equals_torch_any_dim(n, tied, be64):
    rng = np.random.default_rng(20 + tied)
    for trial in range(TRIALS):
        shape = (int(rng.integers(1, 7)), int(rng.integers(1, 5)), int(rng.integers(1, 4)), int(rng.integers(1, 3)))
        w = _weights(rng, shape, tied)
        dim = int(rng.integers(-4, 4))
        ref = _torch_linear(w)
        ours = _layer_with(w, be64)
        for amount in (float(rng.choice([0.0, 0.25, 0.5, 0.7])), int(rng.integers(0, 2))):
            current = getattr(ref, "weight_mask", torch.ones(shape)).numpy()
            if amount > np.sum(np.any(current != 0, axis=tuple(d for d in range(4) if d != dim % 4))):
                continue                                   # an int above the live channels: refused (tested below)
            tprune.ln_structured(ref, "weight", amount, n=n, dim=dim)
            P.ln_structured(ours, amount, n=n, dim=dim)
            np.testing.assert_array_equal(_np(ours._params["weight"].mask), ref.weight_mask.numpy(),
                                          err_msg=f"trial {trial} dim {dim}")


def test_ln_structured_on_a_linear_prunes_rows_and_leaves_the_bias(be64):
    B.seed(0)
    lin = nn.Linear(5, 6, backend=be64)
    ref = torch.nn.Linear(5, 6).double()
    ref.load_state_dict({k: torch.as_tensor(_np(v)) for k, v in lin.state_dict().items()})
    tprune.ln_structured(ref, "weight", 0.5, n=1, dim=0)
    P.ln_structured(lin, 0.5, n=1, dim=0)
    np.testing.assert_array_equal(_np(lin._params["weight"].mask), ref.weight_mask.numpy())
    assert lin._params["bias"].mask is None
    P.ln_structured(lin, 1, n=1, dim=0, bias=True)
    dead = np.all(_np(lin._params["weight"].mask) == 0, axis=1)
    assert dead.sum() == 4
    np.testing.assert_array_equal(_np(lin._params["bias"].mask), (~dead).astype(float))


# ----------------------------------------------------------------------------- the peers' rules
def _mit_fine_grained_prune(w, sparsity):
    """MIT EfficientML Lab 1's fine_grained_prune, as the lab writes it (torch)."""
    t = torch.as_tensor(w)
    num_zeros = round(t.numel() * sparsity)
    importance = t.abs()
    threshold = importance.view(-1).kthvalue(num_zeros).values
    return torch.gt(importance, threshold).double().numpy()


def _tfmot_keep_ties(w, k_pruned):
    """tfmot's mask update (pruning_impl._update_mask) with its k = n - pruned weights kept."""
    a = np.abs(w).reshape(-1)
    keep = a.size - k_pruned
    threshold = np.sort(a)[::-1][keep - 1]
    return (np.abs(w) >= threshold).astype(np.float64)


@pytest.mark.parametrize("tied", [False, True])
def test_threshold_rule_is_mits_and_keep_ties_is_tfmots(tied, be64):
    rng = np.random.default_rng(30 + tied)
    for trial in range(TRIALS):
        w = _weights(rng, (int(rng.integers(2, 8)), int(rng.integers(2, 8))), tied)
        s = float(rng.choice([0.2, 0.5, 0.6, 0.9]))
        k = P.pruned_count(s, w.size)
        if k == 0:
            continue
        scores = B.to_backend(np.abs(w), be64)
        np.testing.assert_array_equal(_np(P.prune_mask(scores, s, rule="threshold")), _mit_fine_grained_prune(w, s))
        if k < w.size:
            np.testing.assert_array_equal(_np(P.prune_mask(scores, s, rule="keep_ties")), _tfmot_keep_ties(w, k))
        torch_mask = _np(P.prune_mask(scores, s))
        assert int(np.sum(torch_mask == 0)) == k                     # torch's rule: exactly k, always


def test_the_rules_differ_on_ties(be64):
    w = B.to_backend(np.array([1.0, 2.0, 2.0, 2.0, 3.0]), be64)
    assert int(np.sum(_np(P.prune_mask(w, 2)) == 0)) == 2
    np.testing.assert_array_equal(_np(P.prune_mask(w, 2, rule="threshold")), [0, 0, 0, 0, 1])
    np.testing.assert_array_equal(_np(P.prune_mask(w, 2, rule="keep_ties")), [0, 1, 1, 1, 1])


# ----------------------------------------------------------------------------- model level
def test_prune_reaches_the_asked_sparsity_to_one_weight(be64):
    B.seed(1)
    model = nn.Sequential(nn.Linear(13, 11, backend=be64), nn.ReLU(), nn.Linear(11, 7, backend=be64))
    for s in (0.3, 0.55, 0.9):
        report = P.prune(model, s)
        assert [r.masked for r in report.layers] == [round(s * 143), round(s * 77)]
        assert [r.zeros for r in report.layers] == [round(s * 143), round(s * 77)]
    report = P.prune(model, 0.95, scope="global")
    assert report.masked == round(0.95 * 220)


def test_prune_global_equals_global_unstructured_at_the_same_count(be64):
    B.seed(2)
    a = nn.Sequential(nn.Linear(6, 5, backend=be64), nn.ReLU(), nn.Linear(5, 4, backend=be64))
    b = nn.Sequential(nn.Linear(6, 5, backend=be64), nn.ReLU(), nn.Linear(5, 4, backend=be64))
    b.load_state_dict(a.state_dict())
    P.prune(a, 0.4, scope="global")
    P.global_unstructured([b[0], b[2]], round(0.4 * 50))
    for i in (0, 2):
        np.testing.assert_array_equal(_np(a[i]._params["weight"].mask), _np(b[i]._params["weight"].mask))


def test_prune_with_given_scores_prunes_the_lowest(be64):
    model = nn.Sequential(nn.Linear(3, 2, backend=be64))
    scores = {"0.weight": B.to_backend(np.array([[5.0, 1, 4], [2, 6, 3]]), be64)}
    P.prune(model, 0.5, criterion=scores)
    np.testing.assert_array_equal(_np(model[0]._params["weight"].mask), [[1, 0, 1], [0, 1, 0]])


def test_remove_masks_keeps_the_zeros(be64):
    model = nn.Sequential(nn.Linear(4, 3, backend=be64))
    P.prune(model, 0.5)
    before = _np(model[0]._params["weight"].data).copy()
    P.remove_masks(model)
    assert model[0]._params["weight"].mask is None
    np.testing.assert_array_equal(_np(model[0]._params["weight"].data), before)
    assert "0.weight_mask" not in model.state_dict()


# ----------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("amount,error,message", [
    (1.0, ValueError, r"amount must be a finite number in \[0, 1\), got 1.0"),
    (-0.1, ValueError, r"amount must be a finite number in \[0, 1\)"),
    (1.5, ValueError, r"amount must be a finite number in \[0, 1\)"),
    (float("nan"), ValueError, r"amount must be"),
    (13, ValueError, r"amount must be an int in \[0, 12\] .* got 13"),
    (-1, ValueError, r"amount must be an int in \[0, 12\]"),
    ("half", TypeError, r"amount must be a fraction in \[0, 1\) or an int count, got 'half'"),
    (True, TypeError, r"amount must be a fraction"),
    (None, TypeError, r"amount must be a fraction"),
])
def test_bad_amounts_are_refused_and_named(amount, error, message, be64):
    lin = _layer_with(np.ones((3, 4)), be64)
    with pytest.raises(error, match=message):
        P.l1_unstructured(lin, amount)
    assert lin._params["weight"].mask is None


def test_bad_targets_and_arguments_are_refused(be64):
    with pytest.raises(ValueError, match=r"layer \(ReLU\) has no parameter 'weight' to prune \(it has no parameters\)"):
        P.l1_unstructured(nn.ReLU(), 0.5)
    with pytest.raises(TypeError, match=r"layer must be an nnopt_lab Module or Parameter, got ndarray"):
        P.l1_unstructured(np.ones(3), 0.5)
    with pytest.raises(ValueError, match=r"model has no Linear or Conv2d weights to prune"):
        P.prune(nn.Sequential(nn.ReLU()), 0.5)
    model = nn.Sequential(nn.Linear(3, 2, backend=be64))
    with pytest.raises(ValueError, match=r"criterion must be one of \('magnitude', 'random'\), got 'taylor'"):
        P.prune(model, 0.5, criterion="taylor")
    with pytest.raises(TypeError, match=r"criterion must be one of"):
        P.prune(model, 0.5, criterion=3)
    with pytest.raises(ValueError, match=r"rule must be one of \('torch', 'threshold', 'keep_ties'\)"):
        P.prune(model, 0.5, rule="mit")
    with pytest.raises(ValueError, match=r"scope must be one of"):
        P.prune(model, 0.5, scope="model")
    with pytest.raises(ValueError, match=r"sparsity must be a finite number in \[0, 1\), got 1.0"):
        P.prune(model, 1.0)
    with pytest.raises(ValueError, match=r"layers names weights the model does not have: \['1.weight'\]"):
        P.prune(model, 0.5, layers=["1.weight"])
    with pytest.raises(ValueError, match=r"weight must have at least 2 axes"):
        P.ln_structured_mask(B.to_backend(np.ones(4), be64), 0.5)
    with pytest.raises(ValueError, match=r"dim must be an int in \[-2, 1\], got 2"):
        P.ln_structured_mask(B.to_backend(np.ones((4, 3)), be64), 0.5, dim=2)
    with pytest.raises(ValueError, match=r"n must be a number in \(0, inf\)"):
        P.ln_structured_mask(B.to_backend(np.ones((4, 3)), be64), 0.5, n=0)
    with pytest.raises(ValueError, match=r"scores holds NaN"):
        P.prune_mask(B.to_backend(np.array([1.0, np.nan]), be64), 1)
    with pytest.raises(ValueError, match=r"mask must have the parameter's shape"):
        P.prune_mask(B.to_backend(np.ones(4), be64), 1, mask=np.ones(3))
    with pytest.raises(ValueError, match=r"layers is empty"):
        P.global_unstructured([], 0.5)


@pytest.mark.parametrize("shape", [(0, 3), (4, 0), (0, 2, 3)])
def test_empty_weights_give_torchs_empty_masks(shape, be64):
    w = np.ones(shape)
    for amount in (0, 0.5):                            # torch reshaped with -1 here: RuntimeError on 0 entries
        ref = torch.nn.utils.prune.LnStructured(amount=amount, n=2, dim=0).compute_mask(
            torch.as_tensor(w), default_mask=torch.ones(shape, dtype=torch.float64))
        ours = P.ln_structured_mask(B.to_backend(w, be64), amount)
        assert tuple(ours.shape) == tuple(ref.shape) == shape
    np.testing.assert_array_equal(P.select_lowest(B.to_backend(np.ones(0), be64), 0),
                                  torch.topk(torch.ones(0), 0, largest=False).indices.numpy())


def test_counts_beyond_the_array_name_the_array(be64):
    with pytest.raises(ValueError, match=r"amount must be an int in \[0, 0\] \(the number of entries of scores, "
                                         r"shape \(0,\)\) or a fraction in \[0, 1\), got 2"):
        P.select_lowest(B.to_backend(np.ones(0), be64), 2)
    with pytest.raises(ValueError, match=r"amount must be an int in \[0, 1\] \(the number of entries of scores"):
        P.select_lowest(B.to_backend(np.ones(1), be64), 2)
    with pytest.raises(ValueError, match=r"amount must be an int in \[0, 0\] \(the slices along dim 0 of weight, "
                                         r"shape \(0, 3\), with a live entry\)"):
        P.ln_structured_mask(B.to_backend(np.ones((0, 3)), be64), 1)


@pytest.mark.parametrize("prune", [P.l1_unstructured, P.random_unstructured, P.ln_structured])
def test_a_missing_parameter_name_is_named(prune, be64):
    lin = nn.Linear(3, 2, backend=be64)
    with pytest.raises(ValueError, match=r"name must name a parameter of layer, got 'abc': layer \(Linear\) has no "
                                         r"parameter 'abc' to prune \(it has \['bias', 'weight'\]\)"):
        prune(lin, 1, name="abc")
    with pytest.raises(TypeError, match=r"name must be a str"):
        prune(lin, 1, name=3)
    with pytest.raises(ValueError, match=r"layers\[0\]\[1\] must name a parameter of layers\[0\], got 'abc'"):
        P.global_unstructured([(lin, "abc")], 1)
    assert lin._params["weight"].mask is None


@pytest.mark.parametrize("amount", [0.5, 0.005])               # nth_element and heap paths of torch.topk
def test_l1_unstructured_on_a_large_layer_with_many_tied_zeros(amount, be32):
    rng = np.random.default_rng(40)
    w = (rng.standard_normal((200, 150)) * (rng.random((200, 150)) > 0.6)).astype(np.float32)
    ref = _torch_linear(w)
    tprune.l1_unstructured(ref, "weight", amount)
    ours = _layer_with(w, be32)
    P.l1_unstructured(ours, amount)
    np.testing.assert_array_equal(_np(ours._params["weight"].mask), ref.weight_mask.numpy())
