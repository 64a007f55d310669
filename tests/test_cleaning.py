"""Cleaning: filters against scipy.ndimage, imputers and scalers against scikit-learn, on every backend."""
import numpy as np
import pytest
import scipy.ndimage as ndi
from sklearn.impute import KNNImputer as SkKNNImputer
from sklearn.impute import SimpleImputer as SkSimpleImputer
from sklearn.metrics.pairwise import nan_euclidean_distances as sk_nan_euclidean
from sklearn.preprocessing import MinMaxScaler as SkMinMaxScaler
from sklearn.preprocessing import StandardScaler as SkStandardScaler

from nnopt_lab import backend as B
from nnopt_lab.preprocessing import cleaning as C
from nnopt_lab.testing import compare

RTOL64, ATOL64 = 1e-10, 1e-12
MODES = ["reflect", "mirror", "nearest", "constant", "wrap"]


def _data(*shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape)


# ----------------------------------------------------------------------------- filters
@pytest.mark.parametrize("mode", MODES)
def test_mean_filter_matches_scipy_uniform_filter(be64, mode):
    x = _data(2, 3, 7, 9)
    xb = be64.asarray(x)
    for size in (1, 2, 3, 4, 5, 10, (3, 2)):
        sizes = size if isinstance(size, tuple) else (size, size)
        ref = ndi.uniform_filter(x, (1, 1) + sizes, mode=mode, cval=0.7)
        compare(C.mean_filter(xb, size, mode, cval=0.7), ref, f"uniform_filter {mode} {size}",
                rtol=RTOL64, atol=ATOL64, quiet=True)
    signal = _data(13, seed=1)
    for size in (1, 3, 4, 7, 20):                         # 1-D, windows longer than the signal
        compare(C.mean_filter(be64.asarray(signal), size, mode, cval=-2.0),
                ndi.uniform_filter1d(signal, size, mode=mode, cval=-2.0), f"uniform_filter1d {mode} {size}",
                rtol=RTOL64, atol=ATOL64, quiet=True)


@pytest.mark.parametrize("mode", MODES)
def test_median_filter_matches_scipy_for_odd_and_even_windows(be64, mode):
    x = _data(2, 3, 7, 9)
    xb = be64.asarray(x)
    for size in (1, 2, 3, 4, 5, (3, 1), (2, 5)):
        sizes = size if isinstance(size, tuple) else (size, size)
        ref = ndi.median_filter(x, size=(1, 1) + sizes, mode=mode, cval=0.25)
        compare(C.median_filter(xb, size, mode, cval=0.25), ref, f"median_filter {mode} {size}",
                rtol=RTOL64, atol=ATOL64, quiet=True)
    batch = _data(4, 15, seed=2)                           # a batch of signals: filter the last axis only
    for size in (3, 4, 6):
        compare(C.median_filter(be64.asarray(batch), size, mode, cval=0.25, ndim=1),
                ndi.median_filter(batch, size=(1, size), mode=mode, cval=0.25), f"median_filter1d {mode}",
                rtol=RTOL64, atol=ATOL64, quiet=True)


@pytest.mark.parametrize("mode", MODES)
def test_gaussian_filter_matches_scipy_for_sigmas_and_truncates(be64, mode):
    x = _data(2, 2, 9, 8)
    xb = be64.asarray(x)
    for sigma in (0.3, 0.8, 1.0, 1.7, 3.0, (0.0, 1.2)):
        for truncate in (1.0, 2.5, 4.0):
            sigmas = sigma if isinstance(sigma, tuple) else (sigma, sigma)
            ref = ndi.gaussian_filter(x, (0, 0) + sigmas, mode=mode, cval=1.5, truncate=truncate)
            compare(C.gaussian_filter(xb, sigma, mode, cval=1.5, truncate=truncate), ref,
                    f"gaussian_filter {mode} {sigma} {truncate}", rtol=RTOL64, atol=ATOL64, quiet=True)
    signal = _data(11, seed=3)
    compare(C.gaussian_filter(be64.asarray(signal), 2.0, mode, truncate=3.0),
            ndi.gaussian_filter1d(signal, 2.0, mode=mode, truncate=3.0), "gaussian_filter1d",
            rtol=RTOL64, atol=ATOL64, quiet=True)


def test_gaussian_kernel_radius_and_normalization():
    for sigma, truncate in ((1.0, 4.0), (0.5, 2.0), (2.3, 1.1)):
        w = C.gaussian_kernel1d(sigma, truncate)
        assert len(w) == 2 * int(truncate * sigma + 0.5) + 1
        assert abs(sum(w) - 1.0) < 1e-15
    impulse = np.zeros(41)
    impulse[20] = 1.0
    compare(np.array(C.gaussian_kernel1d(1.7, 3.0)), ndi.gaussian_filter1d(impulse, 1.7, truncate=3.0)[15:26],
            "gaussian kernel", rtol=RTOL64, atol=1e-15, quiet=True)


def test_filters_in_float32(be32):
    x = _data(3, 8, 8).astype(np.float32)
    xb = be32.asarray(x)
    x64 = x.astype(np.float64)
    assert B.dtype_name(C.mean_filter(xb, 3)) == "float32"
    compare(C.mean_filter(xb, 3, "nearest"), ndi.uniform_filter(x64, (1, 3, 3), mode="nearest"), "uniform32",
            rtol=1e-4, atol=1e-5, quiet=True)
    compare(C.median_filter(xb, 3), ndi.median_filter(x64, (1, 3, 3)), "median32", rtol=1e-6, atol=1e-7, quiet=True)
    compare(C.gaussian_filter(xb, 1.2, "wrap"), ndi.gaussian_filter(x64, (0, 1.2, 1.2), mode="wrap"), "gauss32",
            rtol=1e-4, atol=1e-5, quiet=True)


def test_pad_axis_modes_on_a_known_row():
    row = np.array([1.0, 2.0, 3.0, 4.0])
    want = {"reflect": [2, 1, 1, 2, 3, 4, 4, 3], "mirror": [3, 2, 1, 2, 3, 4, 3, 2],
            "nearest": [1, 1, 1, 2, 3, 4, 4, 4], "wrap": [3, 4, 1, 2, 3, 4, 1, 2],
            "constant": [9, 9, 1, 2, 3, 4, 9, 9]}
    for mode, expected in want.items():
        np.testing.assert_array_equal(C.pad_axis(row, 2, 2, 0, mode, cval=9.0), expected, err_msg=mode)


def test_integer_input_is_filtered_as_float():
    out = C.median_filter(np.array([2, 3, 4, 50, 6, 7]), 3)
    np.testing.assert_array_equal(out, ndi.median_filter(np.array([2.0, 3, 4, 50, 6, 7]), 3))


@pytest.mark.parametrize("call, match", [
    (lambda x: C.mean_filter(x, 3, mode="symmetric"), r"mode must be one of .*'reflect'.* got 'symmetric'"),
    (lambda x: C.median_filter(x, 0), r"size must be an int in \[1, 1025\], got 0"),
    (lambda x: C.median_filter(x, (3, 3, 3)), r"size must be a number or a sequence of 2 numbers"),
    (lambda x: C.gaussian_filter(x, -1.0), r"sigma must be a finite number in \[0, inf\), got -1.0"),
    (lambda x: C.gaussian_filter(x, float("nan")), r"sigma must be a finite number in \[0, inf\), got nan"),
    (lambda x: C.gaussian_filter(x, 1.0, truncate=-2), r"truncate must be a finite number in \[0, inf\), got -2"),
    (lambda x: C.mean_filter(x, 3, ndim=3), r"ndim must be an int in \[1, 2\], got 3"),
    (lambda x: C.mean_filter(x[0], 3, ndim=2), r"at least ndim=2 axes"),
])
def test_bad_filter_arguments_are_refused(call, match):
    with pytest.raises(ValueError, match=match):
        call(np.zeros((2, 8)))


# ----------------------------------------------------------------------------- imputers
def _holed(n, d, rate, seed):
    g = np.random.default_rng(seed)
    x = g.standard_normal((n, d)) * np.arange(1, d + 1) + np.arange(d)
    x[g.random(x.shape) < rate] = np.nan
    return x


@pytest.mark.parametrize("strategy", ["mean", "median", "constant"])
def test_simple_imputer_matches_sklearn_fit_on_train(be64, strategy):
    train, test = _holed(41, 6, 0.3, 0), _holed(17, 6, 0.4, 1)
    ours = C.SimpleImputer(strategy, fill_value=-3.0).fit(be64.asarray(train))
    ref = SkSimpleImputer(strategy=strategy, fill_value=-3.0).fit(train)
    compare(ours.statistics_, ref.statistics_, f"SimpleImputer({strategy}).statistics_", rtol=RTOL64, atol=ATOL64,
            quiet=True)
    compare(ours.transform(be64.asarray(test)), ref.transform(test), f"SimpleImputer({strategy})", rtol=RTOL64,
            atol=ATOL64, quiet=True)


def test_median_imputer_with_even_and_odd_counts():
    x = np.array([[1.0, np.nan], [5.0, 2.0], [np.nan, 10.0], [2.0, np.nan], [9.0, np.nan]])
    stats = C.SimpleImputer("median").fit(x).statistics_       # column 0: 1 2 5 9 -> 3.5; column 1: 2 10 -> 6
    np.testing.assert_array_equal(stats, [3.5, 6.0])


@pytest.mark.parametrize("k", [1, 3, 5, 60])
def test_knn_imputer_matches_sklearn(be64, k):
    train, test = _holed(50, 7, 0.25, 2), _holed(20, 7, 0.35, 3)
    test[4, :] = np.nan                                        # shares nothing with any donor: column mean
    ours = C.KNNImputer(k).fit(be64.asarray(train))
    ref = SkKNNImputer(n_neighbors=k).fit(train)
    compare(ours.transform(be64.asarray(test)), ref.transform(test), f"KNNImputer(k={k}) transform",
            rtol=RTOL64, atol=ATOL64, quiet=True)
    compare(C.KNNImputer(k).fit_transform(be64.asarray(train)), SkKNNImputer(n_neighbors=k).fit_transform(train),
            f"KNNImputer(k={k}) fit_transform", rtol=RTOL64, atol=ATOL64, quiet=True)


def test_nan_euclidean_distances_match_sklearn(be64):
    x, y = _holed(9, 5, 0.3, 4), _holed(12, 5, 0.3, 5)
    x[0] = np.nan
    compare(C.nan_euclidean_distances(be64.asarray(x), be64.asarray(y)), sk_nan_euclidean(x, y),
            "nan_euclidean_distances", rtol=1e-9, atol=1e-12, quiet=True, equal_nan=True)


def test_imputers_refuse_an_all_missing_column_and_unfitted_use():
    x = _holed(10, 4, 0.2, 6)
    x[:, 2] = np.nan
    for imputer in (C.SimpleImputer("mean"), C.SimpleImputer("median"), C.KNNImputer(3)):
        with pytest.raises(ValueError, match=r"no observed value in column\(s\) \[2\]"):
            imputer.fit(x)
    C.SimpleImputer("constant").fit(x)                          # a constant fill needs no statistics
    with pytest.raises(ValueError, match="not fitted yet: call fit"):
        C.KNNImputer().transform(x)
    with pytest.raises(ValueError, match="strategy must be one of .* got 'mode'"):
        C.SimpleImputer("mode")
    with pytest.raises(ValueError, match="n_neighbors must be an int >= 1, got 0"):
        C.KNNImputer(0)
    with pytest.raises(ValueError, match="X has 3 features but SimpleImputer was fitted with 4"):
        C.SimpleImputer().fit(_holed(10, 4, 0.1, 7)).transform(np.zeros((2, 3)))
    with pytest.raises(ValueError, match=r"X must be a 2-D table .* got shape \(10,\)"):
        C.SimpleImputer().fit(np.zeros(10))


# ----------------------------------------------------------------------------- scalers
def _columns(n, seed):
    g = np.random.default_rng(seed)
    x = g.standard_normal((n, 5)) * [1.0, 100.0, 0.01, 3.0, 1.0] + [0.0, 50.0, -3.0, 1e3, 0.0]
    x[:, 4] = 7.0                                               # a constant column
    return x


def test_standard_scaler_matches_sklearn(be64):
    train, test = _columns(40, 0), _columns(13, 1)
    ours = C.StandardScaler().fit(be64.asarray(train))
    ref = SkStandardScaler().fit(train)
    compare(ours.scale_, ref.scale_, "StandardScaler.scale_", rtol=RTOL64, atol=ATOL64, quiet=True)
    compare(ours.transform(be64.asarray(test)), ref.transform(test), "StandardScaler", rtol=RTOL64, atol=ATOL64,
            quiet=True)
    compare(ours.inverse_transform(ours.transform(be64.asarray(test))), test, "inverse", rtol=RTOL64, atol=1e-9,
            quiet=True)


@pytest.mark.parametrize("offset, noise", [(1e9, 1.0), (1e9, 1e-3), (1e12, 1.0), (-3e8, 10.0)])
def test_standard_scaler_variance_of_columns_with_a_large_offset(be64, offset, noise):
    """The corrected two-pass variance: ~1e-16 relative where the plain two-pass lost 1e-8..1e-6."""
    n = 257
    shifted = np.random.default_rng(3).standard_normal((n, 3)) * noise
    train = offset + shifted
    d = (train - offset) - (train - offset).mean(axis=0)      # train - offset is exact in float64
    exact = ((d * d).sum(axis=0) - d.sum(axis=0) ** 2 / n) / n
    ours = C.StandardScaler().fit(be64.asarray(train))
    ref = SkStandardScaler().fit(train)
    compare(ours.var_, ref.var_, "sklearn StandardScaler.var_ (1e9 offset)", rtol=1e-14, atol=0, quiet=True)
    compare(ours.scale_, ref.scale_, "sklearn StandardScaler.scale_", rtol=1e-14, atol=0, quiet=True)
    compare(ours.var_, exact, "variance of the exactly shifted columns", rtol=1e-14, atol=0, quiet=True)
    compare(ours.mean_, ref.mean_, "sklearn StandardScaler.mean_", rtol=1e-15, atol=0, quiet=True)


@pytest.mark.parametrize("feature_range", [(0.0, 1.0), (-1.0, 2.5)])
def test_minmax_scaler_matches_sklearn(be64, feature_range):
    train, test = _columns(40, 2), _columns(13, 3)
    ours = C.MinMaxScaler(feature_range).fit(be64.asarray(train))
    ref = SkMinMaxScaler(feature_range=feature_range).fit(train)
    compare(ours.transform(be64.asarray(test)), ref.transform(test), "MinMaxScaler", rtol=RTOL64, atol=ATOL64,
            quiet=True)
    clipped = SkMinMaxScaler(feature_range=feature_range, clip=True).fit(train).transform(test)
    compare(C.MinMaxScaler(feature_range, clip=True).fit(be64.asarray(train)).transform(be64.asarray(test)),
            clipped, "MinMaxScaler(clip)", rtol=RTOL64, atol=ATOL64, quiet=True)


def test_scalers_in_float32(be32):
    train = _columns(40, 4).astype(np.float32)
    ours = C.StandardScaler().fit_transform(be32.asarray(train))
    assert B.dtype_name(ours) == "float32"
    compare(ours, SkStandardScaler().fit_transform(train.astype(np.float64)), "StandardScaler32", rtol=1e-4,
            atol=1e-4, quiet=True)


def test_scalers_refuse_nan_and_bad_ranges():
    with pytest.raises(ValueError, match="contains NaN; fill the missing values first"):
        C.StandardScaler().fit(_holed(10, 3, 0.3, 8))
    with pytest.raises(ValueError, match=r"feature_range must have min < max, got \(1.0, 0.0\)"):
        C.MinMaxScaler((1.0, 0.0))


# ----------------------------------------------------------------------------- corruptions
def test_corruptions_are_seeded_and_have_the_requested_rates(backend_name):
    be = B.get_backend(backend_name, "float64")
    x = be.asarray(np.full((200, 50), 0.5))
    B.seed(1)
    holed = B.to_numpy(C.drop_at_random(x, 0.3))
    B.seed(1)
    np.testing.assert_array_equal(holed, B.to_numpy(C.drop_at_random(be.asarray(np.full((200, 50), 0.5)), 0.3)))
    assert abs(np.isnan(holed).mean() - 0.3) < 0.02
    sp = B.to_numpy(C.add_salt_and_pepper(x, 0.2, low=0.0, high=1.0))
    assert abs((sp != 0.5).mean() - 0.2) < 0.02 and set(np.unique(sp)) == {0.0, 0.5, 1.0}
    noisy = B.to_numpy(C.add_gaussian_noise(x, 0.1)) - 0.5
    assert abs(noisy.std() - 0.1) < 0.005 and abs(noisy.mean()) < 0.005
    with pytest.raises(ValueError, match=r"rate must be a finite number in \[0, 1\], got 1.5"):
        C.drop_at_random(x, 1.5)
    with pytest.raises(ValueError, match=r"std must be a finite number in \[0, inf\), got -0.1"):
        C.add_gaussian_noise(x, -0.1)


def test_corruptions_agree_across_backends():
    x = np.linspace(0, 1, 60).reshape(6, 10)
    outs = []
    for name in ("numpy", "torch-cpu"):
        B.seed(5)
        outs.append(B.to_numpy(C.add_gaussian_noise(B.to_backend(x, name, "float64"), 0.3)))
    np.testing.assert_array_equal(*outs)


# ----------------------------------------------------------------------------- explorer and exercises
def test_denoise_preview_measures_what_the_filter_removes(backend_name):
    from nnopt_lab.widgets.cleaning import denoise_preview

    be = B.get_backend(backend_name, "float64")
    yy, xx = np.mgrid[0:24, 0:24]
    image = be.asarray(((yy - 12) ** 2 + (xx - 12) ** 2 < 60).astype(float))       # a smooth disc
    r = denoise_preview(image, "salt_and_pepper", 0.1, "median", size=3, seed=1)
    noisy, filtered = B.to_numpy(r["noisy"]), B.to_numpy(r["filtered"])
    assert abs(r["mse_noisy"] - ((noisy - B.to_numpy(image)) ** 2).mean()) < 1e-12
    np.testing.assert_allclose(filtered, ndi.median_filter(noisy, 3), atol=1e-12)
    assert r["mse_filtered"] < 0.25 * r["mse_noisy"]                              # median removes impulses
    again = denoise_preview(image, "salt_and_pepper", 0.1, "median", size=3, seed=1)
    np.testing.assert_array_equal(B.to_numpy(again["noisy"]), noisy)
    g = denoise_preview(image, "gaussian", 0.3, "gaussian", sigma=1.0, seed=2)
    assert g["mse_filtered"] < g["mse_noisy"]
    with pytest.raises(ValueError, match=r"filter must be one of .* got 'box'"):
        denoise_preview(image, filter="box")
    with pytest.raises(ValueError, match=r"noise must be one of .* got 'poisson'"):
        denoise_preview(image, noise="poisson")


def test_the_explorer_view_shows_what_denoise_preview_computes():
    import matplotlib
    matplotlib.use("Agg")
    from nnopt_lab.widgets.cleaning import DenoiseView, denoise_preview, explorer

    images = np.random.default_rng(0).random((3, 1, 12, 12))
    view = DenoiseView(images)
    panels = [a.get_images()[0] for a in view.axes]
    r = view.update(2, "salt_and_pepper", 0.2, "mean", size=3, seed=4)
    want = denoise_preview(images[2, 0], "salt_and_pepper", 0.2, "mean", size=3, seed=4)
    for image, key in zip(panels, ("clean", "noisy", "filtered")):
        np.testing.assert_array_equal(image.get_array(), want[key])
    np.testing.assert_array_equal(panels[3].get_array(), abs(want["filtered"] - want["clean"]))
    assert view.axes[2].get_title() == f"mean filter, MSE {want['mse_filtered']:.4f}" and r["mse_noisy"] == want["mse_noisy"]
    assert [a.get_images()[0] for a in view.axes] == panels                       # the same artists, new data
    box = explorer(images)
    first = box.image.value
    box.controls["filter"].value = "gaussian"
    assert box.image.value != first and box.controls["sigma"].style.description_width == "initial"


def test_exercise_checkers_accept_right_answers_and_name_the_mistake(capsys):
    from nnopt_lab.exercises import cleaning as ex

    def mean_filter_1d(x, size):
        return ndi.uniform_filter1d(x, size, mode="nearest")

    ex.check_mean_filter_1d(mean_filter_1d)                 # a right answer: no exception, the ✓ verdict
    assert capsys.readouterr().out.startswith("✓ mean_filter_1d matches scipy.ndimage.uniform_filter1d")
    with pytest.raises(AssertionError, match="zero-padded"):
        ex.check_mean_filter_1d(lambda x, s: ndi.uniform_filter1d(x, s, mode="constant"))
    with pytest.raises(AssertionError, match="window SUM"):
        ex.check_mean_filter_1d(lambda x, s: ndi.uniform_filter1d(x, s, mode="nearest") * s)
    with pytest.raises(AssertionError, match="Pad size//2"):
        ex.check_mean_filter_1d(lambda x, s: np.convolve(x, np.ones(s) / s, mode="valid"))

    def standardize(train, test):
        mean, std = train.mean(0), train.std(0)
        std[std == 0] = 1.0
        return (train - mean) / std, (test - mean) / std

    ex.check_standardize(standardize)
    assert capsys.readouterr().out.startswith("✓ standardize matches sklearn StandardScaler")
    with pytest.raises(AssertionError, match="TEST split's own mean"):
        ex.check_standardize(lambda tr, te: (standardize(tr, tr)[0], standardize(te, te)[0]))
    with pytest.raises(AssertionError, match="SAMPLE std"):
        ex.check_standardize(lambda tr, te: tuple((a - tr.mean(0)) / np.where(tr.std(0, ddof=1) == 0, 1, tr.std(0, ddof=1))
                                                  for a in (tr, te)))
    with pytest.raises(AssertionError, match="NaN or inf"), np.errstate(invalid="ignore"):
        ex.check_standardize(lambda tr, te: ((tr - tr.mean(0)) / tr.std(0), (te - tr.mean(0)) / tr.std(0)))

    ex.check_fill_missing(lambda x: np.where(np.isnan(x), np.nanmean(x), x))
    assert capsys.readouterr().out.startswith("✓ fill_missing fills each NaN with the mean")
    with pytest.raises(AssertionError, match="filled with 0, like np.nan_to_num"):
        ex.check_fill_missing(np.nan_to_num)
    with pytest.raises(AssertionError, match="counted the missing entries as 0"):
        ex.check_fill_missing(lambda x: np.where(np.isnan(x), np.nan_to_num(x).mean(), x))


@pytest.mark.parametrize("call, error, match", [
    # each of these hung or leaked another exception before
    (lambda x: C.gaussian_filter(x, 1e300), ValueError, r"sigma \* truncate must give a kernel of at most"),
    (lambda x: C.gaussian_kernel1d(2.0 ** 62), ValueError, r"sigma \* truncate must give a kernel"),
    (lambda x: C.median_filter(x, 2 ** 40), ValueError, r"size must be an int in \[1, 1025\]"),
    (lambda x: C.median_filter(x, 1000), ValueError, r"size must give a median window of at most 1024"),
    (lambda x: C.pad_axis(x, 2 ** 62, 0, 0), ValueError, r"before must be an int in \[0, 65536\]"),
    (lambda x: C.pad_axis(x, 1, 1, 2.5), ValueError, r"axis must be an int"),
    (lambda x: C.pad_axis(x, 1, 1, 5), ValueError, r"axis must be an int in \[-2, 1\] for x of shape"),
    (lambda x: C.mean_filter(3.0), TypeError, r"x must be a numpy array or torch tensor, got float"),
    (lambda x: C.mean_filter(x, mode=np.zeros(3)), ValueError, r"mode must be one of"),
    (lambda x: C.add_gaussian_noise(x, 0.1, generator=3), TypeError, r"generator must be a numpy random Generator"),
    (lambda x: C.drop_at_random(x, 0.1, generator="seed"), TypeError, r"generator must be a numpy random Generator"),
    (lambda x: C.StandardScaler().fit(np.array([[1.0, np.inf], [2.0, 3.0]])), ValueError, r"X contains inf"),
    (lambda x: C.nan_euclidean_distances(np.array([[np.inf, 1.0]]), x), ValueError, r"X contains inf"),
    (lambda x: C.nan_euclidean_distances(x, B.to_backend(x, "torch-cpu")), TypeError, r"X and Y must be on one"),
    (lambda x: C.StandardScaler(with_mean="yes"), TypeError, r"with_mean must be a bool"),
])
def test_more_bad_arguments_are_named(call, error, match):
    with pytest.raises(error, match=match):
        call(np.random.default_rng(0).random((4, 2)))


def test_numpy_scalars_are_accepted_like_python_numbers():
    x = np.random.default_rng(0).random((6, 6))
    compare(C.gaussian_filter(x, np.float32(1.5), truncate=np.float64(3.0)), C.gaussian_filter(x, 1.5, truncate=3.0),
            "np.float32 sigma", rtol=0, atol=0, quiet=True)
    compare(C.median_filter(x, np.int64(3)), C.median_filter(x, 3), "np.int64 size", rtol=0, atol=0, quiet=True)
    compare(C.pad_axis(x, np.int64(1), np.int32(2), np.int64(-1)), C.pad_axis(x, 1, 2, -1), "np ints", rtol=0,
            atol=0, quiet=True)
    assert C.KNNImputer(np.int64(2)).n_neighbors == 2


def test_transform_on_another_backend_than_fit_is_named():
    """Before: AttributeError ('numpy.ndarray' object has no attribute 'to') deep in the arithmetic."""
    table = np.random.default_rng(0).random((5, 3))
    scaler = C.StandardScaler().fit(table)
    with pytest.raises(TypeError, match=r"X must be on the backend and device StandardScaler was fitted on \(numpy\)"):
        scaler.transform(B.to_backend(table, "torch-cpu"))


def test_nan_euclidean_distances_of_float32_and_float64(be64):
    """Before: torch raised 'expected m1 and m2 to have the same dtype' for a float32 X and a float64 Y."""
    g = np.random.default_rng(1)
    x, y = g.random((3, 4)), g.random((5, 4))
    x[0, 1] = np.nan
    ours = C.nan_euclidean_distances(B.to_backend(x, B.Backend(be64.name, "float32")), be64.asarray(y))
    assert B.dtype_name(ours) == "float64"
    compare(ours, sk_nan_euclidean(x.astype(np.float32).astype(np.float64), y), "mixed float32/float64",
            rtol=1e-9, atol=1e-12, quiet=True)


def test_inverse_transform_names_its_argument_z():
    """Before: the messages of inverse_transform(Z) said 'X must ...'."""
    table = np.random.default_rng(0).random((5, 3))
    for scaler in (C.StandardScaler().fit(table), C.MinMaxScaler().fit(table)):
        with pytest.raises(TypeError, match=r"Z must be a numpy array or torch tensor"):
            scaler.inverse_transform(None)
        with pytest.raises(ValueError, match=r"Z has 2 features"):
            scaler.inverse_transform(table[:, :2])


def test_torch_scalars_are_accepted_like_python_numbers():
    import torch
    x = np.random.default_rng(0).random((6, 6))
    compare(C.gaussian_filter(x, torch.tensor(1.5, dtype=torch.float64)), C.gaussian_filter(x, 1.5),
            "0-d tensor sigma", rtol=0, atol=0, quiet=True)
    compare(C.mean_filter(x, torch.tensor(3)), C.mean_filter(x, 3), "0-d tensor size", rtol=0, atol=0, quiet=True)
