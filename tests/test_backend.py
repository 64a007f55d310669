"""Backends: resolution, moving arrays (shape, integer width), randomness, argument checks,
and the fast paths against their fallbacks."""
import numpy as np
import pytest
import torch

from nnopt_lab import backend as B
from nnopt_lab import nn

TORCH_DTYPES = {"bool": torch.bool, "int8": torch.int8, "uint8": torch.uint8, "int16": torch.int16,
                "int32": torch.int32, "int64": torch.int64, "float16": torch.float16,
                "float32": torch.float32, "float64": torch.float64}
EXTREMES = {"bool": [True, False, True], "int8": [-128, 0, 127], "uint8": [0, 1, 255],
            "int16": [-2**15, 7, 2**15 - 1], "int32": [-2**31, 5, 2**31 - 1],
            "int64": [-2**63, 3, 2**63 - 1]}


def test_auto_is_numpy_without_gpu_and_cuda_with_it():
    expected = "torch-cuda" if torch.cuda.is_available() else "numpy"
    assert B.get_backend("auto").name == expected


@pytest.mark.parametrize("name", ["tensorflow", "cuda", "", "NUMPY"])
def test_unknown_backend_names_are_refused(name):
    with pytest.raises(ValueError, match=f"backend must be one of .* got {name!r}"):
        B.get_backend(name)


def test_unknown_dtype_is_refused():
    with pytest.raises(ValueError, match="dtype must be one of .* got 'float16'"):
        B.get_backend("numpy", "float16")


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_cuda_request_without_gpu_is_refused():
    with pytest.raises(ValueError, match="torch-cuda.*no CUDA device"):
        B.get_backend("torch-cuda")


def test_mixing_numpy_and_torch_is_refused():
    with pytest.raises(TypeError, match="mixed"):
        B.namespace(np.zeros(2), torch.zeros(2))
    with pytest.raises(TypeError, match="expected numpy arrays or torch tensors, got list .*arrays given"):
        B.namespace([1.0, 2.0])
    with pytest.raises(TypeError, match="expected at least one numpy array or torch tensor, got none .*arrays given"):
        B.namespace(None)
    with pytest.raises(TypeError, match="expected at least one"):
        B.namespace()


def test_to_backend_sets_float_dtype_and_keeps_values(backend_name):
    b = B.get_backend(backend_name, "float64")
    x = B.to_backend(np.arange(6, dtype=np.float32).reshape(2, 3), b)
    assert B.dtype_name(x) == "float64" and B.backend_of(x).name == backend_name
    np.testing.assert_array_equal(B.to_numpy(x), np.arange(6).reshape(2, 3))
    assert B.dtype_name(B.to_backend(np.ones(2, np.float16), backend_name)) == "float32"
    assert B.dtype_name(B.to_backend([1.5, 2.5], backend_name, dtype="float64")) == "float64"


# ----------------------------------------------------------------------------- 0-d arrays (defect 1)
def _sources(value, dtype):
    """The same 0-d value as a numpy array, a numpy scalar, a torch tensor and a Python number."""
    return [np.array(value, dtype=dtype), np.dtype(dtype).type(value),
            torch.tensor(value, dtype=TORCH_DTYPES[dtype]), value]


@pytest.mark.parametrize("value,dtype", [(7, "int64"), (-3, "int8"), (2.5, "float64"), (True, "bool")])
def test_zero_d_arrays_stay_zero_d_on_every_backend(backend_name, value, dtype):
    for source in _sources(value, dtype):
        moved = B.to_backend(source, backend_name)
        assert tuple(moved.shape) == (), (type(source), backend_name, tuple(moved.shape))
        assert B.backend_of(moved).name == backend_name
        assert B.to_numpy(moved).item() == value
        back = B.to_backend(moved, "numpy")
        assert back.shape == () and back.item() == value


def test_zero_d_arrays_stay_zero_d_through_asarray_and_backend_asarray(backend_name):
    like = B.to_backend(np.zeros(3), B.get_backend(backend_name, "float64"))
    assert tuple(B.asarray(np.array(1.5), like).shape) == ()
    assert tuple(B.asarray(2, like).shape) == ()
    assert tuple(B.get_backend(backend_name).asarray(0, dtype="int64").shape) == ()


@pytest.mark.parametrize("cls", [nn.BatchNorm1d, nn.BatchNorm2d])
def test_batchnorm_num_batches_tracked_is_zero_d_and_torch_state_dicts_load(backend_name, cls):
    ours = cls(4, backend=B.get_backend(backend_name, "float64"))
    assert tuple(ours.state_dict()["num_batches_tracked"].shape) == ()
    ref = getattr(torch.nn, cls.__name__)(4).double()
    with torch.no_grad():
        ref.weight.copy_(torch.linspace(0.5, 2.0, 4, dtype=torch.float64))
        ref.running_mean.copy_(torch.tensor([0.1, -0.2, 0.3, 0.0], dtype=torch.float64))
        ref.num_batches_tracked.fill_(5)
    ours.load_state_dict(ref.state_dict())               # defect: failed on torch backends
    for key, want in ref.state_dict().items():
        got = ours.state_dict()[key]
        assert tuple(got.shape) == tuple(want.shape), key
        np.testing.assert_array_equal(B.to_numpy(got), want.numpy())
    # and the other way: a torch-backend model's state loads into torch.nn and into a numpy model
    ref.load_state_dict({k: torch.as_tensor(B.to_numpy(v)) for k, v in ours.state_dict().items()})
    other = cls(4, backend=B.get_backend("numpy", "float64")).load_state_dict(ours.state_dict())
    assert B.to_numpy(other.state_dict()["num_batches_tracked"]).item() == 5


# ----------------------------------------------------------------------------- integer widths (defect 2)
@pytest.mark.parametrize("dtype", list(EXTREMES))
def test_integer_and_bool_arrays_keep_their_dtype_between_backends(backend_name, dtype):
    values = np.array(EXTREMES[dtype], dtype=dtype)
    for source in (values, torch.from_numpy(values.copy())):
        moved = B.to_backend(source, backend_name)
        assert B.dtype_name(moved) == dtype, (type(source), backend_name)
        np.testing.assert_array_equal(B.to_numpy(moved), values)
        back = B.to_backend(moved, "numpy")
        assert back.dtype == np.dtype(dtype)
        np.testing.assert_array_equal(back, values)
    assert B.dtype_name(B.to_backend(torch.from_numpy(values.copy()), backend_name)) == dtype


@pytest.mark.parametrize("dtype", ["uint16", "uint32"])
def test_wide_unsigned_integers_become_int64_exactly(backend_name, dtype):
    values = np.array([0, 1, np.iinfo(dtype).max], dtype=dtype)
    moved = B.to_backend(values, backend_name)
    assert B.dtype_name(moved) == "int64"
    np.testing.assert_array_equal(B.to_numpy(moved), values.astype(np.int64))


def test_uint64_beyond_int64_is_refused_not_wrapped():
    with pytest.raises(ValueError, match="uint64 values above 2\\*\\*63 - 1"):
        B.to_backend(np.array([2**63], dtype=np.uint64), "torch-cpu")


def test_asked_dtype_wins_and_integer_asarray_keeps_width(backend_name):
    x = B.to_backend(np.array([1, 2, 3], dtype=np.int32), backend_name, dtype="int8")
    assert B.dtype_name(x) == "int8"
    like_int = B.to_backend(np.zeros(2, dtype=np.int8), backend_name)
    assert B.dtype_name(B.asarray(np.array([4, 5], dtype=np.int16), like_int)) == "int16"
    like_float = B.to_backend(np.zeros(2), B.get_backend(backend_name, "float64"))
    assert B.dtype_name(B.asarray(np.array([4, 5], dtype=np.int16), like_float)) == "float64"


@pytest.mark.parametrize("dtype", ["bool", "int8", "uint8", "int16", "int32", "int64", "float16",
                                   "float32", "float64"])
def test_dtype_name_is_the_same_on_numpy_and_torch(dtype):
    assert B.dtype_name(np.zeros(1, dtype=dtype)) == dtype
    assert B.dtype_name(torch.zeros(1, dtype=TORCH_DTYPES[dtype])) == dtype
    assert B.dtype_name(np.dtype(dtype)) == dtype == B.dtype_name(TORCH_DTYPES[dtype])


@pytest.mark.parametrize("bad", [np.array([1 + 2j]), np.array(["a"]), np.array([None, 1], dtype=object)])
def test_arrays_that_are_not_numbers_are_refused(backend_name, bad):
    with pytest.raises(TypeError, match="x must hold numbers or bools, got an array of dtype"):
        B.to_backend(bad, backend_name)


def test_strided_and_read_only_numpy_arrays_move_to_torch():
    base = np.arange(12.0).reshape(3, 4)
    for a in (base[:, ::2], base.T, np.frombuffer(base.tobytes(), dtype=np.float64),
              base.astype(">f8")):
        t = B.to_backend(a, B.get_backend("torch-cpu", "float64"))
        np.testing.assert_array_equal(t.numpy(), a)


# ----------------------------------------------------------------------------- device (point 4)
def test_device_is_none_for_numpy_and_the_tensor_device_for_torch(backend_name):
    x = B.randn(3, backend=backend_name)
    xp = B.namespace(x)
    dev = B.device(x)
    if backend_name == "numpy":
        assert dev is None
    else:
        assert dev == x.device
    z = xp.zeros((2,), dtype=x.dtype, device=dev)
    assert B.same_kind(z, x) and B.dtype_name(z) == B.dtype_name(x)
    with pytest.raises(TypeError, match="x must be a numpy array or a torch tensor, got \\[1, 2\\]"):
        B.device([1, 2])


# ----------------------------------------------------------------------------- randomness
def test_same_seed_gives_same_numbers_on_every_backend(backend_name):
    B.seed(3)
    a = B.to_numpy(B.randn(4, 5, backend=backend_name))
    B.seed(3)
    b = B.to_numpy(B.randn(4, 5, backend="numpy"))
    np.testing.assert_array_equal(a, b)
    B.seed(4)
    assert not np.array_equal(B.to_numpy(B.randn(4, 5)), b)


def test_numpy_and_torch_integer_scalars_are_sizes_and_seeds():
    B.seed(np.int64(3))
    a = B.to_numpy(B.randn(np.int64(2), torch.tensor(3)))
    B.seed(torch.tensor(3))
    np.testing.assert_array_equal(a, B.to_numpy(B.randn((2, 3))))
    assert B.rand(np.int32(4)).shape == (4,)
    assert B.uniform(np.float32(-1), 1, np.int64(5)).shape == (5,)
    np.testing.assert_array_equal(np.sort(B.permutation(np.int64(6))), np.arange(6))
    np.testing.assert_array_equal(B.generator(np.uint8(5)).random(3), np.random.default_rng(5).random(3))
    assert B.randn(0, 3).shape == (0, 3) and B.randn().shape == ()


# one row per argument check: (call, exception, message pattern that names the argument)
BAD_ARGUMENTS = {
    "seed(None)": (lambda: B.seed(None), TypeError, "seed value must be an int >= 0, got None"),
    "seed(str)": (lambda: B.seed("0"), TypeError, "seed value must be an int >= 0, got '0'"),
    "seed(-1)": (lambda: B.seed(-1), ValueError, "seed value must be an int >= 0, got -1"),
    "seed(2.5)": (lambda: B.seed(2.5), ValueError, "seed value must be an int >= 0, got 2.5"),
    "seed(True)": (lambda: B.seed(True), TypeError, "seed value must be an int >= 0, got True"),
    "generator(-1)": (lambda: B.generator(-1), ValueError, "seed_value must be an int >= 0, got -1"),
    "generator(None)": (lambda: B.generator(None), TypeError, "seed_value must be an int >= 0, got None"),
    "randn(-1)": (lambda: B.randn(-1), ValueError, "shape must be an int >= 0, got -1"),
    "randn('a')": (lambda: B.randn("a"), TypeError, "shape must be an int >= 0, got 'a'"),
    "randn(2.5)": (lambda: B.randn(2, 2.5), ValueError, "shape must be an int >= 0, got 2.5"),
    "randn(backend=3)": (lambda: B.randn(2, backend=3), TypeError, "backend must be a backend name"),
    "randn(dtype)": (lambda: B.randn(2, dtype="float128"), ValueError, "dtype must be one of .* 'float128'"),
    "rand(-2)": (lambda: B.rand(3, -2), ValueError, "shape must be an int >= 0, got -2"),
    "rand(None)": (lambda: B.rand(None), TypeError, "shape must be an int >= 0, got None"),
    "uniform(low=nan)": (lambda: B.uniform(float("nan"), 1, 3), ValueError, "low must be a finite number"),
    "uniform(high<low)": (lambda: B.uniform(1, 0, 3), ValueError, "low must be <= high, got low=1.0 and high=0.0"),
    "uniform(high=str)": (lambda: B.uniform(0, "1", 3), TypeError, "high must be a finite number"),
    "uniform(shape=-1)": (lambda: B.uniform(0, 1, (2, -1)), ValueError, "shape must be an int >= 0, got -1"),
    "permutation(-1)": (lambda: B.permutation(-1), ValueError, "n must be an int >= 0, got -1"),
    "permutation(1.5)": (lambda: B.permutation(1.5), ValueError, "n must be an int >= 0, got 1.5"),
    "permutation(gen)": (lambda: B.permutation(3, generator=7), TypeError, "generator must be a numpy Generator"),
    "dtype_name(None)": (lambda: B.dtype_name(None), TypeError, "x must be an array or a numpy/torch dtype, got None"),
    "dtype_name(list)": (lambda: B.dtype_name([1.0]), TypeError, "x must be an array or a numpy/torch dtype"),
    "to_backend(None)": (lambda: B.to_backend(None, "numpy"), TypeError, "x must be an array.*got None"),
    "to_backend(backend=1)": (lambda: B.to_backend(np.zeros(2), 1), TypeError, "backend must be a backend name"),
    "to_backend(bad name)": (lambda: B.to_backend(np.zeros(2), "gpu"), ValueError, "backend must be one of"),
    "to_backend(dtype)": (lambda: B.to_backend(np.zeros(2), "numpy", dtype="int4"), ValueError,
                          "dtype must be one of .* got 'int4'"),
    "to_backend(ragged)": (lambda: B.to_backend([[1], [1, 2]]), ValueError, "x cannot be made into an array"),
    "asarray(like=None)": (lambda: B.asarray([1.0], None), TypeError, "like must be a numpy array"),
    "backend_of(list)": (lambda: B.backend_of([1.0]), TypeError, "x must be a numpy array or a torch tensor"),
    "to_numpy(None)": (lambda: B.to_numpy(None), TypeError, "x must be an array.*got None"),
    "get_backend(None)": (lambda: B.get_backend(None), TypeError, "backend must be a str or Backend, got None"),
    "get_backend(dtype)": (lambda: B.get_backend("numpy", None), ValueError, "dtype must be one of .* got None"),
    "set_backend(dtype)": (lambda: B.set_backend("numpy", "int8"), ValueError, "dtype must be one of .* got 'int8'"),
    "set_backend(name)": (lambda: B.set_backend(5), TypeError, "backend must be a str or Backend, got 5"),
    "Backend(name)": (lambda: B.Backend("jax"), ValueError, "backend must be one of .* got 'jax'"),
    "Backend(dtype)": (lambda: B.Backend("numpy", "float16"), ValueError, "dtype must be one of .* 'float16'"),
    "zeros(shape)": (lambda: B.get_backend("numpy").zeros((2, -3)), ValueError, "shape must be an int >= 0"),
    "zeros(dtype)": (lambda: B.get_backend("numpy").zeros(2, dtype="cfloat"), ValueError, "dtype must be one of"),
    "windows(kh=0)": (lambda: B.sliding_windows(np.zeros((1, 1, 4, 4)), 0, 2), ValueError, "kh must be an int >= 1"),
    "windows(stride)": (lambda: B.sliding_windows(np.zeros((1, 1, 4, 4)), 2, 2, (1, 1)), TypeError,
                        "stride must be an int >= 1"),
    "windows(too big)": (lambda: B.sliding_windows_portable(np.zeros((1, 1, 4, 4)), 5, 2), ValueError,
                         "kh must be an int in \\[1, 4\\] .* window \\(5, 2\\) is larger than the image \\(4, 4\\)"),
    "windows(3-D)": (lambda: B.sliding_windows(np.zeros((1, 4, 4)), 2, 2), ValueError, "x must be an image batch"),
    "scatter(index)": (lambda: B.scatter_add(np.zeros((3, 2)), np.array([0.0]), np.ones((1, 2))), TypeError,
                       "index must be a 1-D integer array, got dtype float64"),
    "scatter(values)": (lambda: B.scatter_add_portable(np.zeros((3, 2)), np.array([0]), np.ones((2, 2))),
                        ValueError, "values must have shape"),
    "from_bytes(count)": (lambda: B.from_bytes(b"\x00" * 3, "int16", (2,)), ValueError, "buffer must hold 4 bytes"),
    "from_bytes(dtype)": (lambda: B.from_bytes(b"\x00", None, (1,)), TypeError, "dtype must be a numpy dtype name"),
    "load_npz(None)": (lambda: B.load_npz(None), TypeError, "path must be a path"),
}


@pytest.mark.parametrize("case", list(BAD_ARGUMENTS))
def test_bad_arguments_raise_errors_that_name_them(case):
    call, error, pattern = BAD_ARGUMENTS[case]
    before = B.active()
    with pytest.raises(error, match=pattern):
        call()
    assert B.active() == before    # a refused set_backend changes nothing


def test_a_refused_draw_leaves_the_generator_untouched():
    B.seed(1)
    with pytest.raises(ValueError):
        B.randn(3, dtype="float128")
    after = B.to_numpy(B.randn(3))
    B.seed(1)
    np.testing.assert_array_equal(after, B.to_numpy(B.randn(3)))


# ----------------------------------------------------------------------------- fast paths
@pytest.mark.parametrize("shape,k,stride", [((2, 3, 7, 6), (3, 3), 1), ((1, 2, 8, 8), (2, 2), 2),
                                            ((2, 1, 9, 7), (3, 2), 2), ((1, 1, 5, 5), (5, 5), 1)])
def test_sliding_windows_fast_path_equals_portable_fallback(be64, shape, k, stride):
    x = B.randn(*shape, backend=be64)
    fast = B.sliding_windows(x, *k, stride)
    slow = B.sliding_windows_portable(x, *k, stride)
    assert tuple(fast.shape) == tuple(slow.shape)
    np.testing.assert_array_equal(B.to_numpy(fast), B.to_numpy(slow))
    # and both against the definition, one window checked by hand
    i, j = fast.shape[2] - 1, fast.shape[3] - 1
    np.testing.assert_array_equal(
        B.to_numpy(fast)[0, 0, i, j],
        B.to_numpy(x)[0, 0, i * stride:i * stride + k[0], j * stride:j * stride + k[1]])


@pytest.mark.parametrize("index_dtype", ["int64", "int32", "uint8"])
def test_scatter_add_keeps_repeated_indices_and_equals_fallback(be64, index_dtype):
    index = B.to_backend(np.array([0, 2, 2, 2, 4, 0], dtype=index_dtype), be64)
    values = B.randn(6, 3, backend=be64)
    fast = B.scatter_add(be64.zeros((5, 3)), index, values)
    slow = B.scatter_add_portable(be64.zeros((5, 3)), index, values)
    expected = np.zeros((5, 3))
    for i, v in zip(B.to_numpy(index), B.to_numpy(values)):
        expected[i] += v
    np.testing.assert_allclose(B.to_numpy(fast), expected, rtol=1e-14, atol=1e-14)
    np.testing.assert_allclose(B.to_numpy(slow), expected, rtol=1e-14, atol=1e-14)


def test_public_names_are_exported():
    for name in ("device", "int_matmul", "int_matmul_portable", "INT_DTYPES", "ARRAY_DTYPES"):
        assert name in B.__all__ and hasattr(B, name)


# ----------------------------------------------------------------------------- errors that name the argument (fuzz)
HUGE = 2**62


@pytest.mark.parametrize("call,error,pattern", [
    (lambda: B.get_backend(None), TypeError, "backend must be a str or Backend, got None .*backend name"),
    (lambda: B.get_backend(2.5), TypeError, "backend must be a str or Backend, got 2.5 .*backend name"),
    (lambda: B.set_backend(True), TypeError, "backend must be a str or Backend, got True .*backend name"),
    (lambda: B.get_backend("abc"), ValueError, "backend must be one of .* got 'abc' \\(no backend has that name\\)"),
    (lambda: B.set_backend("abc"), ValueError, "backend must be one of .* got 'abc' \\(no backend has that name\\)"),
    (lambda: B.seed(-1), ValueError, "seed value must be an int >= 0, got -1"),
    (lambda: B.seed(object()), TypeError, "seed value must be an int >= 0"),
    (lambda: B.randn(HUGE), ValueError, f"shape must give an array that fits in memory, got \\({HUGE},\\)"),
    (lambda: B.rand(2, HUGE), ValueError, f"shape must give an array that fits in memory, got \\(2, {HUGE}\\)"),
    (lambda: B.uniform(0, 1, HUGE), ValueError, "shape must give an array that fits in memory"),
    (lambda: B.permutation(HUGE), ValueError, f"n must give an array that fits in memory, got {HUGE}"),
    (lambda: B.uniform(2.5, 1.0, 3), ValueError, "low must be <= high, got low=2.5 and high=1.0"),
    (lambda: B.uniform(1e300, 1.0, 3), ValueError, "low must be <= high, got low=1e\\+300 and high=1.0"),
    (lambda: B.uniform(-1e308, 1e308, 3), ValueError, "high - low must be a finite number"),
    (lambda: B.float_of(None), TypeError, "x must be a real number or an array of one element, got None"),
    (lambda: B.float_of("abc"), TypeError, "x must be a real number .* got 'abc'"),
    (lambda: B.float_of(object()), TypeError, "x must be a real number .* got a object"),
    (lambda: B.float_of(np.ones(3)), ValueError, "x must be a number or an array of one element, got shape \\(3,\\)"),
    (lambda: B.float_of(np.array(1 + 2j)), TypeError, "x must be a real number"),
    (lambda: B.to_bytes("abc", "uint8"), TypeError, "x must hold numbers or bools, got an array of dtype <U3"),
    (lambda: B.to_bytes(object(), "uint8"), TypeError, "x must hold numbers or bools, got an array of dtype object"),
    (lambda: B.to_bytes([[1], [1, 2]], "uint8"), ValueError, "x cannot be made into an array"),
    (lambda: B.save_npz(None, {"a": np.zeros(2)}), TypeError, "file must be a path .* got None"),
    (lambda: B.save_npz(0, {"a": np.zeros(2)}), TypeError, "file must be a path .* got 0"),
    (lambda: B.save_npz(True, {"a": np.zeros(2)}), TypeError, "file must be a path .* got True"),
    (lambda: B.save_npz(np.float32(0.5), {"a": np.zeros(2)}), TypeError, "file must be a path"),
], ids=lambda v: "" if callable(v) or isinstance(v, type) else v[:40])
def test_errors_name_the_parameter(call, error, pattern):
    before = B.active()
    with pytest.raises(error, match=pattern):
        call()
    assert B.active() == before


def test_float_of_takes_numbers_bools_and_one_element_arrays(backend_name):
    b = B.get_backend(backend_name, "float64")
    assert B.float_of(B.to_backend(np.array(2.5), b)) == 2.5
    assert B.float_of(B.to_backend(np.array([[-1.5]]), b)) == -1.5
    assert B.float_of(b.xp.all(B.to_backend(np.ones(3), b) > 0)) == 1.0
    assert B.float_of(np.float32(0.5)) == 0.5 and B.float_of(3) == 3.0 and B.float_of(True) == 1.0


def test_save_npz_still_takes_open_files_and_paths(tmp_path):
    import io
    buffer = io.BytesIO()
    B.save_npz(buffer, {"a": np.arange(3)})
    buffer.seek(0)
    np.testing.assert_array_equal(np.load(buffer)["a"], np.arange(3))
    B.save_npz(tmp_path / "b.npz", {"b": torch.ones(2)})
    np.testing.assert_array_equal(B.load_npz(tmp_path / "b.npz")["b"], np.ones(2))


def _images(backend_name, shape=(1, 1, 4, 4)):
    return B.to_backend(np.arange(np.prod(shape), dtype=np.float64).reshape(shape), B.get_backend(backend_name, "float64"))


@pytest.mark.parametrize("which", ["sliding_windows", "sliding_windows_portable"])
@pytest.mark.parametrize("args,pattern", [
    (dict(kh=HUGE, kw=2), f"kh must be an int in \\[1, 4\\] \\(the height of x\\), got {HUGE}"),
    (dict(kh=2, kw=HUGE), f"kw must be an int in \\[1, 4\\] \\(the width of x\\), got {HUGE}"),
    (dict(kh=2, kw=2, shape=(1, 1, 4, 0)), "x must have H >= 1 and W >= 1 .* got shape \\(1, 1, 4, 0\\)"),
    (dict(kh=2, kw=2, shape=(1, 1, 0, 4)), "x must have H >= 1 and W >= 1 .* got shape \\(1, 1, 0, 4\\)"),
], ids=["kh-huge", "kw-huge", "W=0", "H=0"])
def test_sliding_windows_refuse_windows_that_do_not_fit(backend_name, which, args, pattern):
    args = dict(args)
    x = _images(backend_name, args.pop("shape", (1, 1, 4, 4)))
    with pytest.raises(ValueError, match=pattern):
        getattr(B, which)(x, **args)


@pytest.mark.parametrize("stride", [4, 5, 2**31, HUGE])
@pytest.mark.parametrize("which", ["sliding_windows", "sliding_windows_portable"])
def test_a_stride_beyond_the_image_gives_the_one_window(backend_name, which, stride):
    x = _images(backend_name, (2, 3, 4, 5))          # numpy overflowed its byte strides for a huge stride
    got = B.to_numpy(getattr(B, which)(x, 2, 3, stride))
    reference = torch.from_numpy(B.to_numpy(x)).unfold(2, 2, stride).unfold(3, 3, stride).numpy()
    assert got.shape == (2, 3, 1, 1, 2, 3)
    np.testing.assert_array_equal(got, reference)


# scatter-add: every bad input refused up front, naming it (was AttributeError, IndexError, RuntimeError,
# or -- numpy with a negative index -- a silently wrong sum)
def _scatter_args(backend_name, dtype="float64"):
    b = B.get_backend(backend_name, "float64")
    out = B.to_backend(np.zeros((4, 2)), b, dtype=dtype)
    index = B.to_backend(np.array([0, 1, 1]), b)
    values = B.to_backend(np.arange(6.0).reshape(3, 2), b, dtype=dtype)
    return dict(out=out, index=index, values=values)


def _other_kind(a):
    return B.to_numpy(a) if B.is_torch(a) else torch.from_numpy(np.array(a))


SCATTER_BAD = {
    "out=None": (lambda k: dict(k, out=None), TypeError, "out must be a numpy array or a torch tensor, got None"),
    "index=None": (lambda k: dict(k, index=None), TypeError, "index must be a numpy array or a torch tensor, got None"),
    "values=None": (lambda k: dict(k, values=None), TypeError, "values must be a numpy array or a torch tensor, got None"),
    "out=list": (lambda k: dict(k, out=[0.0] * 4), TypeError, "out must be a numpy array or a torch tensor, got"),
    "index=int": (lambda k: dict(k, index=-99999), TypeError, "index must be a numpy array or a torch tensor, got -99999"),
    "out=other kind": (lambda k: dict(k, out=_other_kind(k["out"])), TypeError, "index must be a .* like out, got a"),
    "index=other kind": (lambda k: dict(k, index=_other_kind(k["index"])), TypeError, "index must be a .* like out"),
    "values=other kind": (lambda k: dict(k, values=_other_kind(k["values"])), TypeError, "values must be a .* like out"),
    "out=0-d": (lambda k: dict(k, out=k["out"][0, 0]), ValueError, "out must have at least one axis"),
    "out=empty": (lambda k: dict(k, out=k["out"][:0]), ValueError,
                  "index entries must lie in \\[0, out.shape\\[0\\]\\) = \\[0, 0\\), got entries in \\[0, 1\\]"),
    "index=2-D": (lambda k: dict(k, index=k["index"][None]), ValueError, "index must be a 1-D integer array, got shape"),
    "index=float": (lambda k: dict(k, index=k["values"][:, 0]), TypeError, "index must be a 1-D integer array, got dtype float64"),
    "index=negative": (lambda k: dict(k, index=k["index"] - 2), ValueError, "index entries .* got entries in \\[-2, -1\\]"),
    "index=huge": (lambda k: dict(k, index=k["index"] + 10**9), ValueError,
                   "index entries must lie in .* \\[0, 4\\), got entries in \\[1000000000, 1000000001\\]"),
    "index=4": (lambda k: dict(k, index=k["index"] + 3), ValueError, "got entries in \\[3, 4\\]"),
    "values=float32": (lambda k: dict(k, values=B.to_backend(k["values"], B.backend_of(k["values"]), dtype="float32")),
                       TypeError, "values must have the dtype of out \\(float64\\), got float32"),
    "values=int": (lambda k: dict(k, values=B.to_backend(k["values"], B.backend_of(k["values"]), dtype="int64")),
                   TypeError, "values must have the dtype of out \\(float64\\), got int64"),
    "out=uint8": (lambda k: dict(k, out=B.to_backend(k["out"], B.backend_of(k["out"]), dtype="uint8")),
                  TypeError, "values must have the dtype of out \\(uint8\\), got float64"),
    "values=shape": (lambda k: dict(k, values=k["values"][:, :1]), ValueError, "values must have shape .* \\(3, 2\\), got \\(3, 1\\)"),
    "values=ndim+1": (lambda k: dict(k, values=k["values"][..., None]), ValueError, "values must have shape"),
}


@pytest.mark.parametrize("which", ["scatter_add", "scatter_add_portable"])
@pytest.mark.parametrize("case", list(SCATTER_BAD))
def test_scatter_add_refuses_bad_inputs_up_front(backend_name, which, case):
    change, error, pattern = SCATTER_BAD[case]
    kwargs = change(_scatter_args(backend_name))
    before = {k: (B.to_numpy(v).copy() if B._is_array(v) else v) for k, v in kwargs.items()}
    with pytest.raises(error, match=pattern):
        getattr(B, which)(**kwargs)
    if B._is_array(kwargs["out"]):
        np.testing.assert_array_equal(B.to_numpy(kwargs["out"]), before["out"])   # nothing added before the error


@pytest.mark.parametrize("dtype", ["float64", "float32", "int64", "int32"])
@pytest.mark.parametrize("which", ["scatter_add", "scatter_add_portable"])
def test_scatter_add_of_each_dtype_equals_torch_index_add(backend_name, which, dtype):
    if which == "scatter_add_portable" and dtype.startswith("int") and backend_name == "torch-cuda":
        pytest.skip("torch's CUDA matmul has no integer kernel")
    kwargs = _scatter_args(backend_name, dtype)
    index = B.to_backend(np.array([3, 0, 3, 3, 1]), B.backend_of(kwargs["index"]))
    values = B.to_backend(B.randn(5, 2) * 4, B.backend_of(kwargs["out"]), dtype=dtype)
    got = B.to_numpy(getattr(B, which)(kwargs["out"], index, values))
    reference = torch.zeros(4, 2, dtype=getattr(torch, dtype)).index_add_(
        0, torch.from_numpy(B.to_numpy(index)), torch.from_numpy(B.to_numpy(values))).numpy()
    assert got.dtype == reference.dtype
    np.testing.assert_allclose(got, reference, rtol=1e-6 if dtype == "float32" else 1e-14)


def test_scatter_add_of_an_empty_index_changes_nothing(backend_name):
    kwargs = _scatter_args(backend_name)
    empty = dict(kwargs, index=kwargs["index"][:0], values=kwargs["values"][:0])
    np.testing.assert_array_equal(B.to_numpy(B.scatter_add(**empty)), np.zeros((4, 2)))
    np.testing.assert_array_equal(B.to_numpy(B.scatter_add_portable(**empty)), np.zeros((4, 2)))


# ----------------------------------------------------------------------------- segment_sum
@pytest.mark.parametrize("offsets", [[0, 3, 3, 5, 5, 5], [0, 0, 0], [0, 2, 4, 6], [0], [0, 0, 7]])
@pytest.mark.parametrize("fn", [B.segment_sum, B.segment_sum_portable], ids=["fast", "portable"])
def test_segment_sum_equals_a_loop_over_the_segments(fn, offsets, backend_name):
    be = B.get_backend(backend_name, "float64")
    values = np.random.default_rng(1).standard_normal((offsets[-1], 3))
    want = np.stack([values[a:b].sum(0) for a, b in zip(offsets[:-1], offsets[1:])]) if len(offsets) > 1 \
        else np.zeros((0, 3))
    got = fn(be.asarray(values), B.to_backend(np.array(offsets, dtype=np.int64), be))
    assert got.shape == want.shape
    np.testing.assert_allclose(B.to_numpy(got), want, rtol=1e-13, atol=1e-13)


@pytest.mark.parametrize("values, offsets, error, name", [
    (None, np.array([0]), TypeError, "values"),
    (np.ones(3), [0, 3], TypeError, "offsets"),
    (np.ones(3), np.array([0.0, 3.0]), TypeError, "offsets"),
    (np.ones(3), np.array([0, 2]), ValueError, "offsets"),
    (np.ones(3), np.array([1, 3]), ValueError, "offsets"),
    (np.ones(3), np.array([0, 2, 1, 3]), ValueError, "offsets"),
])
def test_segment_sum_refuses_bad_offsets(values, offsets, error, name):
    for fn in (B.segment_sum, B.segment_sum_portable):
        with pytest.raises(error, match=name):
            fn(values, offsets)
