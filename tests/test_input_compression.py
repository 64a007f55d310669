"""nnopt_lab.preprocessing.input_compression against references.

References: sklearn.decomposition.PCA; torch.nn.functional.unfold/fold (patches);
torch.fake_quantize_per_tensor_affine (k-bit inputs); brute-force Otsu, Floyd–Steinberg, reshape-mean
and numpy argsort written here.
"""
import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits
from sklearn.decomposition import PCA as SkPCA

from nnopt_lab import backend as B
from nnopt_lab.preprocessing import input_compression as IC


@pytest.fixture(scope="module")
def digits():
    """Raw digits pixels scaled to [0, 1] (values k/16), shape (1797, 64), float64."""
    return load_digits().data / 16.0


def images_of(x):
    return x.reshape(-1, 1, 8, 8)


# ----------------------------------------------------------------------------- integer-ization
def test_seed_example_is_two_bit_step_on_integers(be64):
    # np.round(x / 2) * 2 on integers 0..16 == a uniform quantizer with Δ = 2, z = 0, codes 0..8
    x = np.arange(0, 17, dtype=np.float64)
    from nnopt_lab.compression.quantization import fake_quantize
    ours = B.to_numpy(fake_quantize(be64.asarray(x), 2.0, 0, 0, 8))
    np.testing.assert_array_equal(ours, np.round(x / 2) * 2)


@pytest.mark.parametrize("bits", [1, 2, 4, 8])
def test_quantize_inputs_matches_torch_fake_quant(be32, digits, bits):
    x = digits[:200].astype(np.float32)
    ours = B.to_numpy(IC.quantize_inputs(be32.asarray(x), bits, 0.0, 1.0))
    steps = 2 ** bits - 1
    ref = torch.fake_quantize_per_tensor_affine(torch.from_numpy(x), float(np.float32(1 / steps)), 0, 0,
                                                steps).numpy()
    # pixels k/16 with k/16 · (2^b - 1) exactly halfway between two levels (e.g. 8/16 at 4 bits):
    # torch's float32 scale 1/15 is inexact and tips the tie; the exact tie rounds half to even
    exact = digits[:200] * steps                      # exact in float64 (k · steps / 16)
    tie = exact % 1 == 0.5
    np.testing.assert_allclose(ours[~tie], ref[~tie], rtol=0, atol=1e-6)
    np.testing.assert_allclose(ours[tie], np.round(exact[tie]) / steps, rtol=0, atol=1e-6)
    assert tie.any()                                  # pixel 8/16 is a tie at every bit width


def test_five_bits_keep_every_digit_value_distinct(be64, digits):
    # 17 input values (k/16) on 32 levels: all stay distinct
    x = be64.asarray(np.arange(17) / 16.0)
    assert len(np.unique(B.to_numpy(IC.quantize_inputs(x, 5)))) == 17
    assert len(np.unique(B.to_numpy(IC.quantize_inputs(x, 4)))) < 17


def test_uniform_dither_keeps_the_mean_and_uses_two_neighbouring_levels(be64):
    x = be64.asarray(np.full(20000, 0.4))
    out = B.to_numpy(IC.quantize_inputs(x, 1, dither="uniform"))
    assert set(np.unique(out).tolist()) == {0.0, 1.0}
    assert abs(out.mean() - 0.4) < 0.02          # 5 sigma of a mean of 20000 coin flips


def floyd_steinberg_by_hand(img, bits, lo, hi):
    """One image (H, W), pure Python loops (Floyd & Steinberg 1976, raster order)."""
    work = [list(map(float, row)) for row in img]
    h, w = len(work), len(work[0])
    steps = 2 ** bits - 1
    delta = (hi - lo) / steps
    out = [[0.0] * w for _ in range(h)]
    for i in range(h):
        for j in range(w):
            code = min(max(round((work[i][j] - lo) / delta), 0), steps)   # Python rounds half to even
            out[i][j] = lo + code * delta
            e = work[i][j] - out[i][j]
            for di, dj, share in ((0, 1, 7 / 16), (1, -1, 3 / 16), (1, 0, 5 / 16), (1, 1, 1 / 16)):
                if i + di < h and 0 <= j + dj < w:
                    work[i + di][j + dj] += share * e
    return np.array(out)


@pytest.mark.parametrize("bits", [1, 2])
def test_floyd_steinberg_matches_hand_loop(be64, digits, bits):
    imgs = digits[:5].reshape(5, 8, 8)
    ours = B.to_numpy(IC.quantize_inputs(be64.asarray(imgs), bits, dither="floyd-steinberg"))
    ref = np.stack([floyd_steinberg_by_hand(im, bits, 0.0, 1.0) for im in imgs])
    np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-12)


def test_floyd_steinberg_of_flat_grey_keeps_its_mean(be64):
    grey = be64.asarray(np.full((1, 16, 16), 0.25))
    out = B.to_numpy(IC.floyd_steinberg(grey, 1))
    assert set(np.unique(out).tolist()) == {0.0, 1.0}
    assert abs(out.mean() - 0.25) < 0.03            # plain rounding would give 0 everywhere


# ----------------------------------------------------------------------------- binarization
def otsu_brute_force(values):
    """Try every distinct value t as the cut (class 0: x <= t); maximize ω0 ω1 (μ0 - μ1)²."""
    v = np.asarray(values, dtype=np.float64).ravel()
    best_t, best = None, -1.0
    for t in np.unique(v)[:-1]:
        c0, c1 = v[v <= t], v[v > t]
        w0, w1 = len(c0) / len(v), len(c1) / len(v)
        between = w0 * w1 * (c0.mean() - c1.mean()) ** 2
        if between > best:
            best_t, best = t, between
    return float(best_t)


def test_otsu_matches_brute_force_on_digits(be64, digits):
    x = digits[:300]
    assert IC.otsu_threshold(be64.asarray(x)) == otsu_brute_force(x)


def test_otsu_matches_brute_force_on_bimodal_data(be64):
    g = B.generator(2)
    x = np.concatenate([g.normal(0.2, 0.05, 300), g.normal(0.7, 0.1, 150)])
    t = IC.otsu_threshold(be64.asarray(x))
    assert t == otsu_brute_force(x)
    assert 0.3 < t < 0.6


def test_binarize_and_one_bit_quantizer_agree_at_the_midpoint(be64, digits):
    x = be64.asarray(digits[:100])
    np.testing.assert_array_equal(B.to_numpy(IC.binarize(x, 0.5)), B.to_numpy(IC.quantize_inputs(x, 1)))
    np.testing.assert_array_equal(B.to_numpy(IC.binarize(x, 0.3)), (digits[:100] > 0.3).astype(float))


# ----------------------------------------------------------------------------- spatial split
@pytest.mark.parametrize("factor", [1, 2, 4])
def test_downsample_mean_equals_reshape_mean(be64, digits, factor):
    imgs = images_of(digits[:50])
    ref = imgs.reshape(50, 1, 8 // factor, factor, 8 // factor, factor).mean(axis=(3, 5))
    ours = B.to_numpy(IC.downsample(be64.asarray(imgs), factor))
    np.testing.assert_allclose(ours, ref, rtol=1e-12, atol=1e-14)


def test_downsample_stride_and_upsample(be64, digits):
    imgs = images_of(digits[:10])
    small = B.to_numpy(IC.downsample(be64.asarray(imgs), 2, method="stride"))
    np.testing.assert_array_equal(small, imgs[:, :, 0::2, 0::2])
    big = B.to_numpy(IC.upsample(be64.asarray(small), 2))
    np.testing.assert_array_equal(big, small.repeat(2, axis=2).repeat(2, axis=3))


@pytest.mark.parametrize("patch", [1, 2, 4])
def test_patches_match_torch_unfold_and_round_trip(be64, patch):
    x = B.generator(0).standard_normal((3, 2, 8, 8))
    ours = IC.to_patches(be64.asarray(x), patch)
    ref = torch.nn.functional.unfold(torch.from_numpy(x), patch, stride=patch).transpose(1, 2).numpy()
    np.testing.assert_array_equal(B.to_numpy(ours), ref)
    np.testing.assert_array_equal(B.to_numpy(IC.from_patches(ours, (2, 8, 8), patch)), x)


# ----------------------------------------------------------------------------- feature split
@pytest.mark.parametrize("k", [1, 10, 64])
def test_top_variance_matches_argsort(be64, digits, k):
    x = digits[:400]
    sel = IC.TopVarianceSelector(k).fit(be64.asarray(x))
    ref_idx = np.argsort(-x.var(axis=0), kind="stable")[:k]
    np.testing.assert_array_equal(B.to_numpy(sel.indices_), ref_idx)
    np.testing.assert_allclose(B.to_numpy(sel.variances_), x.var(axis=0), rtol=1e-12, atol=1e-15)
    z = sel.transform(be64.asarray(x))
    np.testing.assert_array_equal(B.to_numpy(z), x[:, ref_idx])
    back = B.to_numpy(sel.inverse_transform(z))
    expected = np.broadcast_to(x.mean(axis=0), x.shape).copy()
    expected[:, ref_idx] = x[:, ref_idx]
    np.testing.assert_allclose(back, expected, rtol=1e-12, atol=1e-15)


def aligned(ours, ref):
    """Flip the signs of ours' components (rows) to match ref's (PCA is defined up to sign)."""
    return ours * np.sign((ours * ref).sum(axis=1, keepdims=True))


@pytest.mark.parametrize("k", [2, 10, 40])
def test_pca_matches_sklearn(be64, digits, k):
    x_train, x_test = digits[:500], digits[500:700]
    ours = IC.PCA(k).fit(be64.asarray(x_train))
    ref = SkPCA(k, svd_solver="full").fit(x_train)
    comps = B.to_numpy(ours.components_)
    np.testing.assert_allclose(np.abs((comps * ref.components_).sum(axis=1)), 1.0, rtol=1e-10)
    np.testing.assert_allclose(aligned(comps, ref.components_), ref.components_, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(B.to_numpy(ours.explained_variance_ratio_), ref.explained_variance_ratio_,
                               rtol=1e-10)
    np.testing.assert_allclose(B.to_numpy(ours.explained_variance_), ref.explained_variance_, rtol=1e-10)
    np.testing.assert_allclose(B.to_numpy(ours.singular_values_), ref.singular_values_, rtol=1e-10)
    np.testing.assert_allclose(B.to_numpy(ours.mean_), ref.mean_, rtol=1e-12)
    z = B.to_numpy(ours.transform(be64.asarray(x_test)))
    z_ref = ref.transform(x_test)
    signs = np.sign((comps * ref.components_).sum(axis=1))
    np.testing.assert_allclose(z * signs, z_ref, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(B.to_numpy(ours.inverse_transform(be64.asarray(z))), ref.inverse_transform(z_ref),
                               rtol=1e-8, atol=1e-10)


def test_pca_sign_convention_matches_sklearn(be64, digits):
    # scikit-learn >= 1.5: the largest-magnitude entry of each component is positive
    ours = B.to_numpy(IC.PCA(8).fit(be64.asarray(digits[:400])).components_)
    largest = ours[np.arange(8), np.abs(ours).argmax(axis=1)]
    assert (largest > 0).all()


def test_pca_with_all_components_reconstructs_exactly(be64, digits):
    x = be64.asarray(digits[:300])
    pca = IC.PCA(64).fit(x)
    np.testing.assert_allclose(B.to_numpy(pca.reconstruct(x)), digits[:300], atol=1e-12)
    assert abs(B.float_of(B.namespace(x).sum(pca.explained_variance_ratio_)) - 1.0) < 1e-12
    # fewer components: the error is the discarded variance (Eckart–Young)
    err = B.to_numpy(pca.reconstruct(x, 10)) - digits[:300]
    discarded = B.to_numpy(pca.singular_values_)[10:] ** 2
    assert abs((err ** 2).sum() - discarded.sum()) < 1e-9 * discarded.sum()


def test_pca_float32_close_to_sklearn(be32, digits):
    x = digits[:500]
    ours = IC.PCA(10).fit(be32.asarray(x))
    ref = SkPCA(10, svd_solver="full").fit(x)
    np.testing.assert_allclose(B.to_numpy(ours.explained_variance_ratio_), ref.explained_variance_ratio_, rtol=1e-4)


def test_numpy_and_torch_agree(digits):
    x = digits[:300]
    n, t = B.get_backend("numpy", "float64"), B.get_backend("torch-cpu", "float64")
    for fn in (lambda a: IC.PCA(5).fit(a).transform(a), lambda a: IC.downsample(B.namespace(a).reshape(a, (-1, 1, 8, 8)), 2),
               lambda a: IC.quantize_inputs(a, 3), lambda a: IC.TopVarianceSelector(7).fit_transform(a)):
        np.testing.assert_allclose(B.to_numpy(fn(n.asarray(x))), B.to_numpy(fn(t.asarray(x))), rtol=1e-9, atol=1e-12)
    assert IC.otsu_threshold(n.asarray(x)) == IC.otsu_threshold(t.asarray(x))


# ----------------------------------------------------------------------------- bytes per sample
def test_bytes_per_sample_by_hand():
    assert IC.bytes_per_sample("float32", 64) == 256            # 64 × 4 bytes
    assert IC.bytes_per_sample("kbit", 64, bits=4) == 32        # 64 × 4 bits / 8
    assert IC.bytes_per_sample("kbit", 64, bits=3) == 24
    assert IC.bytes_per_sample("binary", 64) == 8               # 64 bits
    assert IC.bytes_per_sample("downsample", 64, factor=2) == 64   # 16 values × 4 bytes
    assert IC.bytes_per_sample("downsample", 64, factor=2, bits=8) == 16
    assert IC.bytes_per_sample("top_variance", 64, k=20) == 80
    assert IC.bytes_per_sample("pca", 64, k=10) == 40
    assert IC.bytes_per_sample("pca", 64, k=10, bits=8) == 10
    assert IC.bytes_per_sample("binary", 4) == 0.5


# ----------------------------------------------------------------------------- errors
def test_bad_arguments_raise(digits):
    x = digits[:20]
    with pytest.raises(ValueError, match=r"dither must be one of \(None, 'uniform', 'floyd-steinberg'\), got 'blue'"):
        IC.quantize_inputs(x, 2, dither="blue")
    with pytest.raises(ValueError, match=r"bits must be an int in \[1, 16\], got 0"):
        IC.quantize_inputs(x, 0)
    with pytest.raises(ValueError, match=r"factor must divide the image size 8×8, got 3"):
        IC.downsample(images_of(x), 3)
    with pytest.raises(ValueError, match=r"images must have 4 axes \(N, C, H, W\), got shape \(20, 64\)"):
        IC.downsample(x, 2)
    with pytest.raises(ValueError, match=r"method must be one of \('mean', 'stride'\), got 'max'"):
        IC.downsample(images_of(x), 2, method="max")
    with pytest.raises(ValueError, match=r"patch must divide the image size 8×8, got 3"):
        IC.to_patches(images_of(x), 3)
    with pytest.raises(ValueError, match=r"n_components must be <= min\(N, D\) = 20, got 30"):
        IC.PCA(30).fit(x)
    with pytest.raises(ValueError, match=r"n_components must be an int >= 1, got 0"):
        IC.PCA(0)
    with pytest.raises(ValueError, match=r"PCA is not fitted yet"):
        IC.PCA(2).transform(x)
    with pytest.raises(ValueError, match=r"x has 10 features, but PCA was fitted with 64"):
        IC.PCA(2).fit(x).transform(x[:, :10])
    with pytest.raises(ValueError, match=r"k must be <= the number of features 64, got 65"):
        IC.TopVarianceSelector(65).fit(x)
    with pytest.raises(ValueError, match=r"x must hold at least two distinct values"):
        IC.otsu_threshold(np.ones(5))
    with pytest.raises(ValueError, match=r"method must be one of"):
        IC.bytes_per_sample("jpeg", 64)
    with pytest.raises(ValueError, match=r"bits must be given for method 'kbit'"):
        IC.bytes_per_sample("kbit", 64)
    with pytest.raises(ValueError, match=r"k must be given for method 'pca'"):
        IC.bytes_per_sample("pca", 64)
    with pytest.raises(ValueError, match=r"bits must be None or 1 for method 'binary', got 4"):
        IC.bytes_per_sample("binary", 64, bits=4)


# ----------------------------------------------------------------------------- explorer (widget compute)
def test_explore_reports_bytes_error_and_accuracy(digits):
    from nnopt_lab.widgets.input_compression import explore
    x = B.get_backend("numpy", "float64").asarray(digits[:6])
    pca = IC.PCA(32).fit(B.get_backend("numpy", "float64").asarray(digits[:500]))
    acc = {("kbit", 3): 0.9, ("pca", 8): 0.8}
    r = explore(x, 3, 8, pca, acc)
    assert r["kbit_bytes"] == 24 and r["pca_bytes"] == 32          # 64·3/8 ; 8·4
    assert (r["kbit_acc"], r["pca_acc"]) == (0.9, 0.8)
    assert explore(x, 4, 8, pca, acc)["kbit_acc"] is None
    np.testing.assert_allclose(r["kbit"], np.round(digits[:6] * 7) / 7, atol=1e-12)
    assert r["kbit_mse"] == pytest.approx(((r["kbit"] - digits[:6]) ** 2).mean(), rel=1e-12)
    # more components, less error; 32 components nearly lossless on digits
    errors = [explore(x, 3, k, pca)["pca_mse"] for k in (2, 8, 32)]
    assert errors[0] > errors[1] > errors[2]


def test_plots_and_widget_build(digits):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from nnopt_lab.widgets import input_compression as W
    x = B.get_backend("numpy", "float64").asarray(digits[:4])
    pca = IC.PCA(16).fit(B.get_backend("numpy", "float64").asarray(digits[:300]))
    fig = W.reconstruction_grid(x, pca, bits_list=(1, 2), components_list=(2, 8))
    assert [ax.get_title(loc='left').split(':')[0] for ax in fig.axes] == [
        'original (float32)', '1-bit', '2-bit', 'PCA k=2', 'PCA k=8']
    assert fig.axes[0].get_images()[0].get_array().shape == (8, 4 * 9 - 1)     # 4 digits, 1-px gaps
    fig2 = W.plot_explorer(W.explore(x, 2, 4, pca))
    assert len(fig2.axes) == 3
    plt.close("all")
    w = W.explorer(x, pca, {("kbit", 3): 0.5})
    assert [c.description for c in w.controls.values()] == ["bits", "PCA k"]
    assert list(w.controls["n_components"].options) == [1, 2, 4, 8, 16]
    first = w.image.value
    w.controls["bits"].value = 3                                   # a redraw: new pixels, new title
    assert w.image.value != first and w.image.value[:8] == b"\x89PNG\r\n\x1a\n"
    assert w.view.axes[1].get_title(loc="left").startswith("3-bit") and "50.0 %" in w.view.axes[1].get_title(loc="left")
    ref = W.explore(x, 3, w.controls["n_components"].value, pca)
    assert (w.view.images[1].get_array() == np.array(W._strip(ref["kbit"], (8, 8)))).all()


# ----------------------------------------------------------------------------- exercise checkers
def kbit_right(x, bits):
    steps = 2 ** bits - 1
    xp = B.namespace(x)
    return xp.clip(xp.round(x * steps), 0, steps) / steps


@pytest.mark.parametrize("wrong,message", [
    (lambda x, b: B.namespace(x).clip(B.namespace(x).round(x * 2 ** b), 0, 2 ** b) / 2 ** b, "levels are off by one"),
    (lambda x, b: B.namespace(x).clip(B.namespace(x).round(x * (2 ** b - 1)), 0, 2 ** b - 1), "integer codes"),
    (lambda x, b: B.namespace(x).clip(B.namespace(x).floor(x * (2 ** b - 1)), 0, 2 ** b - 1) / (2 ** b - 1), "floor"),
    (lambda x, b: B.namespace(x).round(x * (2 ** b - 1)) / (2 ** b - 1), "not clamped"),
])
def test_kbit_checker_names_the_mistake(wrong, message):
    from nnopt_lab.exercises.input_compression import check_kbit_quantizer
    check_kbit_quantizer(kbit_right)
    with pytest.raises(AssertionError, match=message):
        check_kbit_quantizer(wrong)


def evr_right(x):
    xp = B.namespace(x)
    s = xp.linalg.svd(x - xp.mean(x, axis=0), full_matrices=False)[1]
    return s ** 2 / xp.sum(s ** 2)


@pytest.mark.parametrize("wrong,message", [
    (lambda x: (lambda s: s ** 2 / B.namespace(x).sum(s ** 2))(B.namespace(x).linalg.svd(x, full_matrices=False)[1]),
     "forgot to centre"),
    (lambda x: (lambda s: s / B.namespace(x).sum(s))(
        B.namespace(x).linalg.svd(x - B.namespace(x).mean(x, axis=0), full_matrices=False)[1]), "SQUARE"),
    (lambda x: B.namespace(x).flip(evr_right(x)), "reversed"),
    (lambda x: evr_right(x)[:3], "one ratio per component"),
])
def test_explained_variance_checker_names_the_mistake(wrong, message):
    from nnopt_lab.exercises.input_compression import check_explained_variance_ratio
    check_explained_variance_ratio(evr_right)
    with pytest.raises(AssertionError, match=message):
        check_explained_variance_ratio(wrong)


def test_otsu_checker_accepts_right_and_names_mistakes():
    from nnopt_lab.exercises.input_compression import check_otsu_threshold
    check_otsu_threshold(otsu_brute_force)
    check_otsu_threshold(lambda x: IC.otsu_threshold(x) + 1e-9)             # same classes: accepted
    with pytest.raises(AssertionError, match="mean of the data"):
        check_otsu_threshold(lambda x: float(B.to_numpy(x).mean()))
    with pytest.raises(AssertionError, match="SMALLEST between-class variance"):
        check_otsu_threshold(lambda x: float(np.unique(B.to_numpy(x))[0]))


@pytest.mark.parametrize("call, error, match", [
    # each leaked another exception (LinAlgError, numpy's), named an inner argument, or was silent before
    (lambda x: IC.PCA(2).fit(np.where(x > 0.9, np.inf, x)), ValueError, r"x must be finite"),
    (lambda x: IC.TopVarianceSelector(2).fit(np.where(x > 0.9, np.nan, x)), ValueError, r"x must be finite"),
    (lambda x: IC.PCA(2).fit(3.0), TypeError, r"x must be a numpy array or torch tensor"),
    (lambda x: IC.PCA(2).fit(x[:0]), ValueError, r"x must not be empty"),
    (lambda x: IC.floyd_steinberg(np.where(x > 0.9, np.nan, x).reshape(2, 1, 4, 4), 1), ValueError,
     r"images must be finite"),
    (lambda x: IC.downsample((x * 10).astype(np.uint8).reshape(2, 1, 4, 4), 2), TypeError,
     r"images must be a floating-point array to average"),
    (lambda x: IC.upsample(x.reshape(2, 1, 4, 4), 2 ** 40), ValueError, r"factor must be an int in \[1, 1024\]"),
    (lambda x: IC.from_patches(x.reshape(2, 4, 4), 16, 2), TypeError, r"image_shape must be a tuple"),
    (lambda x: IC.binarize(x, float("nan")), ValueError, r"threshold must be a number"),
    (lambda x: IC.otsu_threshold(np.where(x > 0.9, np.nan, x)), ValueError, r"x must be finite"),
])
def test_more_bad_arguments_are_named(call, error, match):
    with pytest.raises(error, match=match):
        call(np.random.default_rng(0).random((8, 4)))


def test_numpy_scalars_are_accepted_like_python_numbers():
    x = np.random.default_rng(0).random((8, 4))
    assert IC.PCA(np.int64(2)).fit(x).components_.shape == (2, 4)
    size = IC.bytes_per_sample("kbit", np.int64(64), bits=np.int32(4))
    assert size == 32.0 and type(size) is float          # was a numpy float64 from the np.int32 bits
    assert IC.upsample(x.reshape(2, 1, 4, 4), np.int64(2)).shape == (2, 1, 8, 8)


def test_transform_on_another_backend_than_fit_is_named():
    """Before: torch's 'where() received an invalid combination of arguments' or a numpy * Tensor TypeError."""
    x = np.random.default_rng(0).random((8, 4))
    selector, pca = IC.TopVarianceSelector(2).fit(x), IC.PCA(2).fit(x)
    for model, call in ((selector, selector.transform), (pca, pca.transform)):
        with pytest.raises(TypeError, match=r"x must be on the backend and device .* was fitted on \(numpy\)"):
            call(B.to_backend(x, "torch-cpu"))
    with pytest.raises(TypeError, match=r"z must be on the backend"):
        selector.inverse_transform(B.to_backend(x[:, :2], "torch-cpu"))
    refit = IC.PCA(2).fit(x).fit(B.to_backend(x, "torch-cpu"))      # fitting again elsewhere is fine
    assert B.is_torch(refit.components_)
