"""nnopt_lab.datasets: splits, standardization, backends, MNIST-1D cache, toy sets, IDX files."""
import gzip
import hashlib
import struct

import numpy as np
import pytest
import sklearn.datasets

from nnopt_lab import backend as B
from nnopt_lab import datasets as D


@pytest.fixture(scope="module")
def digits():
    return D.load_digits("numpy", standardize=False)


# ----------------------------------------------------------------------------- digits
def test_digits_shapes_and_dtypes(be32):
    ds = D.load_digits(be32)
    for (x, y), n in zip((ds.train, ds.val, ds.test), (1078, 359, 360)):
        assert tuple(x.shape) == (n, 64) and tuple(y.shape) == (n,)
        assert B.dtype_name(x) == "float32" and B.dtype_name(y) == "int64"
        assert B.backend_of(x).name == be32.name
    assert ds.num_classes == 10 and ds.input_shape == (64,) and len(ds.class_names) == 10
    assert tuple(ds.images(ds.val[0]).shape) == (359, 1, 8, 8)
    assert tuple(ds.images("test").shape) == (360, 1, 8, 8)
    img = D.load_digits(be32, as_images=True)
    assert tuple(img.train[0].shape) == (1078, 1, 8, 8) and img.input_shape == (1, 8, 8)
    np.testing.assert_array_equal(B.to_numpy(img.flat("train")), B.to_numpy(ds.train[0]))


def test_digits_split_is_a_partition_of_sklearn_data(digits):
    raw = sklearn.datasets.load_digits()
    rows = np.concatenate([B.to_numpy(digits.split(n)[0]) for n in D.SPLIT_NAMES]) * 16
    labels = np.concatenate([B.to_numpy(digits.split(n)[1]) for n in D.SPLIT_NAMES])
    order = np.lexsort(np.column_stack([rows, labels]).T)
    ref_order = np.lexsort(np.column_stack([raw.data, raw.target]).T)
    np.testing.assert_allclose(rows[order], raw.data[ref_order], atol=1e-5)
    np.testing.assert_array_equal(labels[order], raw.target[ref_order])


@pytest.mark.parametrize("split", [(0.6, 0.2, 0.2), (0.7, 0.15, 0.15), (0.5, 0.5, 0.0)])
def test_stratification_within_one_sample(split):
    y = sklearn.datasets.load_digits().target
    parts = D.stratified_split(y, split, seed=3)
    for frac, idx in zip(split, parts):
        for c in range(10):
            n_c = int((y == c).sum())
            assert abs(int((y[idx] == c).sum()) - frac * n_c) <= 1.0
    all_idx = np.concatenate(parts)
    assert len(all_idx) == len(y) and len(np.unique(all_idx)) == len(y)


def test_split_is_seeded():
    a, b, c = (D.load_digits("numpy", seed=s) for s in (0, 0, 1))
    np.testing.assert_array_equal(a.train[0], b.train[0])
    np.testing.assert_array_equal(a.test[1], b.test[1])
    assert a.train[0].shape == c.train[0].shape
    assert not np.array_equal(a.train[1], c.train[1])


def test_standardization_uses_train_statistics_only(digits):
    ds = D.load_digits(B.get_backend("numpy", "float64"))
    x_train_raw = B.to_numpy(digits.train[0]).astype(np.float64)
    x_val_raw = B.to_numpy(digits.val[0]).astype(np.float64)
    mean, std = x_train_raw.mean(0), x_train_raw.std(0)
    live = std >= D.MIN_STD
    xt = B.to_numpy(ds.train[0])
    np.testing.assert_allclose(xt.mean(0), 0, atol=1e-12)
    np.testing.assert_allclose(xt[:, live].std(0), 1, rtol=1e-12)
    np.testing.assert_allclose(xt[:, ~live], 0, atol=0)      # constant pixels only centred
    expected_val = (x_val_raw - mean) / np.where(live, std, 1.0)
    np.testing.assert_allclose(B.to_numpy(ds.val[0]), expected_val, rtol=1e-12, atol=1e-12)
    # the validation split's own statistics were NOT used
    val_std = x_val_raw.std(0)
    assert np.max(np.abs(B.to_numpy(ds.val[0]).mean(0))) > 1e-3
    assert not np.allclose(B.to_numpy(ds.std)[live], val_std[live])
    assert not np.any(np.isnan(B.to_numpy(ds.val[0])))


def test_numpy_and_torch_give_identical_data():
    a = D.load_digits("numpy")
    b = D.load_digits("torch-cpu")
    for name in D.SPLIT_NAMES:
        np.testing.assert_array_equal(a.split(name)[0], B.to_numpy(b.split(name)[0]))
        np.testing.assert_array_equal(a.split(name)[1], B.to_numpy(b.split(name)[1]))
    c = a.to("torch-cpu")
    np.testing.assert_array_equal(B.to_numpy(c.train[0]), B.to_numpy(b.train[0]))
    assert B.is_torch(c.val[1]) and B.dtype_name(c.val[1]) == "int64"


@pytest.mark.parametrize("split", [(0.5, 0.5), (0.5, 0.3, 0.3), (0.0, 0.5, 0.5), (1.2, -0.1, -0.1),
                                   (0.6, float("nan"), 0.4), "abc", 3])
def test_bad_split_raises(split):
    with pytest.raises(ValueError, match="split must be three non-negative fractions"):
        D.load_digits("numpy", split=split)


def test_bad_backend_and_seed_raise():
    with pytest.raises(ValueError, match="backend must be one of"):
        D.load_digits("jax")
    with pytest.raises(TypeError, match="backend must be None, a backend name or a Backend"):
        D.load_digits(3)
    with pytest.raises(ValueError, match="seed must be an int >= 0, got -1"):
        D.load_digits("numpy", seed=-1)
    with pytest.raises(ValueError, match="name must be one of"):
        D.load_digits("numpy").split("validation")


# ----------------------------------------------------------------------------- MNIST-1D
def test_mnist1d_generates_and_caches(tmp_path, capsys):
    ds = D.load_mnist1d("numpy", num_samples=200, cache_dir=tmp_path, verbose=True)
    assert "generated" in capsys.readouterr().out
    assert [x.shape for x, _ in (ds.train, ds.val, ds.test)] == [(120, 40), (40, 40), (40, 40)]
    assert set(np.unique(ds.train[1])) == set(range(10)) and ds.images("train").shape == (120, 1, 40)
    files = list(tmp_path.iterdir())
    assert [f.name for f in files] == ["mnist1d_n200_s42.npz"]          # no temporary left behind
    again = D.load_mnist1d("torch-cpu", num_samples=200, cache_dir=tmp_path, verbose=True)
    assert "cache" in capsys.readouterr().out and again.info["source"] == "cache"
    np.testing.assert_array_equal(ds.train[0], B.to_numpy(again.train[0]))
    # the cache holds what mnist1d itself generates
    from mnist1d.data import get_dataset_args, make_dataset
    args = get_dataset_args()
    args.num_samples = 200
    ref = make_dataset(args)
    cached = np.load(files[0], allow_pickle=False)
    np.testing.assert_array_equal(cached["x"], np.concatenate([ref["x"], ref["x_test"]]))


def test_mnist1d_corrupt_cache_is_regenerated(tmp_path):
    (tmp_path / "mnist1d_n100_s42.npz").write_bytes(b"not a zip file")
    ds = D.load_mnist1d("numpy", num_samples=100, cache_dir=tmp_path)
    assert ds.info["source"] == "generated" and ds.train[0].shape[1] == 40


def test_mnist1d_bad_num_samples():
    with pytest.raises(ValueError, match=r"num_samples must be an int in \[10, 1000000\], got 5"):
        D.load_mnist1d("numpy", num_samples=5)


# ----------------------------------------------------------------------------- toy sets
def test_moons_match_sklearn_without_noise():
    x, y = D.make_moons(101, noise=0.0, seed=0)
    xr, yr = sklearn.datasets.make_moons(101, noise=0.0, shuffle=False)
    assert x.shape == (101, 2) and np.bincount(y).tolist() == [50, 51]
    ours = np.round(np.column_stack([B.to_numpy(x), B.to_numpy(y)]).astype(np.float64), 6)
    ref = np.round(np.column_stack([xr, yr]), 6)
    np.testing.assert_allclose(ours[np.lexsort(ours.T)], ref[np.lexsort(ref.T)], atol=1e-6)


def test_moons_noise_and_seed(backend_name):
    a = D.make_moons(200, noise=0.1, seed=1, backend=backend_name)
    b = D.make_moons(200, noise=0.1, seed=1, backend=backend_name)
    c = D.make_moons(200, noise=0.1, seed=2, backend=backend_name)
    np.testing.assert_array_equal(B.to_numpy(a[0]), B.to_numpy(b[0]))
    assert not np.array_equal(B.to_numpy(a[0]), B.to_numpy(c[0]))
    assert B.dtype_name(a[1]) == "int64"
    with pytest.raises(ValueError, match=r"noise must be a finite number in \[0, inf\), got -1"):
        D.make_moons(10, noise=-1)


def test_spirals():
    x, y = D.make_spirals(301, classes=3, noise=0.0, seed=0)
    assert x.shape == (301, 2) and np.bincount(y).tolist() == [101, 100, 100]
    r = np.hypot(x[:, 0], x[:, 1])
    assert r.max() == pytest.approx(1.0, rel=1e-6) and r.min() == pytest.approx(0.0, abs=1e-7)
    with pytest.raises(ValueError, match=r"classes must be an int in \[2, 1000\], got 1"):
        D.make_spirals(10, classes=1)


# ----------------------------------------------------------------------------- IDX files
def _idx_bytes(array: np.ndarray, code: int) -> bytes:
    """An IDX file built by hand with struct (independent of write_idx)."""
    header = bytes([0, 0, code, array.ndim]) + struct.pack(">" + "I" * array.ndim, *array.shape)
    return header + array.astype(array.dtype.newbyteorder(">")).tobytes()


@pytest.mark.parametrize("dtype,code", [("uint8", 0x08), ("int8", 0x09), ("int16", 0x0B), ("int32", 0x0C),
                                        ("float32", 0x0D), ("float64", 0x0E)])
@pytest.mark.parametrize("gz", [False, True])
def test_idx_round_trip(tmp_path, dtype, code, gz):
    a = (np.arange(2 * 3 * 4) - 7).reshape(2, 3, 4).astype(dtype) * (1.5 if "float" in dtype else 1)
    raw = _idx_bytes(a, code)
    path = tmp_path / ("a.idx.gz" if gz else "a.idx")
    path.write_bytes(gzip.compress(raw) if gz else raw)
    out = D.load_idx(path, expected_sha256=hashlib.sha256(path.read_bytes()).hexdigest())
    assert out.dtype == np.dtype(dtype) and out.shape == (2, 3, 4)
    np.testing.assert_array_equal(out, a)
    digest = D.write_idx(tmp_path / ("b.idx.gz" if gz else "b.idx"), a)
    np.testing.assert_array_equal(D.load_idx(tmp_path / ("b.idx.gz" if gz else "b.idx"), digest), a)
    if not gz:
        assert (tmp_path / "b.idx").read_bytes() == raw


def test_idx_checksum_mismatch(tmp_path):
    path = tmp_path / "x.idx"
    path.write_bytes(_idx_bytes(np.zeros(3, np.uint8), 0x08))
    actual = hashlib.sha256(path.read_bytes()).hexdigest()
    with pytest.raises(ValueError, match=f"x.idx: SHA-256 mismatch, expected_sha256 is 00ff, the file's is {actual}"):
        D.load_idx(path, expected_sha256="00ff")


def test_idx_truncated_and_bad_magic(tmp_path):
    raw = _idx_bytes(np.arange(10, dtype=np.int16), 0x0B)
    (tmp_path / "t.idx").write_bytes(raw[:-3])
    with pytest.raises(ValueError, match="expected 28 bytes, got 25"):
        D.load_idx(tmp_path / "t.idx")
    (tmp_path / "t.idx.gz").write_bytes(gzip.compress(raw)[:-10])
    with pytest.raises(ValueError, match="corrupt or truncated gzip"):
        D.load_idx(tmp_path / "t.idx.gz")
    (tmp_path / "m.idx").write_bytes(b"\x01\x02" + raw[2:])
    with pytest.raises(ValueError, match="not an IDX file: magic bytes '0102"):
        D.load_idx(tmp_path / "m.idx")
    (tmp_path / "c.idx").write_bytes(b"\x00\x00\x07\x01" + raw[4:])
    with pytest.raises(ValueError, match="not an IDX file"):
        D.load_idx(tmp_path / "c.idx")


def test_load_mnist_family(tmp_path):
    rng = np.random.default_rng(0)
    images = {"train": rng.integers(0, 256, (60, 28, 28), dtype=np.uint8),
              "t10k": rng.integers(0, 256, (20, 28, 28), dtype=np.uint8)}
    labels = {"train": np.repeat(np.arange(10, dtype=np.uint8), 6), "t10k": np.arange(20, dtype=np.uint8) % 10}
    for part in ("train", "t10k"):
        (tmp_path / f"{part}-images-idx3-ubyte.gz").write_bytes(gzip.compress(_idx_bytes(images[part], 8)))
        (tmp_path / f"{part}-labels-idx1-ubyte").write_bytes(_idx_bytes(labels[part], 8))
    ds = D.load_mnist_family(tmp_path, "fashion", backend="numpy", standardize=False)
    assert ds.train[0].shape == (50, 784) and ds.val[0].shape == (10, 784) and ds.test[0].shape == (20, 784)
    assert ds.class_names[9] == "Ankle boot" and ds.images("test").shape == (20, 1, 28, 28)
    np.testing.assert_allclose(ds.test[0], images["t10k"].reshape(20, -1) / 255.0, rtol=1e-6)
    np.testing.assert_array_equal(np.bincount(ds.val[1]), np.ones(10))


def test_load_mnist_family_missing_and_bad_kind(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"missing train-images-idx3-ubyte\[.gz\].*github.com/zalando"):
        D.load_mnist_family(tmp_path, "fashion")
    with pytest.raises(ValueError, match="kind must be one of"):
        D.load_mnist_family(tmp_path, "cifar")


@pytest.mark.parametrize("call, name", [
    (lambda bad: D.load_idx(bad), "path"),
    (lambda bad: D.write_idx(bad, np.arange(3, dtype=np.uint8)), "path"),
    (lambda bad: D.load_mnist_family(bad), "directory"),
    (lambda bad: D.load_mnist1d(num_samples=20, cache_dir=bad), "cache_dir"),
])
@pytest.mark.parametrize("bad", [3, 2.5, b"", ""])
def test_path_arguments_must_be_paths(call, name, bad):
    """Before: an int or float path raised numpy's/pathlib's TypeError without naming the argument."""
    with pytest.raises(TypeError, match=rf"{name} must be a path"):
        call(bad)


def test_load_idx_with_none_path_names_it():
    with pytest.raises(TypeError, match="path must be a path"):
        D.load_idx(None)
    with pytest.raises(TypeError, match="path must be a path"):
        D.write_idx(None, np.arange(3, dtype=np.uint8))


def test_numpy_scalars_are_accepted_like_python_numbers(tmp_path):
    """Before: np.int64 seeds reached mnist1d, which refused them; now they are plain ints."""
    a = D.load_mnist1d(num_samples=np.int64(30), generation_seed=np.int64(3), seed=np.int32(1),
                              cache_dir=tmp_path, split=(np.float32(0.5), 0.25, 0.25))
    b = D.load_mnist1d(num_samples=30, generation_seed=3, seed=1, cache_dir=tmp_path, split=(0.5, 0.25, 0.25))
    np.testing.assert_array_equal(B.to_numpy(a.train[0]), B.to_numpy(b.train[0]))
    x, y = D.make_moons(np.int64(10), noise=np.float32(0.1), seed=np.int64(2))
    assert x.shape == (10, 2)


@pytest.mark.parametrize("y, error, match", [
    (np.int64(3), ValueError, r"y must have 1 axes \(N,\)"),        # was numpy's nonzero() error
    (np.zeros(0, dtype=np.int64), ValueError, "y must hold at least one label"),   # was "need at least one array"
    (np.array([0.5, 1.0]), TypeError, "y must be an integer array"),
    ([0, 1, 1], TypeError, "y must be a numpy array or torch tensor"),
])
def test_stratified_split_refuses_bad_labels(y, error, match):
    with pytest.raises(error, match=match):
        D.stratified_split(y)


def test_mnist_family_refuses_a_bad_sha256_table(tmp_path):
    with pytest.raises(TypeError, match="sha256 must be a dict"):
        D.load_mnist_family(tmp_path, sha256=3.0)     # was AttributeError: 'float' object has no 'get'


def test_idx_paths_that_are_directories_are_named(tmp_path):
    """Before: IsADirectoryError from the file system (write_idx: after writing a temporary file)."""
    with pytest.raises(ValueError, match="path must name a file, got the directory"):
        D.load_idx(tmp_path)
    with pytest.raises(ValueError, match="path must name a file, got the directory"):
        D.write_idx(tmp_path, np.arange(3, dtype=np.uint8))
    assert list(tmp_path.iterdir()) == []


def test_dataset_methods_check_their_arguments(tmp_path):
    """Before: numpy's 'truth value of an array is ambiguous' (split), reshape errors (flat of an empty X)."""
    ds = D.load_mnist1d(num_samples=30, cache_dir=tmp_path, backend="numpy")
    with pytest.raises(ValueError, match=r"name must be one of \('train', 'val', 'test'\)"):
        ds.split(np.zeros(3))
    with pytest.raises(ValueError, match=r"x must be one of \('train', 'val', 'test'\), got 'abc'"):
        ds.images("abc")
    with pytest.raises(ValueError, match=r"x must hold samples of 40 values"):
        ds.flat(np.zeros((2, 39)))
    assert ds.flat(np.zeros((0, 1, 40))).shape == (0, 40)
    with pytest.raises(TypeError, match="backend must be"):
        ds.to(3)
