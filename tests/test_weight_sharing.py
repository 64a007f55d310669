"""nnopt_lab.compression.weight_sharing against scikit-learn's KMeans and torch autograd.

References: sklearn.cluster.KMeans(init=<our starting centroids>, n_init=1, algorithm="lloyd")
(labels, centroids, inertia, n_iter), sklearn.cluster.kmeans_plusplus on the same random
stream, numpy.linspace / numpy.quantile / Generator.uniform for the initialisations, torch
autograd of ``codebook[indices]`` through F.linear / F.conv2d for the centroid gradients.
"""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as TF
from sklearn.cluster import KMeans, kmeans_plusplus

from nnopt_lab import backend as B
from nnopt_lab import models
from nnopt_lab.compression import weight_sharing as W
from nnopt_lab.nn.layers import Conv2d, CrossEntropyLoss, Linear
from nnopt_lab.testing import compare, gradcheck
from nnopt_lab.training import fit


def weights(n, seed, kind="normal"):
    g = np.random.default_rng(seed)
    if kind == "normal":
        return g.standard_normal(n)
    if kind == "laplace":                      # peaked like trained weights
        return g.laplace(0.0, 0.05, n)
    return np.concatenate([g.standard_normal(n // 2) * 0.01, g.standard_normal(n - n // 2)])   # two scales


def sklearn_fit(w, c0, max_iter=300, tol=1e-4):
    return KMeans(len(c0), init=np.asarray(c0, dtype=w.dtype).reshape(-1, 1), n_init=1, algorithm="lloyd",
                  max_iter=max_iter, tol=tol).fit(w.reshape(-1, 1))


def assert_same_as_sklearn(ours, ref, tol=1e-10):
    assert np.array_equal(B.to_numpy(ours.labels), ref.labels_)
    compare(ours.centroids, ref.cluster_centers_[:, 0], "sklearn KMeans centroids", rtol=0, atol=tol, quiet=True)
    assert abs(ours.inertia - ref.inertia_) <= tol * max(1.0, ref.inertia_)
    assert ours.n_iter == ref.n_iter_


# ----------------------------------------------------------------------------- k-means vs sklearn
def watch_empty_clusters(monkeypatch):
    """Record, for each Lloyd iteration, (clusters the assignment left empty, clusters still empty after
    the relocation: a cluster that gave all its weights away), both counted here from the labels."""
    seen = []
    update = W._update

    def counting(x, labels, old):
        xs, lab, c = B.to_numpy(x), B.to_numpy(labels), B.to_numpy(old)
        counts = np.bincount(lab, minlength=c.shape[0])
        empty = int((counts == 0).sum())
        far = np.argsort(-(xs - c[lab]) ** 2, kind="stable")[:empty]
        given = np.bincount(lab[far], minlength=c.shape[0])
        seen.append((empty, int(((counts > 0) & (given == counts)).sum())))
        return update(x, labels, old)

    monkeypatch.setattr(W, "_update", counting)
    return seen


@pytest.mark.parametrize("n", [60, 300, 2000])
@pytest.mark.parametrize("k", [2, 4, 16, 32])
@pytest.mark.parametrize("init", W.INITS)
def test_kmeans_equals_sklearn_lloyd_from_the_same_centroids(be64, n, k, init, monkeypatch):
    seen = watch_empty_clusters(monkeypatch)
    for trial, kind in enumerate(("normal", "laplace", "mixed")):
        w = weights(n, seed=1000 * k + n + trial, kind=kind)
        x = B.to_backend(w, be64)
        c0 = W.init_centroids(x, k, init, generator=B.generator(trial))
        seen.clear()
        ours = W.kmeans(x, k, init=c0)
        assert len(np.unique(B.to_numpy(ours.labels))) == k and ours.converged
        if any(left for _, left in seen):
            continue    # sklearn's quirk in _average_centers (see kmeans): only the checks above
        assert_same_as_sklearn(ours, sklearn_fit(w, B.to_numpy(c0)))


@pytest.mark.parametrize("max_iter, tol", [(1, 1e-4), (2, 1e-4), (5, 0.0), (300, 1e-2), (300, 1e-8)])
def test_max_iter_and_tol_mean_what_sklearn_means(be64, max_iter, tol):
    w = weights(3000, seed=7, kind="laplace")
    c0 = np.linspace(w.min(), w.max(), 16)
    ours = W.kmeans(B.to_backend(w, be64), 16, init=B.to_backend(c0, be64), max_iter=max_iter, tol=tol)
    assert_same_as_sklearn(ours, sklearn_fit(w, c0, max_iter=max_iter, tol=tol))
    if max_iter <= 2:
        assert not ours.converged and ours.n_iter == max_iter


def test_kmeans_float32_is_close_to_sklearn_float64(be32):
    w = weights(5000, seed=3, kind="laplace")
    c0 = np.linspace(w.min(), w.max(), 16)
    ours = W.kmeans(B.to_backend(w, be32), 16, init=B.to_backend(c0, be32))
    ref = sklearn_fit(w, c0)
    assert B.dtype_name(ours.centroids) == "float32"
    assert (B.to_numpy(ours.labels) == ref.labels_).mean() > 0.999
    compare(ours.centroids, ref.cluster_centers_[:, 0], "sklearn KMeans (float64)", rtol=1e-4, atol=1e-6, quiet=True)
    assert ours.inertia == pytest.approx(ref.inertia_, rel=1e-4)


def test_kmeans_is_a_local_minimum_of_the_inertia():
    w = weights(2000, seed=5)
    r = W.kmeans(w, 8, tol=0.0)          # runs to strict convergence
    labels, c = r.labels, r.centroids
    assert r.converged
    for j in range(8):                   # each centroid is the mean of its members ...
        assert c[j] == pytest.approx(w[labels == j].mean(), abs=1e-12)
    nearest = np.abs(w[:, None] - c[None, :]).argmin(axis=1)
    assert np.array_equal(nearest, labels)   # ... and each weight is with its nearest centroid
    assert r.inertia == pytest.approx(((w - c[labels]) ** 2).sum(), rel=1e-12)


# ----------------------------------------------------------------------------- empty clusters
def test_one_empty_cluster_is_relocated_as_sklearn_does(be64):
    w = weights(500, seed=11)
    for c0 in ([-0.5, 0.0, 0.0, 0.5],              # a duplicate centroid: the second one is empty
               [-1.0, 0.0, 1.0, 50.0],             # a centroid far outside the weights
               [-0.2, -0.1, 0.1, 0.2, 0.2, 3.0]):  # empty at the start, and again later
        c0 = np.asarray(c0)
        ours = W.kmeans(B.to_backend(w, be64), len(c0), init=B.to_backend(c0, be64))
        assert_same_as_sklearn(ours, sklearn_fit(w, c0))
        assert len(np.unique(B.to_numpy(ours.labels))) == len(c0)


def test_relocation_takes_the_farthest_weight():
    w = np.array([0.0, 0.1, 0.2, 0.3, 10.0])
    r = W.kmeans(w, 2, init=np.array([0.1, 0.1]), max_iter=1, tol=0.0)
    # cluster 1 is empty (tie -> cluster 0); the farthest weight (10.0) becomes its centroid
    assert r.centroids.tolist() == pytest.approx([0.15, 10.0])
    assert r.labels.tolist() == [0, 0, 0, 0, 1]


@pytest.mark.filterwarnings("ignore:Number of distinct clusters")     # sklearn's result has a duplicate
def test_a_cluster_that_gives_all_its_weights_away_takes_the_mean_of_the_largest():
    w = np.array([0.0, 0.1, 0.2, 10.0, 10.2])
    c0 = np.array([7.0, 0.1, 20.0, 30.0])        # clusters 2 and 3 empty; 0 gives both its weights away
    r = W.kmeans(w, 4, init=c0, max_iter=1, tol=0.0)
    assert r.centroids.tolist() == pytest.approx([0.1, 0.1, 10.2, 10.0], abs=1e-15)
    ref = sklearn_fit(w, c0, max_iter=1, tol=0.0)
    # scikit-learn 1.9 copies the largest cluster's centred, not yet averaged sum (+ the data mean):
    # 0.3 - 3 * 4.1 + 4.1 = -7.9; the other three centroids agree
    assert ref.cluster_centers_[:, 0].tolist() == pytest.approx([-7.9, 0.1, 10.2, 10.0], abs=1e-12)


def test_several_empty_clusters_at_once_are_all_filled(backend_name, monkeypatch):
    b = B.get_backend(backend_name, "float64")
    w = weights(200, seed=2)
    c0 = np.full(20, w.mean())            # 19 empty clusters in the first iteration
    seen = watch_empty_clusters(monkeypatch)
    r = W.kmeans(B.to_backend(w, b), 20, init=B.to_backend(c0, b))
    assert seen[0] == (19, 0)
    assert_same_as_sklearn(r, sklearn_fit(w, c0))
    labels = B.to_numpy(r.labels)
    assert len(np.unique(labels)) == 20
    c = B.to_numpy(r.centroids)
    for j in range(20):
        assert c[j] == pytest.approx(w[labels == j].mean(), abs=1e-12)
    assert r.inertia <= ((w - w.mean()) ** 2).sum()


# ----------------------------------------------------------------------------- initialisations
def test_linear_and_density_initialisations(be64):
    w = weights(1001, seed=4, kind="laplace")
    x = B.to_backend(w, be64)
    for k in (1, 2, 7, 32):
        compare(W.init_centroids(x, k, "linear"), np.linspace(w.min(), w.max(), k), "numpy.linspace",
                rtol=0, atol=1e-15, quiet=True)
        probs = np.linspace(0, 1, k) if k > 1 else np.zeros(1)
        compare(W.init_centroids(x, k, "density"), np.quantile(w, probs), "numpy.quantile",
                rtol=0, atol=1e-15, quiet=True)


def test_density_puts_more_centroids_where_weights_are_dense():
    w = weights(4000, seed=6, kind="laplace")
    lin, dens = W.init_centroids(w, 16, "linear"), W.init_centroids(w, 16, "density")
    core = lambda c: int((np.abs(c) < 2 * w.std()).sum())
    assert core(dens) > core(lin)


def test_random_initialisation_is_uniform_between_min_and_max_and_seeded(be64):
    w = weights(300, seed=8)
    x = B.to_backend(w, be64)
    c = W.init_centroids(x, 16, "random", generator=B.generator(5))
    compare(c, np.random.default_rng(5).uniform(w.min(), w.max(), 16), "Generator.uniform", rtol=0, atol=1e-15,
            quiet=True)
    B.seed(3)
    first = B.to_numpy(W.init_centroids(x, 16, "random"))       # the project's generator by default
    B.seed(3)
    assert np.array_equal(first, B.to_numpy(W.init_centroids(x, 16, "random")))


@pytest.mark.parametrize("k", [1, 2, 4, 16, 32])
def test_kmeans_plus_plus_equals_sklearn_on_the_same_random_stream(be64, k):
    for seed in range(4):
        w = weights(700, seed=seed, kind=("normal", "laplace")[seed % 2])
        ref, _ = kmeans_plusplus(w.reshape(-1, 1), k, random_state=np.random.RandomState(seed))
        same_stream = np.random.Generator(np.random.RandomState(seed)._bit_generator)
        ours = W.init_centroids(B.to_backend(w, be64), k, "kmeans++", generator=same_stream)
        assert np.array_equal(B.to_numpy(ours), ref[:, 0])


# ----------------------------------------------------------------------------- bad input
BAD = {
    "k=0": (lambda w: W.kmeans(w, 0), ValueError, "k"),
    "k>n": (lambda w: W.kmeans(w[:3], 4), ValueError, "number of weights"),
    "k>distinct": (lambda w: W.kmeans(np.repeat(w[:3], 5), 4), ValueError, "distinct"),
    "k float": (lambda w: W.kmeans(w, 2.5), ValueError, "k"),
    "k str": (lambda w: W.kmeans(w, "4"), TypeError, "k"),
    "nan": (lambda w: W.kmeans(np.where(np.arange(w.shape[0]) == 3, np.nan, w), 2), ValueError, "w"),
    "inf": (lambda w: W.init_centroids(np.where(np.arange(w.shape[0]) == 3, np.inf, w), 2), ValueError, "w"),
    "empty": (lambda w: W.kmeans(w[:0], 1), ValueError, "w"),
    "int w": (lambda w: W.kmeans(np.arange(10), 2), TypeError, "w"),
    "list w": (lambda w: W.kmeans([0.1, 0.2], 2), TypeError, "w"),
    "init name": (lambda w: W.kmeans(w, 2, init="kmeans"), ValueError, "init"),
    "init kind": (lambda w: W.kmeans(w, 2, init=3), TypeError, "init"),
    "init shape": (lambda w: W.kmeans(w, 2, init=np.zeros(3)), ValueError, "init"),
    "init nan": (lambda w: W.kmeans(w, 2, init=np.array([0.0, np.nan])), ValueError, "init"),
    "init backend": (lambda w: W.kmeans(w, 2, init=torch.zeros(2, dtype=torch.float64)), TypeError, "init"),
    "max_iter": (lambda w: W.kmeans(w, 2, max_iter=0), ValueError, "max_iter"),
    "tol": (lambda w: W.kmeans(w, 2, tol=-1e-3), ValueError, "tol"),
    "tol nan": (lambda w: W.kmeans(w, 2, tol=float("nan")), ValueError, "tol"),
    "generator": (lambda w: W.kmeans(w, 2, init="random", generator=0), TypeError, "generator"),
    "index_dtype": (lambda w: W.index_dtype(0), ValueError, "k"),
    "ratio k>n": (lambda w: W.compression_ratio(10, 11), ValueError, "k"),
    "layer": (lambda w: W.SharedLayer(CrossEntropyLoss(), 4), TypeError, "layer"),
    "layer k": (lambda w: W.SharedLayer(Linear(2, 2), 5), ValueError, "layer's weight"),
    "layer masked": (lambda w: W.SharedLayer(masked_linear(), 2), ValueError, "mask"),
}


def masked_linear():
    layer = Linear(3, 2)
    layer._params["weight"].mask = np.array([[1, 0, 1], [1, 1, 0]])
    return layer


@pytest.mark.parametrize("case", BAD, ids=list(BAD))
def test_bad_input_raises_naming_the_argument(case):
    call, error, word = BAD[case]
    with pytest.raises(error, match=word):
        call(weights(40, seed=0))


def test_numpy_scalars_are_accepted():
    w = weights(40, seed=0)
    a = W.kmeans(w, np.int64(4), max_iter=np.int32(50), tol=np.float32(1e-4))
    b = W.kmeans(w, 4, max_iter=50, tol=float(np.float32(1e-4)))
    assert np.array_equal(a.labels, b.labels)


# ----------------------------------------------------------------------------- codebook + indices
def test_index_dtype_is_the_narrowest_and_share_weights_reconstructs(backend_name):
    assert [W.index_dtype(k) for k in (1, 256, 257, 2 ** 15, 2 ** 15 + 1, 2 ** 31, 2 ** 31 + 1)] == \
        ["uint8", "uint8", "int16", "int16", "int32", "int32", "int64"]
    assert [W.index_bits(k) for k in (1, 2, 3, 4, 5, 16, 17, 256)] == [0, 1, 2, 2, 3, 4, 5, 8]
    b = B.get_backend(backend_name, "float64")
    w = B.to_backend(weights(600, seed=9).reshape(20, 30), b)
    codebook, indices = W.share_weights(w, 16)
    assert tuple(indices.shape) == (20, 30) and B.dtype_name(indices) == "uint8" and tuple(codebook.shape) == (16,)
    r = W.kmeans(w, 16)
    rebuilt = B.to_numpy(codebook)[B.to_numpy(indices).astype(np.int64)]
    assert ((B.to_numpy(w) - rebuilt) ** 2).sum() == pytest.approx(r.inertia, rel=1e-12)


def test_compression_ratio_is_deep_compressions_formula():
    assert W.compression_ratio(1000, 16) == pytest.approx(1000 * 32 / (1000 * 4 + 16 * 32))
    assert W.compression_ratio(300 * 100, 64, bits=32) == pytest.approx(30000 * 32 / (30000 * 6 + 64 * 32))
    assert W.compression_ratio(5, 1) == pytest.approx(5.0)


# ----------------------------------------------------------------------------- the layer
def _shared_linear(b, k=8, bias=True):
    layer = Linear(12, 5, bias=bias, backend=b)
    return layer, W.SharedLayer(layer, k)


@pytest.mark.parametrize("dtype, rtol", [("float64", 1e-12), ("float32", 1e-4)])
def test_shared_linear_forward_and_backward_equal_torch_autograd(backend_name, dtype, rtol):
    b = B.get_backend(backend_name, dtype)
    layer, shared = _shared_linear(b)
    assert B.dtype_name(shared.indices) == "uint8" and B.dtype_name(shared.codebook.data) == dtype
    x = B.randn(7, 12, backend=b)
    out = shared.forward(x)
    dout = B.randn(7, 5, backend=b)
    dx = shared.backward(dout)

    as64 = lambda a: torch.tensor(B.to_numpy(a).astype(np.float64), requires_grad=True)
    c, bias, xt = as64(shared.codebook.data), as64(shared._params["bias"].data), as64(x)
    idx = torch.from_numpy(B.to_numpy(shared.indices).astype(np.int64))
    ref = TF.linear(xt, c[idx], bias)                    # float64 reference on the same values
    ref.backward(torch.from_numpy(B.to_numpy(dout).astype(np.float64)))
    compare(out, ref.detach(), "F.linear(x, codebook[indices])", rtol=rtol, atol=rtol, quiet=True)
    compare(dx, xt.grad, "torch autograd dx", rtol=rtol, atol=rtol, quiet=True)
    compare(shared.codebook.grad, c.grad, "torch autograd d codebook", rtol=rtol, atol=rtol, quiet=True)
    compare(shared._params["bias"].grad, bias.grad, "torch autograd d bias", rtol=rtol, atol=rtol, quiet=True)


def test_shared_conv2d_equals_torch_autograd(be64):
    conv = Conv2d(3, 4, 3, stride=2, padding=1, backend=be64)
    shared = W.SharedLayer(conv, 16)
    x = B.randn(2, 3, 7, 7, backend=be64)
    out = shared.forward(x)
    dout = B.randn(*out.shape, backend=be64)
    shared.backward(dout)
    c = torch.tensor(B.to_numpy(shared.codebook.data), requires_grad=True)
    idx = torch.from_numpy(B.to_numpy(shared.indices).astype(np.int64))
    bias = torch.from_numpy(B.to_numpy(shared._params["bias"].data))
    ref = TF.conv2d(torch.from_numpy(B.to_numpy(x)), c[idx], bias, stride=2, padding=1)
    ref.backward(torch.from_numpy(B.to_numpy(dout)))
    compare(out, ref.detach(), "F.conv2d(x, codebook[indices])", rtol=1e-12, atol=1e-12, quiet=True)
    compare(shared.codebook.grad, c.grad, "torch autograd d codebook", rtol=1e-12, atol=1e-12, quiet=True)
    assert shared.macs((2, 3, 7, 7), tuple(out.shape)) == conv.macs((2, 3, 7, 7), tuple(out.shape))


def test_shared_layer_gradients_pass_the_numerical_check():
    b = B.get_backend("numpy", "float64")
    _, shared = _shared_linear(b)
    x = B.randn(6, 12, backend=b)
    gradcheck(shared.forward, shared.backward, x, tol=1e-7, name="SharedLayer dx")
    codebook = shared.codebook

    def forward(c):
        codebook.data = c
        return shared.forward(x)

    def backward(g):
        shared.forward(x)
        shared.backward(g)
        return codebook.grad

    gradcheck(forward, backward, B.copy(codebook.data), tol=1e-7, name="SharedLayer d codebook")


def test_centroid_gradient_is_the_sum_of_member_gradients(be64):
    _, shared = _shared_linear(be64, k=4)
    x = B.randn(5, 12, backend=be64)
    shared.forward(x)
    shared.backward(B.randn(5, 5, backend=be64))
    dw = B.to_numpy(shared.layer._params["weight"].grad)
    idx = B.to_numpy(shared.indices)
    expected = [dw[idx == j].sum() for j in range(4)]
    compare(shared.codebook.grad, np.array(expected), "sum of member gradients", rtol=1e-12, atol=1e-13, quiet=True)


def test_shared_layer_leaves_the_original_alone_and_reports_bytes():
    b = B.get_backend("numpy", "float32")
    layer, shared = _shared_linear(b, k=16)
    before = layer._params["weight"].data.copy()
    shared.forward(B.randn(3, 12, backend=b))
    assert np.array_equal(layer._params["weight"].data, before)
    assert [n for n, _ in shared.named_parameters()] == ["codebook", "bias"]
    assert list(shared.state_dict()) == ["codebook", "bias", "indices"]
    n = 12 * 5
    assert shared.parameter_bytes() == math.ceil((n * 4 + 16 * 32 + 5 * 32) / 8)
    assert shared.parameter_bytes(bits=16) == math.ceil((n * 4 + 16 * 16 + 5 * 16) / 8)
    _, no_bias = _shared_linear(b, k=3, bias=False)
    assert no_bias.parameter_bytes() == math.ceil((n * 2 + 3 * 32) / 8)
    assert shared.macs((3, 12), (3, 5)) == layer.macs((3, 12), (3, 5)) == 3 * 12 * 5
    shared.codebook.data[0] = 0.0            # the weights of centroid 0 become zeros
    zeros = int((B.to_numpy(shared.indices) == 0).sum())
    nz_bias = int(np.count_nonzero(shared._params["bias"].data))
    assert shared.parameter_bytes(nonzero=True) == math.ceil(((n - zeros) * 4 + 15 * 32 + nz_bias * 32) / 8)


def test_shared_layer_state_dict_round_trip_and_bad_indices():
    b = B.get_backend("numpy", "float64")
    _, shared = _shared_linear(b, k=8)
    _, other = _shared_linear(b, k=8)
    other.load_state_dict(shared.state_dict())
    x = B.randn(4, 12, backend=b)
    assert np.array_equal(other.forward(x), shared.forward(x))
    state = dict(shared.state_dict())
    for bad in (8, 300, -1):                      # 300 and -1 would wrap into uint8 range if cast first
        wide = state["indices"].astype(np.int64)
        wide[0, 0] = bad
        with pytest.raises(ValueError, match="indices"):
            other.load_state_dict({**state, "indices": wide})
    other.load_state_dict({**state, "indices": state["indices"].astype(np.int64)})   # in range: cast, accepted
    assert other.indices.dtype == np.uint8
    big = W.SharedLayer(Linear(12, 30, backend=b), 256)
    state = dict(big.state_dict())
    wide = state["indices"].astype(np.int64)
    wide[0, 0] = 256                              # uint8 would hold it as 0: refused before the cast
    with pytest.raises(ValueError, match=r"\[0, 256\)"):
        big.load_state_dict({**state, "indices": wide})


def test_shared_layer_moves_between_backends():
    _, shared = _shared_linear(B.get_backend("numpy", "float64"), k=8)
    x = B.randn(4, 12, backend=B.get_backend("numpy", "float64"))
    want = shared.forward(x)
    shared.to(B.get_backend("torch-cpu", "float64"))
    assert B.is_torch(shared.indices) and shared.indices.dtype == torch.uint8
    compare(shared.forward(B.to_backend(x, "torch-cpu", dtype="float64")), want, "numpy run", quiet=True)


def test_fine_tuning_the_centroids_with_fit_lowers_the_loss(backend_name):
    b = B.get_backend(backend_name, "float32")
    g = np.random.default_rng(0)
    x = g.standard_normal((256, 10))
    y = (x[:, :3].sum(axis=1) > 0).astype(np.int64) + (x[:, 3] > 1).astype(np.int64)
    x, y = B.to_backend(x, b), B.to_backend(y, b)
    model = models.mlp((10, 32, 3), backend=b)
    fit(model, (x, y), epochs=8, batch_size=32, lr=0.2, seed=0, progress=False)
    shared = models_with_shared(model, k=4)
    before_cb = B.to_numpy(shared[0].codebook.data).copy()
    indices = B.to_numpy(shared[0].indices).copy()
    hist = fit(shared, (x, y), epochs=5, batch_size=32, lr=0.05, seed=1, progress=False)
    assert hist["loss"][-1] < hist["loss"][0]
    assert not np.array_equal(B.to_numpy(shared[0].codebook.data), before_cb)   # the centroids moved
    assert np.array_equal(B.to_numpy(shared[0].indices), indices)               # the assignment did not


def models_with_shared(model, k):
    from nnopt_lab.nn.layers import Sequential
    return Sequential(*[W.SharedLayer(m, k) if isinstance(m, Linear) else m for m in model])


def test_one_cluster_is_the_mean_and_its_inertia_n_times_the_variance(be64):
    w = weights(500, seed=12)
    r = W.kmeans(B.to_backend(w, be64), 1)
    assert B.float_of(r.centroids[0]) == pytest.approx(w.mean(), abs=1e-14)
    assert r.inertia == pytest.approx(w.size * w.var(), rel=1e-12)
    assert int(B.to_numpy(r.labels).max()) == 0
