"""nnopt_lab.models: the baseline networks, their shapes, and errors that name the caller's argument."""
import numpy as np
import pytest
import torch

from nnopt_lab import backend as B
from nnopt_lab import models
from nnopt_lab.reference import torch_twin
from nnopt_lab.testing import compare


def test_mlp_layers_and_twin(be64):
    model = models.mlp((6, 5, 4, 3), dropout=0.25, batchnorm=True, backend=be64)
    assert [type(m).__name__ for m in model] == ["Linear", "BatchNorm1d", "ReLU", "Dropout", "Linear",
                                                  "BatchNorm1d", "ReLU", "Dropout", "Linear"]
    model.eval()
    x = B.randn(7, 6, backend=be64)
    compare(model(x), torch_twin(model)(torch.as_tensor(B.to_numpy(x))).detach(), "mlp", rtol=1e-12, quiet=True)


def test_small_cnn_shape_and_twin(be64):
    model = models.small_cnn(in_channels=2, image_size=8, channels=(3, 4, 5), num_classes=6, backend=be64)
    x = B.randn(2, 2, 8, 8, backend=be64)
    out = model(x)
    assert tuple(out.shape) == (2, 6) and model[-1].in_features == 5 * 1 * 1
    compare(out, torch_twin(model)(torch.as_tensor(B.to_numpy(x))).detach(), "cnn", rtol=1e-12, quiet=True)


def test_numpy_numbers_accepted():
    model = models.mlp(np.array([4, 3, 2]), dropout=np.float32(0.5), batchnorm=np.bool_(True))
    assert model[0].in_features == 4 and model[3].p == 0.5
    cnn = models.small_cnn(np.int64(1), np.int64(4), (np.int32(2),), np.int64(3))
    assert cnn[-1].out_features == 3


@pytest.mark.parametrize("kwargs,error,match", [
    ({"sizes": (64, 0, 10)}, ValueError, r"sizes\[1\] must be an int >= 1, got 0"),
    ({"sizes": (64, 2.5)}, ValueError, r"sizes\[1\] must be an int >= 1, got 2.5"),
    ({"sizes": ("64", 10)}, TypeError, r"sizes\[0\] must be an int >= 1, got '64'"),
    ({"sizes": (64, True)}, TypeError, r"sizes\[1\] must be an int >= 1, got True"),
    ({"sizes": (64,)}, ValueError, r"sizes must have at least 2 entries, got \(64,\)"),
    ({"sizes": 64}, TypeError, r"sizes must be a sequence \(a list or tuple\), got int"),
    ({"sizes": "64"}, TypeError, "sizes must be a sequence"),
    ({"dropout": 1.0}, ValueError, r"dropout must be a finite number in \[0, 1\), got 1.0"),
    ({"dropout": -0.1}, ValueError, "dropout must be"),
    ({"dropout": None}, TypeError, "dropout must be"),
    ({"batchnorm": 1}, TypeError, "batchnorm must be a bool, got 1"),
    ({"backend": "gpu"}, ValueError, "backend must be one of"),
    ({"sizes": (2 ** 62, 10)}, ValueError, r"sizes \(4611686018427387904, 10\) make .* parameters, more than can "
                                          r"be allocated"),
])
def test_mlp_names_the_bad_argument(kwargs, error, match):
    with pytest.raises(error, match=match):
        models.mlp(**kwargs)


@pytest.mark.parametrize("kwargs,error,match", [
    ({"channels": (16, 0)}, ValueError, r"channels\[1\] must be an int >= 1, got 0"),
    ({"channels": ()}, ValueError, r"channels must have at least 1 entry, got \(\)"),
    ({"channels": None}, TypeError, "channels must be a sequence .*, got NoneType"),
    ({"in_channels": 0}, ValueError, "in_channels must be an int >= 1, got 0"),
    ({"num_classes": 0}, ValueError, "num_classes must be an int >= 1, got 0"),
    ({"num_classes": 2.0}, ValueError, "num_classes must be an int >= 1, got 2.0"),
    ({"image_size": 6}, ValueError, r"image_size must be divisible by 2\*\*len\(channels\) = 4, got 6"),
    ({"image_size": "8"}, TypeError, "image_size must be an int >= 1, got '8'"),
    ({"batchnorm": None}, TypeError, "batchnorm must be a bool, got None"),
    ({"in_channels": 2 ** 62}, ValueError, "in_channels 4611686018427387904, channels .* more than can be allocated"),
    ({"num_classes": 2 ** 62}, ValueError, "num_classes 4611686018427387904 make .* parameters"),
])
def test_small_cnn_names_the_bad_argument(kwargs, error, match):
    with pytest.raises(error, match=match):
        models.small_cnn(**kwargs)
