"""Pruning masks have one owner, the Parameter: validated on assignment, applied by apply_mask/masked,
stored in state_dict under torch.nn.utils.prune's key <name>_mask, loaded back (torch's weight_orig ·
weight_mask included), and kept by Module.to."""
import numpy as np
import pytest
import torch
import torch.nn.utils.prune as prune

from nnopt_lab import backend as B
from nnopt_lab import nn


def _linear(backend, dtype="float64"):
    B.seed(3)
    return nn.Sequential(nn.Linear(6, 4, backend=B.get_backend(backend, dtype)))


def _mask(shape=(4, 6), seed=0):
    return (np.random.default_rng(seed).random(shape) < 0.6).astype(np.float64)


# ----------------------------------------------------------------------------- validation
@pytest.mark.parametrize("bad,error,message", [
    (np.ones((6, 4)), ValueError, r"mask must have the parameter's shape \(4, 6\), got \(6, 4\)"),
    (np.ones(24), ValueError, r"mask must have the parameter's shape \(4, 6\), got \(24,\)"),
    (np.full((4, 6), 0.5), ValueError, r"mask must hold only 0s and 1s, got 24 other values such as 0.5"),
    (np.where(_mask() > 0, 2.0, 0.0), ValueError, r"mask must hold only 0s and 1s, got \d+ other values such as 2.0"),
    (np.where(_mask() > 0, np.nan, 1.0), ValueError, r"mask must hold only 0s and 1s, got \d+ other values such as nan"),
    (np.where(_mask() > 0, -1, 1), ValueError, r"such as -1.0"),
    ([[1.0] * 6] * 4, TypeError, r"mask must be a numpy array or torch tensor, got list"),
    (1.0, TypeError, r"mask must be a numpy array or torch tensor, got float"),
    (np.ones((4, 6), dtype=complex), TypeError, r"mask must be an array of 0s and 1s \(bool, integer or float\), "
                                                 r"got dtype complex128"),
])
def test_bad_masks_are_refused_and_named(bad, error, message, backend_name):
    p = _linear(backend_name)[0]._params["weight"]
    with pytest.raises(error, match=message):
        p.mask = bad
    assert p.mask is None                                  # a refused mask leaves no mask behind


@pytest.mark.parametrize("make", [lambda m: m, lambda m: m > 0, lambda m: m.astype(np.int8),
                                  lambda m: torch.as_tensor(m, dtype=torch.float32)])
def test_a_mask_is_stored_on_the_parameters_backend_and_dtype(make, backend_name):
    p = _linear(backend_name, "float32")[0]._params["weight"]
    given = make(_mask())
    p.mask = given
    assert B.backend_of(p.mask).name == backend_name and B.dtype_name(p.mask) == "float32"
    np.testing.assert_array_equal(B.to_numpy(p.mask), _mask())
    if isinstance(given, np.ndarray) and given.dtype == np.float64:
        given[:] = 1.0                                     # the parameter keeps its own copy
        np.testing.assert_array_equal(B.to_numpy(p.mask), _mask())


def test_setting_a_mask_does_not_touch_the_data_until_apply_mask(be64):
    p = _linear(be64.name)[0]._params["weight"]
    before = B.to_numpy(p.data).copy()
    p.mask = _mask()
    np.testing.assert_array_equal(B.to_numpy(p.data), before)
    grad = B.randn(4, 6, backend=be64)
    np.testing.assert_array_equal(B.to_numpy(p.masked(grad)), B.to_numpy(grad) * _mask())
    p.apply_mask()
    np.testing.assert_array_equal(B.to_numpy(p.data), before * _mask())
    p.mask = None
    assert p.masked(grad) is grad                          # no mask: the same array, no copy
    p.apply_mask()                                         # a no-op
    np.testing.assert_array_equal(B.to_numpy(p.data), before * _mask())


def test_a_stale_mask_never_broadcasts():
    p = nn.Parameter(np.ones(6))
    p.mask = np.array([1.0, 0, 1, 0, 1, 1])
    p.data = np.ones((4, 6))                               # replaced (say, by trimming) after the mask was set
    with pytest.raises(ValueError, match=r"the mask has shape \(6,\) but the array has \(4, 6\)"):
        p.apply_mask()
    with pytest.raises(ValueError, match=r"set p.mask again"):
        p.masked(np.ones((4, 6)))
    assert p.masked(None) is None


# ----------------------------------------------------------------------------- state_dict
def test_masks_live_in_state_dict_under_torch_prune_keys(backend_name):
    model = _linear(backend_name)
    assert list(model.state_dict()) == ["0.weight", "0.bias"]
    model[0]._params["weight"].mask = _mask()
    assert list(model.state_dict()) == ["0.weight", "0.bias", "0.weight_mask"]
    assert list(model.state_dict(keep_masks=False)) == ["0.weight", "0.bias"]
    with pytest.raises(TypeError, match="keep_masks must be a bool"):
        model.state_dict(keep_masks="no")


def test_a_state_dict_with_masks_loads_into_a_model_without_them(backend_name):
    source = _linear(backend_name)
    source[0]._params["weight"].mask = _mask()
    source[0]._params["weight"].apply_mask()
    target = nn.Sequential(nn.Linear(6, 4, backend=B.get_backend(backend_name, "float64")))
    target.load_state_dict(source.state_dict())
    np.testing.assert_array_equal(B.to_numpy(target[0]._params["weight"].mask), _mask())
    np.testing.assert_array_equal(B.to_numpy(target[0]._params["weight"].data),
                                  B.to_numpy(source[0]._params["weight"].data))
    assert list(target.state_dict()) == list(source.state_dict())


def test_loading_a_mask_zeroes_the_pruned_weights(be64):
    model = _linear(be64.name)
    state = {k: B.copy(v) for k, v in model.state_dict().items()}
    state["0.weight_mask"] = B.to_backend(_mask(), be64)            # weights not yet zero where mask is 0
    model.load_state_dict(state)
    np.testing.assert_array_equal(B.to_numpy(model[0]._params["weight"].data),
                                  B.to_numpy(state["0.weight"]) * _mask())


def test_a_model_with_masks_needs_its_mask_keys():
    model = _linear("numpy")
    model[0]._params["weight"].mask = _mask()
    with pytest.raises(ValueError, match=r"missing \['0.weight_mask'\]"):
        model.load_state_dict(model.state_dict(keep_masks=False))


def test_a_bad_mask_in_a_state_dict_names_its_key():
    model = _linear("numpy")
    state = dict(model.state_dict())
    state["0.weight_mask"] = np.full((4, 6), 0.5)
    with pytest.raises(ValueError, match=r"state_dict\['0.weight_mask'\]: mask must hold only 0s and 1s"):
        model.load_state_dict(state)
    state["0.weight_mask"] = np.ones((2, 2))
    with pytest.raises(ValueError, match=r"state_dict\['0.weight_mask'\]: mask must have the parameter's shape"):
        model.load_state_dict(state)
    state["0.bias_mask"] = np.ones(4)
    state["0.weight_mask"] = _mask()
    model.load_state_dict(state)                                     # any parameter can carry a mask
    assert model[0]._params["bias"].mask is not None
    with pytest.raises(ValueError, match=r"unexpected \['0.other_mask'\]"):
        model.load_state_dict(dict(state, **{"0.other_mask": np.ones(4)}))   # not a parameter's name


def test_torch_prune_state_dict_loads_as_the_pruned_weight(be64):
    """torch keeps weight_orig and weight_mask; weight = weight_orig · weight_mask is what loads."""
    torch.manual_seed(0)
    ref = torch.nn.Sequential(torch.nn.Linear(6, 4)).double()
    prune.l1_unstructured(ref[0], "weight", amount=0.5)
    assert set(ref.state_dict()) == {"0.bias", "0.weight_orig", "0.weight_mask"}
    ours = nn.Sequential(nn.Linear(6, 4, backend=be64))
    ours.load_state_dict(ref.state_dict())
    p = ours[0]._params["weight"]
    np.testing.assert_array_equal(B.to_numpy(p.mask), ref[0].weight_mask.numpy())
    np.testing.assert_array_equal(B.to_numpy(p.data), ref[0].weight.detach().numpy())   # torch's pruned weight
    x = torch.randn(5, 6, dtype=torch.float64)
    np.testing.assert_allclose(B.to_numpy(ours(B.to_backend(x.numpy(), be64))), ref(x).detach().numpy(),
                               rtol=1e-12, atol=1e-14)
    assert list(ours.state_dict()) == ["0.weight", "0.bias", "0.weight_mask"]
    plain = torch.nn.Sequential(torch.nn.Linear(6, 4)).double()      # our plain dict loads into torch.nn
    plain.load_state_dict({k: torch.as_tensor(B.to_numpy(v)) for k, v in ours.state_dict(keep_masks=False).items()})
    np.testing.assert_allclose(plain(x).detach().numpy(), ref(x).detach().numpy(), rtol=1e-12, atol=1e-14)


# ----------------------------------------------------------------------------- Module.to
@pytest.mark.parametrize("source,target", [("numpy", "torch-cpu"), ("torch-cpu", "numpy")])
def test_module_to_keeps_masks_on_the_new_backend_and_dtype(source, target):
    model = _linear(source, "float32")
    model[0]._params["weight"].mask = _mask()
    model.to(B.get_backend(target, "float64"))
    p = model[0]._params["weight"]
    assert B.backend_of(p.mask).name == target and B.dtype_name(p.mask) == "float64"
    np.testing.assert_array_equal(B.to_numpy(p.mask), _mask())
    assert B.backend_of(p.data).name == target
    assert "0.weight_mask" in model.state_dict()
