"""The chapter 5.1 checker: a right answer passes, each named mistake is recognised, not-started is told
apart from wrong; and the explorer's pure functions (crossover, explore, the grid on a tiny MLP)."""
import numpy as np
import pytest
import scipy.sparse as sp

from nnopt_lab import backend as B
from nnopt_lab.exercises import inference_pruning as E
from nnopt_lab.widgets import inference_pruning as W


def right(w):
    a = sp.csr_matrix(w)
    return a.data, a.indices, a.indptr


def test_the_cases_equal_scipy():
    for w in E.csr_cases():
        got = E._reference(w)
        np.testing.assert_array_equal(got[1], sp.csr_matrix(w).indices)
        np.testing.assert_array_equal(got[2], sp.csr_matrix(w).indptr)


def test_right_answer_passes(capsys):
    E.check_csr_from_dense(right)
    assert capsys.readouterr().out.startswith("✓ csr_from_dense matches")


def test_not_started_is_told_apart():
    def fn(w):
        raise NotImplementedError()
    with pytest.raises(AssertionError, match="not answered yet"):
        E.check_csr_from_dense(fn)


def _wrong(kind):
    def fn(w):
        data, cols, crow = right(w)
        if kind == "zeros":
            m, k = w.shape
            return w.reshape(-1), np.tile(np.arange(k), m), np.arange(0, m * k + 1, k)
        if kind == "csc":
            a = sp.csc_matrix(w)
            return a.data, a.indices, crow
        if kind == "no leading zero":
            return data, cols, crow[1:]
        if kind == "counts":
            return data, cols, np.concatenate([[0], np.diff(crow)])
        if kind == "rows":
            return data, np.repeat(np.arange(w.shape[0]), np.diff(crow)), crow
        if kind == "off by one":
            return data, cols, crow + 1
        return data, cols                      # two arrays
    return fn


@pytest.mark.parametrize("kind,message", [("zeros", "stored the zeros"), ("csc", "column order"),
                                          ("no leading zero", "leading 0"), ("counts", "running sum"),
                                          ("rows", "ROW index"), ("off by one", "wrong crow_indices"),
                                          ("pair", "three arrays")])
def test_each_mistake_is_named(kind, message):
    with pytest.raises(AssertionError, match=message):
        E.check_csr_from_dense(_wrong(kind))


def test_crossover():
    s = [0.5, 0.9, 0.99, 0.999]
    assert W.crossover(s, [1, 1, 1, 1], [5, 2, 0.5, 0.1]) == 0.99
    assert W.crossover(s, [1, 1, 1, 1], [0.5, 2, 0.5, 0.1]) == 0.99        # a lucky low point does not count
    assert W.crossover(s, [1, 1, 1, 1], [5, 2, 2, 2]) is None
    with pytest.raises(ValueError, match="one length"):
        W.crossover(s, [1], [1])


def test_grid_and_explore_on_a_tiny_mlp(backend_name):
    be = B.get_backend(backend_name)
    grid = W.latency_grid((6, 8, 3), [0.0, 0.5, 0.75], (1, 4), rounds=1, repeats=1, backend=be)
    assert grid["bytes"]["dense with zeros"][0] == (6 * 8 + 8 + 8 * 3 + 3) * 4
    assert grid["bytes"]["structured, removed"][1] == (6 * 4 + 4 + 4 * 3 + 3) * 4     # half the hidden units cut
    forms = W.pruned_forms((6, 8, 3), 0.5, be)
    x = B.to_backend(np.random.default_rng(0).standard_normal((5, 6)), be)
    dense = B.to_numpy(forms["dense with zeros"](x))
    np.testing.assert_allclose(B.to_numpy(forms["CSR"](x)), dense, rtol=1e-5, atol=1e-6)
    r = W.explore(grid, 2, 1)
    assert r["batch"] == 4 and r["sparsity"] == 0.75 and r["fastest"] in W.FORMS
    with pytest.raises(ValueError, match="sparsity_index"):
        W.explore(grid, 3, 0)
    view = W._Explorer(grid)
    view.update(1, 0)
    assert view.frame()[:4] == b"\x89PNG"
