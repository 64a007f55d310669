"""The self-checks of chapter 3.2 (nnopt_lab/exercises/pruning.py): a right answer passes on every
backend, each usual mistake is named, a learner who has not started is told so; the checker's
reference masks equal torch.nn.utils.prune.l1_unstructured on its own fixed inputs; CSR bytes equal
scipy.sparse's arrays."""
import math

import numpy as np
import pytest
import scipy.sparse
import torch
from torch.nn.utils import prune as tprune

from nnopt_lab import backend as B, models
from nnopt_lab.compression import pruning
from nnopt_lab.exercises import pruning as ex
from nnopt_lab.widgets import pruning as wp


def _count_rule(tensor, zeros, signed=False, invert=False):
    xp = B.namespace(tensor)
    flat = xp.reshape(tensor if signed else xp.abs(tensor), (-1,))
    order = xp.argsort(flat, stable=True)
    mask = xp.ones_like(flat)
    mask[order[:zeros]] = 0
    mask = xp.reshape(mask, tuple(tensor.shape))
    if invert:
        mask = 1 - mask
    return mask


def _n(tensor):
    return math.prod(tensor.shape)


def right(tensor, sparsity):
    mask = _count_rule(tensor, round(sparsity * _n(tensor)))
    tensor *= mask
    return mask


def _pruning_in_place(make_mask):
    def fn(tensor, sparsity):
        mask = make_mask(tensor, sparsity)
        tensor *= mask
        return mask
    return fn


MISTAKES = {
    "rounded down": _pruning_in_place(lambda t, s: _count_rule(t, int(s * _n(t)))),
    "rounded half UP": _pruning_in_place(lambda t, s: _count_rule(t, math.floor(s * _n(t) + 0.5))),
    "rounded up": _pruning_in_place(lambda t, s: _count_rule(t, math.ceil(s * _n(t)))),
    "fraction of weights REMOVED": _pruning_in_place(lambda t, s: _count_rule(t, _n(t) - round(s * _n(t)))),
    "signed value": _pruning_in_place(lambda t, s: _count_rule(t, round(s * _n(t)), signed=True)),
    "mask is inverted": _pruning_in_place(lambda t, s: _count_rule(t, round(s * _n(t)), invert=True)),
    "returned the pruned tensor": lambda t, s: t * _count_rule(t, round(s * _n(t))),
    "not pruned in place": lambda t, s: _count_rule(t, round(s * _n(t))),
    "returned None": lambda t, s: None,
}


def mit_threshold(tensor, sparsity):
    """MIT Lab 1's solution: kthvalue threshold, ties at it pruned too (k = 0 keeps everything)."""
    xp = B.namespace(tensor)
    zeros = round(sparsity * _n(tensor))
    if zeros == 0:
        return xp.ones_like(tensor)
    kth = xp.sort(xp.reshape(xp.abs(tensor), (-1,)))[zeros - 1]
    mask = xp.astype(xp.abs(tensor) > kth, tensor.dtype)
    tensor *= mask
    return mask


def test_a_right_answer_passes_on_every_backend(backend_name, capsys):
    ex.check_fine_grained_prune(right, backend=B.get_backend(backend_name, "float64"))
    ex.check_fine_grained_prune(right, backend=B.get_backend(backend_name, "float32"))
    assert capsys.readouterr().out.count("✓ fine_grained_prune matches") == 2


@pytest.mark.parametrize("mistake", list(MISTAKES), ids=lambda m: m.replace(" ", "_"))
def test_each_usual_mistake_is_named(mistake):
    with pytest.raises(AssertionError, match=mistake):
        ex.check_fine_grained_prune(MISTAKES[mistake])


def test_mit_labs_threshold_rule_is_named_at_the_ties_and_right_elsewhere():
    with pytest.raises(AssertionError, match="ties at the threshold .* pruned 4 weights.*MIT Lab 1"):
        ex.check_fine_grained_prune(mit_threshold)


def test_not_started_and_a_failing_answer_are_told_apart():
    def not_started(tensor, sparsity):
        raise NotImplementedError

    with pytest.raises(AssertionError, match="not answered yet"):
        ex.check_fine_grained_prune(not_started)
    with pytest.raises(AssertionError, match="raised ZeroDivisionError"):
        ex.check_fine_grained_prune(lambda t, s: 1 / 0)
    with pytest.raises(TypeError, match="fine_grained_prune must be a function"):
        ex.check_fine_grained_prune(3)


def test_a_wrong_shape_or_unknown_error_is_reported_without_a_crash():
    with pytest.raises(AssertionError, match=r"returned shape \(20,\), expected \(4, 5\)"):
        ex.check_fine_grained_prune(lambda t, s: B.namespace(t).reshape(right(t, s), (-1,)))
    with pytest.raises(AssertionError, match=r"expected 7 zeros at the smallest .*your mask has 10 zeros"):
        ex.check_fine_grained_prune(_pruning_in_place(lambda t, s: _count_rule(t, round(s * _n(t)) + 3)))


@pytest.mark.parametrize("what,make,shape,sparsities", ex._CASES, ids=lambda c: str(c)[:20])
def test_the_checkers_reference_is_torchs_l1_unstructured_on_its_fixed_inputs(what, make, shape, sparsities):
    weights = np.asarray(make(), dtype=np.float64).reshape(shape)
    for sparsity in sparsities:
        layer = torch.nn.Linear(1, 1, bias=False)
        layer.weight = torch.nn.Parameter(torch.as_tensor(weights.copy()))
        tprune.l1_unstructured(layer, "weight", amount=sparsity)
        assert ex._reference(weights.ravel(), sparsity) == layer.weight_mask.numpy().ravel().tolist()


def test_the_tie_case_is_a_real_tie_and_torch_removes_exactly_round_s_n():
    values, sparsity = ex._TIES
    layer = torch.nn.Linear(3, 2, bias=False)
    layer.weight = torch.nn.Parameter(torch.tensor(values, dtype=torch.float64))
    tprune.l1_unstructured(layer, "weight", amount=sparsity)
    assert int((layer.weight_mask == 0).sum()) == round(sparsity * 6) == 3
    mask = right(torch.tensor(values, dtype=torch.float64), sparsity)
    assert int((mask == 0).sum()) == 3 and int((mit_threshold(torch.tensor(values), sparsity) == 0).sum()) == 4


# ----------------------------------------------------------------------------- CSR bytes
def _scipy_csr_bytes(dense, value_dtype=np.float32):
    m = scipy.sparse.csr_matrix(dense.astype(value_dtype))
    return m.data.nbytes + m.indices.nbytes + m.indptr.nbytes, m.indices.dtype


@pytest.mark.parametrize("shape,sparsity", [((100, 64), 0.0), ((100, 64), 0.5), ((300, 100), 0.9), ((10, 300), 0.99),
                                            ((7, 3), 1.0 - 1e-12)])
def test_csr_bytes_equal_scipy_sparse_arrays(shape, sparsity):
    gen = np.random.default_rng(0)
    dense = gen.standard_normal(shape)
    dense[gen.random(shape) < sparsity] = 0.0
    want, index_dtype = _scipy_csr_bytes(dense)
    assert index_dtype == np.int32
    nnz = int(np.count_nonzero(dense))
    assert wp.csr_bytes(shape[0], shape[1], nnz, 32, 32) == want
    want64 = scipy.sparse.csr_matrix(dense)
    assert wp.csr_bytes(*shape, nnz, 64, 32) == want64.data.nbytes + want64.indices.nbytes + want64.indptr.nbytes


def test_csr_bytes_refuses_impossible_counts():
    with pytest.raises(ValueError, match=r"nnz must be an int in \[0, 6\], got 7"):
        wp.csr_bytes(2, 3, 7)
    with pytest.raises(ValueError, match="rows must be an int >= 1, got 0"):
        wp.csr_bytes(0, 3, 0)
    with pytest.raises(ValueError, match="value_bits must be an int >= 1, got 3.5"):
        wp.csr_bytes(2, 3, 1, value_bits=3.5)


def test_storage_bytes_of_a_masked_model_against_scipy(backend_name):
    b = B.get_backend(backend_name, "float32")
    B.seed(0)
    model = models.small_cnn(backend=b)
    for i in (0, 3, 7):
        p = model[i]._params["weight"]
        p.mask = pruning.prune_mask(B.namespace(p.data).abs(p.data), 0.8)
    sizes = wp.storage_bytes(model)
    want_csr = 0
    for name, value in model.state_dict(keep_masks=False).items():
        a = B.to_numpy(value)
        if name.endswith("weight"):
            mask = B.to_numpy(model.state_dict()[name + "_mask"])
            want_csr += _scipy_csr_bytes((a * mask).reshape(a.shape[0], -1))[0]
        else:
            want_csr += a.size * 4
    assert sizes["csr"] == want_csr
    assert sizes["dense"] == 4 * model.num_parameters()
    nonzero_weights = sum(int(np.count_nonzero(B.to_numpy(model.state_dict()[f"{i}.weight_mask"]))) for i in (0, 3, 7))
    biases = sum(model[i]._params["bias"].shape[0] for i in (0, 3, 7))
    assert sizes["nonzero_values"] == 4 * (nonzero_weights + biases)


def test_check_csr_bytes_names_the_mistakes():
    ex.check_csr_bytes(lambda r, c, nnz, vb, ib: wp.csr_bytes(r, c, nnz, vb, ib))
    with pytest.raises(AssertionError, match="row pointers are missing"):
        ex.check_csr_bytes(lambda r, c, nnz, vb, ib: math.ceil(nnz * (vb + ib) / 8))
    with pytest.raises(AssertionError, match="rows \\+ 1 row pointers, not rows"):
        ex.check_csr_bytes(lambda r, c, nnz, vb, ib: math.ceil((nnz * (vb + ib) + r * ib) / 8))
    with pytest.raises(AssertionError, match="column indices are missing"):
        ex.check_csr_bytes(lambda r, c, nnz, vb, ib: math.ceil((nnz * vb + (r + 1) * ib) / 8))
    with pytest.raises(AssertionError, match="sizes are bits"):
        ex.check_csr_bytes(lambda r, c, nnz, vb, ib: nnz * (vb + ib) + (r + 1) * ib)
    with pytest.raises(AssertionError, match="not answered yet"):
        ex.check_csr_bytes(lambda *a: (_ for _ in ()).throw(NotImplementedError()))
