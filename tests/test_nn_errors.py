"""Bad arguments to nn.functional and the layers raise ValueError/TypeError naming the argument (never a
ZeroDivisionError, an IndexError, a huge allocation, a silent NaN or a finite wrong loss)."""
import numpy as np
import pytest
import torch

from nnopt_lab import backend as B
from nnopt_lab import nn
from nnopt_lab.nn import functional as F

X = np.ones((2, 3, 5, 5))
W = np.ones((4, 3, 3, 3))
LOGITS = np.zeros((3, 4))
LABELS = np.array([0, 3, 1])

CASES = {
    # convolution arguments: int or pair, checked (stride 0 was a ZeroDivisionError, a tuple a TypeError,
    # negative padding a 73 TiB allocation)
    "stride 0": (lambda: F.conv2d_forward(X, W, stride=0), ValueError, r"stride must be an int >= 1"),
    "stride pair with 0": (lambda: F.conv2d_forward(X, W, stride=(2, 0)), ValueError, r"stride must be .*got \(2, 0\)"),
    "stride float": (lambda: F.conv2d_forward(X, W, stride=1.5), TypeError, r"stride must be an int or a tuple"),
    "stride triple": (lambda: F.conv2d_forward(X, W, stride=(1, 1, 1)), ValueError, r"stride must be an int or a tuple of 2"),
    "padding -1": (lambda: F.conv2d_forward(X, W, padding=-1), ValueError, r"padding must be an int >= 0"),
    "padding -10**9": (lambda: F.conv2d_forward(X, W, padding=-10**9), ValueError, r"padding must be an int >= 0"),
    "dilation 0": (lambda: F.conv2d_forward(X, W, dilation=0), ValueError, r"dilation must be an int >= 1"),
    "groups 0": (lambda: F.conv2d_forward(X, W, groups=0), ValueError, r"groups must be an int >= 1, got 0"),
    "groups not dividing Cout": (lambda: F.conv2d_forward(X, np.ones((4, 1, 3, 3)), groups=3), ValueError,
                                 r"groups must divide the out-channels 4"),
    "groups and channels": (lambda: F.conv2d_forward(X, np.ones((4, 1, 3, 3)), groups=2), ValueError,
                            r"x must have shape \(N, 2, H, W\) for weight \(4, 1, 3, 3\) and groups=2"),
    "kernel larger than input": (lambda: F.conv2d_forward(np.ones((1, 3, 2, 2)), W), ValueError,
                                 r"weight's kernel \(kh, kw\) \(3, 3\) spans \(3, 3\), more than x's height and "
                                 r"width \(2, 2\)"),
    "dilated kernel too large": (lambda: F.conv2d_forward(X, W, dilation=3), ValueError,
                                 r"with dilation \(3, 3\) spans \(7, 7\)"),
    "x 3-D": (lambda: F.conv2d_forward(np.ones((3, 5, 5)), W), ValueError, r"x must have 4 axes \(N, C, H, W\)"),
    "x list": (lambda: F.conv2d_forward([[1.0]], W), TypeError, r"x must be a numpy array or torch tensor, got list"),
    "x int": (lambda: F.conv2d_forward(X.astype(np.int64), W), TypeError, r"x must be a float array, got dtype int64"),
    "weight dtype": (lambda: F.conv2d_forward(X, W.astype(np.float32)), TypeError,
                     r"weight has dtype float32 but x is float64"),
    "weight torch": (lambda: F.conv2d_forward(X, torch.ones(4, 3, 3, 3, dtype=torch.float64)), TypeError,
                     r"weight is on torch-cpu .* but x is on numpy .*mixed"),
    "weight empty kernel": (lambda: F.conv2d_forward(X, np.ones((4, 3, 0, 3))), ValueError,
                            r"weight must have at least one entry on every axis"),
    "bias shape": (lambda: F.conv2d_forward(X, W, np.ones(3)), ValueError, r"bias must have shape \(4,\), got \(3,\)"),
    "conv_output_size too large": (lambda: F.conv_output_size(3, 5, 1, 0), ValueError, r"kernel 5 spans 5, more "
                                   r"than size 3 padded by 0 to 3"),
    "conv_output_size stride 0": (lambda: F.conv_output_size(5, 3, 0, 0), ValueError, r"stride must be an int >= 1"),
    "conv_output_size padding -1": (lambda: F.conv_output_size(5, 3, 1, -1), ValueError, r"padding must be an int >= 0"),
    "im2col kh 0": (lambda: F.im2col(X, 0, 3), ValueError, r"kh must be an int >= 1, got 0"),
    "col2im geometry": (lambda: F.col2im(np.ones((27, 50)), None), TypeError, r"geometry must be the dict that im2col"),
    "col2im dcols shape": (lambda: F.col2im(np.ones((27, 49)), F.im2col(X, 3, 3)[1]), ValueError,
                           r"dcols must have shape \(27, 30\)"),
    # pooling
    "pool kernel too large": (lambda: F.maxpool2d_forward(X, 6), ValueError, r"kernel \(6, 6\) spans \(6, 6\), more "
                              r"than x's height and width \(5, 5\)"),
    "pool on an empty axis": (lambda: F.avgpool2d_forward(np.ones((2, 3, 4, 0)), 2), ValueError,
                              r"more than x's height and width \(4, 0\)"),
    "im2col kernel too large": (lambda: F.im2col(X, 2, 7), ValueError, r"kernel \(kh, kw\) \(2, 7\) spans"),
    "huge padding": (lambda: F.conv2d_forward(X, W, padding=2 ** 40), ValueError,
                     r"padding \(1099511627776, 1099511627776\) pads x to .* more than 1099511627776"),
    "huge kernel": (lambda: F.maxpool2d_forward(X, 2 ** 62), ValueError, r"kernel \(4611686018427387904, "),
    "pool stride 0": (lambda: F.avgpool2d_forward(X, 2, 0), ValueError, r"stride must be an int >= 1"),
    "pool kernel 0": (lambda: F.maxpool2d_forward(X, (2, 0)), ValueError, r"kernel must be an int >= 1"),
    "pool int x": (lambda: F.avgpool2d_forward(X.astype(np.uint8), 2), TypeError, r"x must be a float array"),
    # linear
    "linear shapes": (lambda: F.linear_forward(np.ones((2, 3)), np.ones((4, 5))), ValueError,
                      r"x must have shape \(N, 5\) for weight \(4, 5\), got \(2, 3\)"),
    "linear 3-D x": (lambda: F.linear_forward(np.ones((2, 3, 5)), np.ones((4, 5))), ValueError,
                     r"x must have 2 axes \(N, in\)"),
    "linear bias": (lambda: F.linear_forward(np.ones((2, 5)), np.ones((4, 5)), np.ones(5)), ValueError,
                    r"bias must have shape \(4,\)"),
    # others
    "batchnorm momentum": (lambda: F.batchnorm_forward(np.ones((4, 2)), *[np.ones(2)] * 4, True, momentum=1.5),
                           ValueError, r"momentum must be a finite number in \[0, 1\]"),
    "batchnorm eps nan": (lambda: F.batchnorm_forward(np.ones((4, 2)), *[np.ones(2)] * 4, True, eps=float("nan")),
                          ValueError, r"eps must be a finite number in \(0, inf\)"),
    "batchnorm gamma shape": (lambda: F.batchnorm_forward(np.ones((4, 2)), np.ones(3), *[np.ones(2)] * 3, True),
                              ValueError, r"gamma must have shape \(2,\), got \(3,\)"),
    "batchnorm training": (lambda: F.batchnorm_forward(np.ones((4, 2)), *[np.ones(2)] * 4, "yes"), TypeError,
                           r"training must be a bool"),
    "dropout p 1": (lambda: F.dropout_forward(np.ones(3), 1.0, True), ValueError, r"p must be a finite number in \[0, 1\)"),
    "dropout p nan": (lambda: F.dropout_forward(np.ones(3), float("nan"), True), ValueError, r"p must be"),
    "relu int": (lambda: F.relu_forward(np.ones(3, dtype=np.int32)), TypeError, r"x must be a float array, got dtype int32"),
    "softmax 0-d": (lambda: F.softmax(np.float64(1.0)), ValueError, r"logits must have at least one class"),
    # cross-entropy: silent wrong answers before
    "labels out of range": (lambda: F.cross_entropy_forward(LOGITS, np.array([0, 4, 1])), ValueError,
                            r"labels must be class indices in \[0, 4\) .*got values from 0 to 4"),
    "labels negative": (lambda: F.cross_entropy_forward(LOGITS, np.array([0, -1, 1])), ValueError,
                        r"labels must be class indices in \[0, 4\) .*from -1 to 1"),
    "labels float": (lambda: F.cross_entropy_forward(LOGITS, LABELS.astype(np.float64)), TypeError,
                     r"labels must be integer class indices, got dtype float64"),
    "labels bool": (lambda: F.cross_entropy_forward(LOGITS, np.array([True, False, True])), TypeError,
                    r"labels must be integer class indices, got dtype bool"),
    "labels (N, 1)": (lambda: F.cross_entropy_forward(LOGITS, LABELS[:, None]), ValueError,
                      r"labels must have 1 axes \(N,\), got shape \(3, 1\)"),
    "labels length": (lambda: F.cross_entropy_forward(LOGITS, LABELS[:2]), ValueError,
                      r"labels must have one class index per row of logits \(3\), got 2"),
    "labels torch": (lambda: F.cross_entropy_forward(LOGITS, torch.as_tensor(LABELS)), TypeError,
                     r"labels is on torch-cpu .* but logits is on numpy"),
    "labels list": (lambda: F.cross_entropy_forward(LOGITS, [0, 1, 2]), TypeError,
                    r"labels must be a numpy array or torch tensor, got list"),
    "logits uint8": (lambda: F.cross_entropy_forward(np.full((3, 4), 200, dtype=np.uint8), LABELS), TypeError,
                     r"logits must be a float array, got dtype uint8"),
    "logits int64": (lambda: F.cross_entropy_forward(np.zeros((3, 4), dtype=np.int64), LABELS), TypeError,
                     r"logits must be a float array, got dtype int64"),
    "logits no rows": (lambda: F.cross_entropy_forward(np.zeros((0, 4)), np.zeros(0, dtype=np.int64)), ValueError,
                       r"logits must have at least one row"),
    "logits no classes": (lambda: F.cross_entropy_forward(np.zeros((3, 0)), LABELS), ValueError,
                          r"logits must have at least one class"),
    "dloss nan": (lambda: F.cross_entropy_backward(F.cross_entropy_forward(LOGITS, LABELS)[1], float("nan")),
                  ValueError, r"dloss must be a finite number"),
}


@pytest.mark.parametrize("name", list(CASES))
def test_bad_arguments_raise_clear_errors(name):
    call, error, message = CASES[name]
    with pytest.raises(error, match=message):
        call()


def test_labels_are_checked_on_torch_too():
    logits = torch.zeros(3, 4, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"labels must be class indices in \[0, 4\)"):
        F.cross_entropy_forward(logits, torch.tensor([0, 4, 1]))
    with pytest.raises(TypeError, match="logits must be a float array, got dtype uint8"):
        F.cross_entropy_forward(torch.full((3, 4), 200, dtype=torch.uint8), torch.tensor([0, 1, 2]))


def test_a_huge_stride_along_an_axis_with_one_output_is_torchs_answer():
    """Only one output position: the stride reads nothing (it used to widen the flat rows to 2**62)."""
    rng = np.random.default_rng(1)
    x, w = rng.standard_normal((2, 3, 5, 6)), rng.standard_normal((4, 3, 3, 2))
    out, cache = F.conv2d_forward(x, w, None, (2 ** 62, 2))
    ref = torch.nn.functional.conv2d(torch.as_tensor(x), torch.as_tensor(w), None, (2 ** 31, 2))
    np.testing.assert_allclose(out, ref.numpy(), rtol=1e-12, atol=1e-12)
    assert F.conv2d_backward(out, cache)[0].shape == x.shape
    pooled, _ = F.maxpool2d_forward(x, (5, 2), (2 ** 62, 2))
    np.testing.assert_array_equal(pooled, torch.nn.functional.max_pool2d(torch.as_tensor(x), (5, 2), (5, 2)).numpy())


def test_huge_layer_sizes_are_refused_before_allocating():
    with pytest.raises(ValueError, match=r"in_features × out_features = \d+ parameters is more than"):
        nn.Linear(2 ** 31, 2 ** 31)
    with pytest.raises(ValueError, match=r"out_channels × in_channels/groups × kernel_size = \d+ parameters"):
        nn.Conv2d(4, 4, 2 ** 40)
    with pytest.raises(ValueError, match=r"num_features = \d+ parameters is more than"):
        nn.BatchNorm1d(2 ** 62)


def test_dropout_zeroes_dropped_infinities_instead_of_making_nan():
    x = np.full((50, 40), np.inf)
    out, cache = F.dropout_forward(x, 0.5, True)
    dx = F.dropout_backward(x, cache)
    for a in (out, dx):
        assert not np.isnan(a).any() and set(np.unique(a)) == {0.0, np.inf}
    np.testing.assert_array_equal(out == 0, dx == 0)                     # the same mask


def test_array_subclasses_are_the_same_backend():
    """A torch Parameter with a plain tensor, a numpy memmap-like subclass with an array: not a mix."""
    x = torch.randn(2, 5, dtype=torch.float64)
    w = torch.nn.Parameter(torch.randn(3, 5, dtype=torch.float64))
    out, _ = F.linear_forward(x, w)
    np.testing.assert_allclose(out.detach().numpy(), (x @ w.T).detach().numpy(), rtol=1e-12)

    class Sub(np.ndarray):
        pass
    a = np.ones((2, 5)).view(Sub)
    F.linear_forward(a, np.ones((3, 5)))


def test_valid_pairs_give_the_right_answer_not_an_error():
    """A tuple stride was a TypeError; now it is torch's answer."""
    rng = np.random.default_rng(0)
    x, w = rng.standard_normal((2, 3, 7, 6)), rng.standard_normal((4, 3, 3, 2))
    out, _ = F.conv2d_forward(x, w, None, (2, 1), (1, 0))
    ref = torch.nn.functional.conv2d(torch.as_tensor(x), torch.as_tensor(w), None, (2, 1), (1, 0))
    np.testing.assert_allclose(out, ref.numpy(), rtol=1e-12, atol=1e-12)
    assert F.conv_output_size(np.int64(7), 3, np.int64(2), 1) == 4      # numpy ints are ints
    assert F.conv_output_size(7, 3, 2, 1, dilation=2) == 3


# ----------------------------------------------------------------------------- caches
def _forwards():
    x2, x4 = np.ones((2, 5)), np.ones((2, 3, 4, 4))
    return {
        "linear": (lambda: F.linear_forward(x2, np.ones((3, 5))), F.linear_backward),
        "conv2d": (lambda: F.conv2d_forward(x4, np.ones((2, 3, 3, 3))), F.conv2d_backward),
        "maxpool2d": (lambda: F.maxpool2d_forward(x4, 2), F.maxpool2d_backward),
        "avgpool2d": (lambda: F.avgpool2d_forward(x4, 2), F.avgpool2d_backward),
        "relu": (lambda: F.relu_forward(x2), F.relu_backward),
        "batchnorm": (lambda: F.batchnorm_forward(x2, *[np.ones(5)] * 4, True), F.batchnorm_backward),
        "dropout": (lambda: F.dropout_forward(x2, 0.5, True), F.dropout_backward),
    }


@pytest.mark.parametrize("kind", list(_forwards()))
def test_backward_with_a_bad_cache_names_cache(kind):
    forward, backward = _forwards()[kind]
    out, cache = forward()
    with pytest.raises(TypeError, match=rf"cache must be the cache that {kind}_forward returned .*got NoneType"):
        backward(out, None)
    with pytest.raises(ValueError, match=rf"cache must be the cache that {kind}_forward returned .*got a tuple of 2"):
        backward(out, (1, 2))
    other = "relu" if kind != "relu" else "linear"
    with pytest.raises(ValueError, match=rf"got the cache of {other}_forward"):
        backward(out, _forwards()[other][0]()[1])
    with pytest.raises(ValueError, match=r"dout must have the forward output's shape"):
        backward(out[:1], cache)
    with pytest.raises(TypeError, match=r"dout is on torch-cpu"):
        backward(torch.as_tensor(out), cache)
    backward(out, cache)                                      # the right cache still works


def test_cross_entropy_backward_with_a_bad_cache_names_cache():
    with pytest.raises(TypeError, match="cache must be the cache that cross_entropy_forward returned"):
        F.cross_entropy_backward(None)
    with pytest.raises(ValueError, match="got the cache of relu_forward"):
        F.cross_entropy_backward(F.relu_forward(np.ones(3))[1])


# ----------------------------------------------------------------------------- layers
LAYERS = {
    "Linear": (lambda: nn.Linear(5, 3, backend=B.get_backend("numpy", "float64")), (2, 5)),
    "Conv2d": (lambda: nn.Conv2d(3, 2, 3, backend=B.get_backend("numpy", "float64")), (2, 3, 4, 4)),
    "MaxPool2d": (lambda: nn.MaxPool2d(2), (2, 3, 4, 4)),
    "AvgPool2d": (lambda: nn.AvgPool2d(2), (2, 3, 4, 4)),
    "ReLU": (lambda: nn.ReLU(), (2, 5)),
    "BatchNorm1d": (lambda: nn.BatchNorm1d(5, backend=B.get_backend("numpy", "float64")), (4, 5)),
    "Dropout": (lambda: nn.Dropout(0.5), (2, 5)),
    "Flatten": (lambda: nn.Flatten(), (2, 3, 4)),
    "Sequential": (lambda: nn.Sequential(nn.Linear(5, 3, backend=B.get_backend("numpy", "float64"))), (2, 5)),
}


@pytest.mark.parametrize("name", list(LAYERS))
def test_layer_backward_before_forward_says_so(name):
    make, shape = LAYERS[name]
    layer = make()
    with pytest.raises(RuntimeError, match=rf"{name}.backward was called before forward: call forward before backward"):
        layer.backward(np.ones(shape))
    out = layer(np.ones(shape))
    layer.backward(np.ones(tuple(out.shape)))               # after forward it works


def test_layer_forward_on_another_backend_says_so():
    with pytest.raises(TypeError, match=r"Conv2d got x on torch-cpu \(cpu\) but its parameters \(weight\) are on numpy"):
        nn.Conv2d(1, 2, 3)(torch.zeros(1, 1, 4, 4))
    with pytest.raises(TypeError, match=r"Linear got x on numpy \(cpu\) but its parameters \(weight\) are on torch-cpu"):
        nn.Linear(3, 2, backend="torch-cpu")(np.zeros((2, 3), dtype=np.float32))


def test_loss_backward_before_the_loss_says_so():
    with pytest.raises(RuntimeError, match=r"call crit\(logits, labels\) before crit.backward\(\)"):
        nn.CrossEntropyLoss().backward()


@pytest.mark.parametrize("bad", [None, "x", [1.0, 2.0]])
def test_layer_forward_of_a_non_array_names_x(bad):
    for make, _ in LAYERS.values():
        with pytest.raises(TypeError, match=r"expects x to be a numpy array or torch tensor"):
            make()(bad)


def test_layer_cost_arguments_are_checked():
    layer = nn.Linear(3, 2)
    with pytest.raises(ValueError, match="bits must be an int >= 1, got 4.5"):
        layer.parameter_bytes(bits=4.5)
    with pytest.raises(TypeError, match="bits must be an int >= 1, got '8'"):
        layer.parameter_bytes(bits="8")
    with pytest.raises(TypeError, match="mode must be a bool"):
        layer.train("yes")


# ----------------------------------------------------------------------------- the shared input checks
def test_sparse_linear_uses_the_public_input_checks_of_nn_layers():
    """inference/sparse.py asks the same public checks as the dense layers (it used to import the
    private _check_dtype/_check_input of nn/layers); no module imports a private check of nn.layers."""
    import ast
    import pathlib

    import nnopt_lab
    from nnopt_lab.nn import layers as L

    root = pathlib.Path(nnopt_lab.__file__).parent
    private = []
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and (node.module or "").endswith("layers"):
                private += [f"{path.relative_to(root)}: {a.name}" for a in node.names if a.name.startswith("_check")]
    assert not private, private
    assert {"check_layer_input", "check_layer_dtype"} <= set(L.__all__)
    sparse = ast.parse((root / "inference" / "sparse.py").read_text(encoding="utf-8"))
    names = {a.name for n in ast.walk(sparse) if isinstance(n, ast.ImportFrom) for a in n.names}
    assert {"check_layer_input", "check_layer_dtype"} <= names and not any(n.startswith("_") for n in names)


def test_sparse_and_dense_linear_refuse_the_same_inputs_with_the_same_words():
    from nnopt_lab.inference import sparse as S

    dense = nn.Linear(3, 2, backend="torch-cpu")
    csr = S.SparseLinear.from_linear(dense)
    for x, error, words in [(np.zeros((2, 3), dtype=np.float32), TypeError, r"got x on numpy \(cpu\) but its "
                                                                             r"parameters \(weight\) are on torch-cpu"),
                            (torch.zeros(2, 3, dtype=torch.float64), TypeError, r"got x of dtype float64 but its "
                                                                                r"parameters \(weight\) are float32"),
                            ([[0.0, 0.0, 0.0]], TypeError, "expects x to be a numpy array or torch tensor, got list")]:
        for layer in (dense, csr):
            with pytest.raises(error, match=f"{type(layer).__name__} {words}"):
                layer(x)


def test_layer_checks_called_directly():
    from nnopt_lab.nn import layers as L

    layer = nn.Linear(3, 2)
    w = layer._params["weight"].data
    assert L.check_layer_input(layer, np.zeros(3)) is None
    assert L.check_layer_dtype(layer, np.zeros((1, 3), dtype=w.dtype), w) is None
    with pytest.raises(TypeError, match="Linear expects x to be a numpy array or torch tensor, got int"):
        L.check_layer_input(layer, 3)
    with pytest.raises(TypeError, match="x must be a numpy array or torch tensor, got str"):
        L.check_layer_dtype(layer, "x", w)
    with pytest.raises(TypeError, match="weight must be a numpy array or torch tensor, got NoneType"):
        L.check_layer_dtype(layer, np.zeros((1, 3)), None)
