"""Self-checks for the exercises of chapter 2.1 (data cleaning). Each runs the learner's function
on several cases, compares with the library (itself checked against scipy and scikit-learn) and
says what is wrong: the border rule, a missing division, test statistics leaking, ...

See: chapters/02_1_data_cleaning.ipynb
"""
from __future__ import annotations

import math
from typing import Any, Callable

from .. import backend as B
from .checks import ExerciseFailed
from ..preprocessing import cleaning as C
from . import checks

__all__ = ["check_mean_filter_1d", "check_standardize", "check_fill_missing", "check_knn_impute"]

_NUMPY64 = B.Backend("numpy", "float64")


def _close(a: Any, b: Any, tol: float = 1e-9) -> bool:
    if tuple(a.shape) != tuple(b.shape):
        return False
    xp = B.namespace(a)
    if B.float_of(xp.sum(xp.astype(xp.isnan(a) != xp.isnan(b), a.dtype))) > 0:
        return False
    diff = xp.where(xp.isnan(a), xp.zeros_like(a), a - b)
    return B.float_of(xp.max(xp.abs(diff))) <= tol * (1.0 + B.float_of(xp.max(xp.abs(xp.where(xp.isnan(b), 0.0, b)))))


def _signals() -> list:
    g = B.generator(7)
    return [_NUMPY64.asarray(g.standard_normal(n) * 3.0 + 1.0) for n in (9, 16, 5)]


# ----------------------------------------------------------------------------- exercise 1
def check_mean_filter_1d(fn: Callable[[Any, int], Any]) -> bool:
    """``fn(signal, size)``: the mean filter of a 1-D signal with ``"nearest"`` borders, odd ``size``."""
    for x in _signals():
        for size in (3, 5):
            want = C.mean_filter(x, size, mode="nearest")
            case = f"mean_filter_1d(signal of length {x.shape[0]}, size={size})"
            got = checks.as_float64(checks.call(case, fn, x.copy(), size), case)
            if _close(got, want):
                continue
            case = f"signal of length {x.shape[0]}, size={size}"
            if tuple(got.shape) != tuple(want.shape):
                raise ExerciseFailed(f"{case}: your output has shape {tuple(got.shape)}, the input {tuple(x.shape)}. "
                                     f"Pad size//2 = {size // 2} samples on each side before averaging, so every "
                                     f"input sample gets an output.")
            if _close(got, want * size):
                raise ExerciseFailed(f"{case}: you return the window SUM; divide by the window size {size}.")
            for mode in ("constant", "reflect", "mirror", "wrap"):
                if _close(got, C.mean_filter(x, size, mode=mode)):
                    what = {"constant": "zero-padded (mode 'constant')", "reflect": "'reflect' borders",
                            "mirror": "'mirror' borders", "wrap": "periodic ('wrap') borders"}[mode]
                    raise ExerciseFailed(f"{case}: the interior is right but your borders are {what}; 'nearest' "
                                         f"repeats the edge sample: x[0], x[0], x[0], x[1], ...")
            inner = slice(size, x.shape[0] - size)
            if x.shape[0] > 2 * size and _close(got[inner], want[inner]):
                raise ExerciseFailed(f"{case}: the interior is right, the first/last {size // 2} outputs are not: "
                                     f"check the padding (mode 'nearest' repeats x[0] in front and x[-1] behind).")
            raise ExerciseFailed(f"{case}: expected {want.tolist()[:4]}..., got {got.tolist()[:4]}...; output i is "
                                 f"the mean of x[i - {size // 2}] .. x[i + {size // 2}].")
    print("✓ mean_filter_1d matches scipy.ndimage.uniform_filter1d(mode='nearest') on 3 signals × 2 sizes")
    return True


# ----------------------------------------------------------------------------- exercise 2
def _tables():
    g = B.generator(11)
    train = g.standard_normal((30, 4)) * [2.0, 0.5, 10.0, 1.0] + [1.0, -2.0, 50.0, 0.0]
    test = g.standard_normal((8, 4)) * [2.0, 0.5, 10.0, 1.0] + [1.5, -2.0, 48.0, 0.0]
    train[:, 3] = 4.0                                 # a constant column
    test[:, 3] = 4.0
    return _NUMPY64.asarray(train), _NUMPY64.asarray(test)


def check_standardize(fn: Callable[[Any, Any], tuple]) -> bool:
    """``fn(train, test) -> (train_z, test_z)``: z-scores with the TRAINING mean and population std;
    a constant column is only centred (std taken as 1)."""
    train, test = _tables()
    out = checks.call("standardize", fn, train.copy(), test.copy())
    if not isinstance(out, (tuple, list)) or len(out) != 2:
        raise ExerciseFailed("standardize must return a pair (train_z, test_z)")
    got_train, got_test = checks.as_float64(out[0], "train_z"), checks.as_float64(out[1], "test_z")
    scaler = C.StandardScaler().fit(train)
    want_train, want_test = scaler.transform(train), scaler.transform(test)
    for name, got, want in (("train_z", got_train, want_train), ("test_z", got_test, want_test)):
        if tuple(got.shape) != tuple(want.shape):
            raise ExerciseFailed(f"{name} has shape {tuple(got.shape)}, expected {tuple(want.shape)} "
                                 f"(standardize each column, keep every row)")
    xp = B.namespace(got_train)
    if B.float_of(xp.sum(xp.astype(~xp.isfinite(got_train), got_train.dtype))) > 0:
        raise ExerciseFailed("train_z has NaN or inf: column 3 is constant (std 0). Divide by 1 there "
                             "(as scikit-learn does) instead of by 0.")
    n = train.shape[0]
    if _close(got_train[:, :3], want_train[:, :3] * math.sqrt((n - 1) / n)):
        raise ExerciseFailed("you divide by the SAMPLE std (ddof=1, n-1 in the denominator); StandardScaler uses "
                             "the population std (ddof=0, n in the denominator).")
    if _close(got_train[:, :3], train[:, :3] - C.StandardScaler().fit(train).mean_[:3]):
        raise ExerciseFailed("train_z is only centred: divide by each column's standard deviation too.")
    if not _close(got_train, want_train):
        raise ExerciseFailed("train_z is wrong: z = (x - mean) / std with the column mean and population std "
                             "of the training table.")
    if _close(got_test[:, :3], C.StandardScaler().fit(test).transform(test)[:, :3]):
        raise ExerciseFailed("test_z uses the TEST split's own mean and std. Fit on the training split only and "
                             "apply those statistics to the test split: the model must see test data exactly as "
                             "it will see new data, one sample at a time, with no statistics of its own.")
    if not _close(got_test, want_test):
        raise ExerciseFailed("train_z is right but test_z is not: apply the training mean and std to the test rows.")
    print("✓ standardize matches sklearn StandardScaler (fit on train, applied to test; constant column kept)")
    return True


# ----------------------------------------------------------------------------- exercise 3
def check_fill_missing(fn: Callable[[Any], Any]) -> bool:
    """``fn(data)``: the 1-D array with each NaN replaced by the mean of the observed values
    (the seed's §4.1.1 example, corrected)."""
    nan = math.nan
    cases = [[2.0, 3.0, 4.0, nan, 6.0, 7.0, 8.0, 9.0, 10.0],
             [nan, 1.0, 5.0, nan, 3.0],
             [0.5, 0.5, nan, 2.5]]
    for values in cases:
        x = _NUMPY64.asarray(values)
        want = C.SimpleImputer("mean").fit(x[:, None]).transform(x[:, None])[:, 0]
        got = checks.as_float64(checks.call(f"fill_missing({values})", fn, x.copy()), f"fill_missing({values})")
        if _close(got, want):
            continue
        xp = B.namespace(got)
        if tuple(got.shape) != tuple(want.shape):
            raise ExerciseFailed(f"fill_missing({values}): shape {tuple(got.shape)}, expected {tuple(want.shape)}; "
                                 f"keep every entry (do not drop the missing ones).")
        if B.float_of(xp.sum(xp.astype(xp.isnan(got), got.dtype))) > 0:
            raise ExerciseFailed(f"fill_missing({values}): NaN is still there; replace it "
                                 f"(numpy: np.where(np.isnan(x), fill, x)).")
        if _close(got, xp.where(xp.isnan(x), 0.0, x)):
            raise ExerciseFailed(f"fill_missing({values}): you filled with 0, like np.nan_to_num in the seed. 0 is "
                                 f"outside the data and drags the mean down; use the mean of the observed values.")
        zero_mean = B.float_of(xp.mean(xp.where(xp.isnan(x), 0.0, x)))
        if _close(got, xp.where(xp.isnan(x), zero_mean, x)):
            raise ExerciseFailed(f"fill_missing({values}): your fill {zero_mean:.4g} is a mean that counted the "
                                 f"missing entries as 0; average only the observed values (np.nanmean).")
        observed = C.SimpleImputer("median").fit(x[:, None]).statistics_[0]
        if _close(got, xp.where(xp.isnan(x), B.float_of(observed), x)):
            raise ExerciseFailed(f"fill_missing({values}): you filled with the median; this exercise asks for the "
                                 f"mean (both are fine imputers; the checker wants the mean).")
        raise ExerciseFailed(f"fill_missing({values}): expected {want.tolist()}, got {got.tolist()}.")
    print("✓ fill_missing fills each NaN with the mean of the observed values (as SimpleImputer(strategy='mean'))")
    return True


# ----------------------------------------------------------------------------- exercise 4: k-NN fill
def _knn_tables():
    """Fixed small tables with holes: train (14, 5), test (6, 5), continuous values (no ties)."""
    g = B.generator(11)
    train = g.standard_normal((14, 5)) * 2.0
    test = g.standard_normal((6, 5)) * 2.0
    train[g.uniform(size=train.shape) < 0.2] = math.nan
    holes = g.uniform(size=test.shape) < 0.3
    holes[:, 0] = False                     # every test row keeps a coordinate in common with the donors
    holes[0, 1] = holes[3, 4] = True
    test[holes] = math.nan
    return _NUMPY64.asarray(train), _NUMPY64.asarray(test)


def _knn_variant(train: Any, test: Any, k: int, rescale: bool = True, only_donors: bool = True) -> Any:
    """The k-NN fill with one of two usual mistakes switched on (both flags True: the right rule)."""
    xp = B.namespace(train)
    d = train.shape[1]
    out = xp.asarray(test, copy=True)
    for i in range(test.shape[0]):
        both = ~xp.isnan(train) & ~xp.isnan(test[i])[None, :]
        diff = xp.where(both, train - test[i][None, :], xp.zeros_like(train))
        shared = xp.sum(xp.astype(both, train.dtype), axis=1)
        dist = xp.sqrt(xp.sum(diff * diff, axis=1) * (d / shared if rescale else 1.0))
        for j in range(d):
            if not bool(xp.isnan(test[i, j])):
                continue
            has_j = ~xp.isnan(train[:, j])
            rows = [r for r in B.to_numpy(xp.argsort(xp.where(has_j, dist, xp.full_like(dist, math.inf))
                                                     if only_donors else dist, stable=True)).tolist()]
            rows = rows[:k]
            values = [B.float_of(train[r, j]) for r in rows if not math.isnan(B.float_of(train[r, j]))]
            out[i, j] = sum(values) / len(values) if values else math.nan
    return out


def check_knn_impute(fn: Callable[[Any, Any, int], Any]) -> None:
    """``fn(train, test, k)``: ``test`` with each NaN replaced by the mean of that column over the
    k nearest *training* rows that have it, nearest by the nan-Euclidean distance
    :math:`d(x, y) = \\sqrt{D/|P| \\sum_{m \\in P} (x_m - y_m)^2}`.

    Compared with :class:`nnopt_lab.preprocessing.cleaning.KNNImputer` (equal to scikit-learn's).

    See: chapters/02_1_data_cleaning.ipynb
    """
    train, test = _knn_tables()
    k = 3
    want = C.KNNImputer(k).fit(train).transform(test)
    got = checks.as_float64(checks.call("knn_impute", fn, _NUMPY64.xp.asarray(train, copy=True),
                                        _NUMPY64.xp.asarray(test, copy=True), k), "knn_impute",
                            tuple(test.shape))
    xp = _NUMPY64.xp
    got = xp.asarray(got)
    observed = ~xp.isnan(test)
    if bool(xp.any(xp.isnan(got))):
        raise ExerciseFailed("✗ knn_impute: your answer still holds NaN; every missing entry needs a value")
    if B.float_of(xp.max(xp.abs(xp.where(observed, got - xp.where(observed, test, 0.0), 0.0)))) > 1e-12:
        raise ExerciseFailed("✗ knn_impute: an OBSERVED entry of test changed; fill only the NaN, keep the rest")
    if _close(got, want):
        print(f"✓ knn_impute matches KNNImputer({k}) (and so sklearn.impute.KNNImputer) on a 6×5 table with "
              f"{int(B.float_of(xp.sum(xp.astype(~observed, got.dtype))))} holes")
        return
    mistakes = {
        "the distance is not rescaled by D/|P|: rows that share fewer observed coordinates look closer "
        "than they are": _knn_variant(train, test, k, rescale=False),
        "the k nearest rows are taken among ALL training rows; take them among the rows that HAVE the "
        "column (a row without it cannot donate)": _knn_variant(train, test, k, only_donors=False),
        "that is the mean fill (the column's training mean); use the k nearest rows instead":
            C.SimpleImputer("mean").fit(train).transform(test),
        "the donors are the test rows: the neighbours must come from the TRAINING table":
            C.KNNImputer(k).fit(test).transform(test),
    }
    for message, values in mistakes.items():
        if _close(got, values):
            raise ExerciseFailed(f"✗ knn_impute: {message}")
    holes = [(i, j) for i in range(test.shape[0]) for j in range(test.shape[1]) if not bool(observed[i, j])]
    i, j = next((i, j) for i, j in holes if abs(B.float_of(got[i, j]) - B.float_of(want[i, j])) > 1e-9)
    raise ExerciseFailed(f"✗ knn_impute: row {i}, column {j}: yours {B.float_of(got[i, j]):.6g}, "
                         f"expected {B.float_of(want[i, j]):.6g}")
