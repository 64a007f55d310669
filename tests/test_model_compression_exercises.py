"""The exercise checkers of chapters/03_1_model_compression.ipynb: a right answer passes on every
backend, each named mistake is recognised, a learner who has not started is told so; and the
checkers' own references equal torch (MinMaxObserver + fake_quantize_per_tensor_affine) and
scikit-learn (KMeans from the same init) on the checkers' fixed inputs."""
import warnings

import numpy as np
import pytest
import torch
from sklearn.cluster import KMeans

from nnopt_lab import backend as B
from nnopt_lab.exercises import checks
from nnopt_lab.exercises import model_compression as ex


# ----------------------------------------------------------------------------- learners' answers
def linear_quantize(w, bits):
    xp = B.namespace(w)
    lo, hi = min(B.float_of(xp.min(w)), 0.0), max(B.float_of(xp.max(w)), 0.0)
    qmax = 2 ** bits - 1
    scale = (hi - lo) / qmax
    zero_point = int(min(max(-round(lo / scale), 0), qmax))
    return xp.clip(xp.round(w / scale) + zero_point, 0, qmax), scale, zero_point


def kmeans_quantize(w, centroids, max_iter=300):
    xp = B.namespace(w)
    x = xp.reshape(w, (-1,))
    c, labels = centroids, None
    for _ in range(max_iter):
        new = xp.argmin(xp.abs(x[:, None] - c[None, :]), axis=1)
        if labels is not None and bool(xp.all(new == labels)):
            break
        labels = new
        c = xp.stack([xp.mean(x[labels == j]) for j in range(c.shape[0])])
    return c, xp.reshape(labels, tuple(w.shape))


def not_started(*args):
    raise NotImplementedError


def broken(*args):
    return 1 / 0


@pytest.fixture
def on_backend(backend_name):
    B.set_backend(backend_name, "float64")
    yield


def test_right_answers_pass_on_every_backend(on_backend, capsys):
    ex.check_linear_quantize(linear_quantize)
    ex.check_kmeans_quantize(kmeans_quantize)
    out = capsys.readouterr().out
    assert out.count("✓") == 2


@pytest.mark.parametrize("checker", [ex.check_linear_quantize, ex.check_kmeans_quantize], ids=lambda c: c.__name__)
def test_not_started_and_broken_are_told_apart(checker):
    with pytest.raises(checks.ExerciseFailed, match="not answered yet .*NotImplementedError"):
        checker(not_started)
    with pytest.raises(AssertionError, match="raised ZeroDivisionError"):
        checker(broken)
    with pytest.raises(TypeError, match="must be a function"):
        checker(3)


# ----------------------------------------------------------------------------- linear_quantize mistakes
def _variant(kind):
    def fn(w, bits):
        xp = B.namespace(w)
        lo, hi = B.float_of(xp.min(w)), B.float_of(xp.max(w))
        if kind != "no_widen":
            lo, hi = min(lo, 0.0), max(hi, 0.0)
        qmax = 2 ** bits - 1
        scale = (hi - lo) / (2 ** bits if kind == "off_by_one" else qmax)
        z = -round(lo / scale)
        if kind == "float_z":
            z = -lo / scale
        if kind == "neg_z":
            z = round(lo / scale)
        z = min(max(z, 0), qmax) if kind not in ("neg_z",) else z
        if kind == "symmetric":
            top = 2 ** (bits - 1) - 1
            scale, z = max(abs(lo), abs(hi)) / top, 0
            return xp.clip(xp.round(w / scale), -top, top), scale, z
        y = w / scale
        codes = xp.floor(y) if kind == "floor" else xp.round(y)
        if kind == "subtract_z":
            return xp.clip(codes - z, 0, qmax), scale, z
        codes = xp.clip(codes + z, 0, qmax)
        if kind == "values":
            return (codes - z) * scale, scale, z
        return codes, scale, z
    return fn


@pytest.mark.parametrize("kind, message", [
    ("no_widen", "not widened to contain 0"),
    ("off_by_one", "off by one level"),
    ("float_z", "must be an integer"),
    ("neg_z", "wrong sign"),
    ("symmetric", "symmetric scheme"),
    ("floor", "truncated \\(floor\\)"),
    ("subtract_z", "subtracted"),
    ("values", "dequantized values"),
])
def test_linear_quantize_mistakes_are_named(kind, message):
    with pytest.raises(checks.ExerciseFailed, match=message):
        ex.check_linear_quantize(_variant(kind))


def test_linear_quantize_wrong_return_shape_is_named():
    with pytest.raises(AssertionError, match=r"must return a tuple \(codes, scale, zero_point\)"):
        ex.check_linear_quantize(lambda w, bits: w)
    with pytest.raises(AssertionError, match="returned shape"):
        ex.check_linear_quantize(lambda w, bits: (w[:1], 1.0, 0))


def test_linear_quantize_reference_equals_torch_observer_and_fake_quant():
    """On the checker's very inputs: scale, zero point from MinMaxObserver; codes from torch's fake quant."""
    from torch.ao.quantization.observer import MinMaxObserver
    for _, w, bits in ex.linear_quantize_cases():
        w32 = torch.from_numpy(B.to_numpy(w).astype("float32"))
        obs = MinMaxObserver(dtype=torch.quint8, quant_min=0, quant_max=2 ** bits - 1)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            obs(w32)
            scale, zp = obs.calculate_qparams()
        codes, s, z = ex._reference_quantize(w, bits)
        assert s == float(scale) and z == int(zp)
        fq = torch.fake_quantize_per_tensor_affine(w32, float(scale), int(zp), 0, 2 ** bits - 1)
        assert np.array_equal(np.round(fq.numpy() / np.float32(s)) + z, codes)
        # and the learner's float64 answer equals it too (no input lies next to a tie)
        mine = linear_quantize(w, bits)
        assert np.array_equal(B.to_numpy(mine[0]), codes) and mine[2] == z


# ----------------------------------------------------------------------------- kmeans mistakes
def _one_round(w, c):
    xp = B.namespace(w)
    x = xp.reshape(w, (-1,))
    labels = xp.argmin(xp.abs(x[:, None] - c[None, :]), axis=1)
    return xp.stack([xp.mean(x[labels == j]) for j in range(c.shape[0])]), labels


def _sorted_answer(w, c):
    codebook, labels = kmeans_quantize(w, c)
    xp = B.namespace(codebook)
    return xp.sort(codebook), labels


@pytest.mark.parametrize("fn, message", [
    (_one_round, "stopped after 1 assign-and-update round"),
    (_sorted_answer, "another order"),
    (lambda w, c: (c, kmeans_quantize(w, c)[1]), "the codebook is the starting centroids"),
    (lambda w, c: (kmeans_quantize(w, c)[0], B.namespace(w).zeros(tuple(w.shape), dtype=B.namespace(w).int64)),
     "labels are not the nearest"),
    (lambda w, c: w, "reconstructed weight"),
    (lambda w, c: (kmeans_quantize(w, c)[0][:2], kmeans_quantize(w, c)[1]), "must hold k = 4 centroids"),
])
def test_kmeans_mistakes_are_named(fn, message):
    with pytest.raises(checks.ExerciseFailed, match=message):
        ex.check_kmeans_quantize(fn)


def test_kmeans_reference_equals_sklearn_from_the_same_init():
    for _, w, init in ex.kmeans_cases():
        x = B.to_numpy(w).reshape(-1, 1)
        c0 = B.to_numpy(init).reshape(-1, 1)
        ref = KMeans(n_clusters=c0.shape[0], init=c0, n_init=1, algorithm="lloyd", tol=0.0).fit(x)
        from nnopt_lab.compression.weight_sharing import kmeans
        ours = kmeans(w, c0.shape[0], init=init, tol=0.0)
        assert np.array_equal(B.to_numpy(ours.labels), ref.labels_)
        assert abs(ours.inertia - ref.inertia_) <= 1e-10 * max(1.0, ref.inertia_)
        np.testing.assert_allclose(B.to_numpy(ours.centroids), ref.cluster_centers_[:, 0], rtol=1e-12, atol=1e-14)
        # no cluster empties on these inputs, so the learner's plain loop is the reference
        counts = np.bincount(ref.labels_, minlength=c0.shape[0])
        assert (counts > 0).all()
