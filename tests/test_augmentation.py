"""Augmentation: flips and rotations against numpy/scipy, resize against torch, crops by hand, seeding."""
import numpy as np
import pytest
import scipy.ndimage as ndi
import torch
import torch.nn.functional as tF

from nnopt_lab import backend as B
from nnopt_lab import models
from nnopt_lab.preprocessing import augmentation as A
from nnopt_lab.testing import compare
from nnopt_lab.training import fit

RTOL64, ATOL64 = 1e-10, 1e-12


def _images(*shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape)


def test_flips_equal_numpy_flip(be64):
    x = _images(2, 3, 5, 7)
    np.testing.assert_array_equal(B.to_numpy(A.hflip(be64.asarray(x))), np.flip(x, axis=-1))
    np.testing.assert_array_equal(B.to_numpy(A.vflip(be64.asarray(x))), np.flip(x, axis=-2))


@pytest.mark.parametrize("k", [-3, -2, -1, 0, 1, 2, 3, 6])
def test_rot90_equals_numpy_rot90(be64, k):
    x = _images(2, 3, 5, 7)                                    # not square: H and W swap for odd k
    np.testing.assert_array_equal(B.to_numpy(A.rot90(be64.asarray(x), k)), np.rot90(x, k, axes=(-2, -1)))


def test_rot90_direction_on_a_known_image():
    x = np.array([[[[1.0, 2.0], [3.0, 4.0]]]])
    np.testing.assert_array_equal(A.rot90(x, 1)[0, 0], [[2.0, 4.0], [1.0, 3.0]])     # counter-clockwise
    np.testing.assert_array_equal(A.rot90(x, -1)[0, 0], [[3.0, 1.0], [4.0, 2.0]])    # clockwise


def _source_inside(h, w, angle):
    """Pixels whose rotation source lies inside the image: the interior where mode='constant' agrees."""
    i, j = np.mgrid[0:h, 0:w].astype(float)
    c, s = np.cos(np.radians(angle)), np.sin(np.radians(angle))
    di, dj = i - (h - 1) / 2, j - (w - 1) / 2
    r, q = c * di + s * dj + (h - 1) / 2, -s * di + c * dj + (w - 1) / 2
    eps = 1e-9
    return (r >= eps) & (r <= h - 1 - eps) & (q >= eps) & (q <= w - 1 - eps)


@pytest.mark.parametrize("angle", [0.0, 12.0, 30.0, -47.5, 90.0, 135.0, 200.0, -90.0])
def test_rotate_matches_scipy_rotate(be64, angle):
    for shape in ((2, 3, 8, 8), (1, 2, 7, 10)):
        x = _images(*shape)
        ours = A.rotate(be64.asarray(x), angle, fill=0.3)
        grid = ndi.rotate(x, angle, axes=(2, 3), reshape=False, order=1, mode="grid-constant", cval=0.3)
        compare(ours, grid, f"scipy.ndimage.rotate grid-constant {angle}", rtol=RTOL64, atol=ATOL64, quiet=True)
        default = ndi.rotate(x, angle, axes=(2, 3), reshape=False, order=1, cval=0.3)
        inside = _source_inside(*shape[2:], angle)
        assert inside.mean() > 0.4
        compare(B.to_numpy(ours)[..., inside], default[..., inside], "scipy.ndimage.rotate interior",
                rtol=RTOL64, atol=ATOL64, quiet=True)


def test_rotate_by_90_is_rot90_and_per_image_angles(be64):
    x = _images(3, 1, 6, 6)
    np.testing.assert_array_equal(B.to_numpy(A.rotate(be64.asarray(x), 90.0)), np.rot90(x, 1, axes=(2, 3)))
    angles = [10.0, -25.0, 70.0]
    ours = B.to_numpy(A.rotate(be64.asarray(x), angles, fill=-1.0))
    for n, a in enumerate(angles):
        ref = ndi.rotate(x[n, 0], a, reshape=False, order=1, mode="grid-constant", cval=-1.0)
        compare(ours[n, 0], ref, f"rotate image {n}", rtol=RTOL64, atol=ATOL64, quiet=True)


@pytest.mark.parametrize("size", [(4, 5), (14, 3), (7, 9), (16, 16), (1, 1)])
def test_resize_matches_torch_interpolate_bilinear(be64, size):
    x = _images(2, 3, 7, 9)
    ref = tF.interpolate(torch.from_numpy(x), size=size, mode="bilinear", align_corners=False).numpy()
    compare(A.resize(be64.asarray(x), size), ref, f"interpolate {size}", rtol=RTOL64, atol=ATOL64, quiet=True)


def test_resized_crop_is_crop_then_resize(be64):
    x = _images(2, 1, 8, 8)
    boxes = [(1, 2, 5, 4), (0, 0, 8, 3)]
    ours = B.to_numpy(A.resized_crop(be64.asarray(x), boxes, 6))
    for n, (t, l, h, w) in enumerate(boxes):
        ref = tF.interpolate(torch.from_numpy(x[n:n + 1, :, t:t + h, l:l + w]), size=(6, 6), mode="bilinear",
                             align_corners=False).numpy()
        compare(ours[n:n + 1], ref, "crop + interpolate", rtol=RTOL64, atol=ATOL64, quiet=True)


def test_crops_by_hand(be64):
    x = np.arange(2 * 1 * 6 * 7, dtype=float).reshape(2, 1, 6, 7)
    xb = be64.asarray(x)
    np.testing.assert_array_equal(B.to_numpy(A.crop(xb, 1, 2, 3, 4)), x[..., 1:4, 2:6])
    np.testing.assert_array_equal(B.to_numpy(A.center_crop(xb, 4)), x[..., 1:5, 1:5])
    np.testing.assert_array_equal(B.to_numpy(A.center_crop(xb, (3, 5))), x[..., 1:4, 1:6])
    padded = B.to_numpy(A.pad(xb, 2, fill=-1.0))
    assert padded.shape == (2, 1, 10, 11) and (padded[..., :2, :] == -1).all()
    np.testing.assert_array_equal(padded[..., 2:8, 2:9], x)


def test_random_crop_windows_are_slices_of_the_padded_image(be64):
    x = np.arange(4 * 1 * 6 * 6, dtype=float).reshape(4, 1, 6, 6)
    B.seed(3)
    out = B.to_numpy(A.RandomCrop(6, padding=2, fill=-1.0)(be64.asarray(x)))
    g = np.random.default_rng(3)
    g.random(4)                                                 # the draw that decides p
    tops, lefts = g.integers(0, 5, size=4), g.integers(0, 5, size=4)
    padded = np.pad(x, ((0, 0), (0, 0), (2, 2), (2, 2)), constant_values=-1.0)
    for n in range(4):
        np.testing.assert_array_equal(out[n], padded[n, :, tops[n]:tops[n] + 6, lefts[n]:lefts[n] + 6])


def _pipeline():
    return A.Compose([A.RandomCrop(8, padding=1), A.HorizontalFlip(0.5), A.RandomRotate90(p=0.5),
                      A.RandomRotation(20.0, p=0.7), A.RandomResizedCrop(8, scale=(0.5, 1.0))])


def test_same_seed_same_batch_and_backends_agree():
    x = _images(6, 2, 8, 8)
    outs = []
    for name in ("numpy", "torch-cpu", "numpy"):
        B.seed(11)
        outs.append(B.to_numpy(_pipeline()(B.to_backend(x, name, "float64"))))
    compare(outs[1], outs[0], "torch-cpu vs numpy augmentation", rtol=RTOL64, atol=ATOL64, quiet=True)
    np.testing.assert_array_equal(outs[2], outs[0])
    B.seed(12)
    assert not np.allclose(B.to_numpy(_pipeline()(x)), outs[0])


def test_probability_selects_images():
    x = _images(400, 1, 4, 4)
    flipped = B.to_numpy(A.HorizontalFlip(p=0.3)(x))
    changed = (flipped != x).any(axis=(1, 2, 3)).mean()
    assert abs(changed - 0.3) < 0.07
    np.testing.assert_array_equal(A.HorizontalFlip(p=0.0)(x), x)
    np.testing.assert_array_equal(A.VerticalFlip(p=1.0)(x), np.flip(x, axis=2))


def test_fit_augments_every_batch_through_for_flat_batches():
    g = np.random.default_rng(0)
    x = g.random((64, 16))
    y = g.integers(0, 3, size=64)
    clean = x.copy()
    seen = []

    def remember(images):
        assert images.shape[1:] == (1, 4, 4)
        seen.append(images.copy())
        return np.flip(images, axis=-1)

    b64 = B.get_backend("numpy", "float64")
    fit(models.mlp((16, 8, 3), backend=b64), (x, y), epochs=2, batch_size=16, progress=False,
        augment=A.for_flat_batches(remember, (1, 4, 4)))
    assert len(seen) == 2 * 4                                   # every batch of every epoch
    np.testing.assert_array_equal(np.sort(np.concatenate(seen[:4]).reshape(64, 16), axis=0),
                                  np.sort(clean, axis=0))      # epoch 1 saw each training row once
    np.testing.assert_array_equal(x, clean)                     # the training array is not touched

    def trained(augment):
        B.seed(5)
        model = models.mlp((16, 8, 3), backend=b64)
        hist = fit(model, (x, y), epochs=3, batch_size=16, progress=False, seed=5, augment=augment)
        return hist["loss"], B.to_numpy(model.state_dict()["0.weight"])

    pipeline = A.for_flat_batches(A.Compose([A.RandomRotation(20.0), A.HorizontalFlip(0.5)]), (1, 4, 4))
    first, again = trained(pipeline), trained(pipeline)
    assert first[0] == again[0]
    np.testing.assert_array_equal(first[1], again[1])          # same seed: same augmented training
    assert first[0] != trained(None)[0]
    with pytest.raises(ValueError, match=r"xb must be a non-empty flat batch \(N, 16\)"):
        pipeline(np.zeros((2, 15)))
    with pytest.raises(ValueError, match=r"transform changed the image shape"):
        A.for_flat_batches(lambda im: im[..., :3, :3], (1, 4, 4))(np.zeros((2, 16)))
    with pytest.raises(ValueError, match=r"image_shape must be an int or a tuple of 3 ints"):
        A.for_flat_batches(A.HorizontalFlip(), (4, 4))


@pytest.mark.parametrize("call, error, match", [
    (lambda x: A.center_crop(x, 9), ValueError, r"size \(9, 9\) of the crop is larger than the image \(8, 8\)"),
    (lambda x: A.RandomCrop(10, padding=0)(x), ValueError, r"larger than the image \(8, 8\)"),
    (lambda x: A.crop(x, 2, 0, 7, 8), ValueError, r"top \+ height and left \+ width must fit in the images of x \(8, 8\)"),
    (lambda x: A.RandomCrop(6, p=0.5)(x), ValueError, "cannot be applied to only some images: use p=1"),
    (lambda x: A.RandomCrop(8, padding=1, mode="edge")(x), ValueError, r"mode must be one of .* got 'edge'"),
    (lambda x: A.HorizontalFlip(p=1.5), ValueError, r"p must be a finite number in \[0, 1\], got 1.5"),
    (lambda x: A.rotate(x, float("inf")), ValueError, "angle must be a finite number"),
    (lambda x: A.rotate(x, [1.0, 2.0]), ValueError, r"angle must be a finite number or 3 finite numbers"),
    (lambda x: A.rot90(x, 1.5), ValueError, r"k must be an int, got 1.5"),
    (lambda x: A.rotate(x[0], 10.0), ValueError, r"image batch of shape \(N, C, H, W\)"),
    (lambda x: A.RandomRotate90()(x[..., :5]), ValueError, r"odd quarter turns need square images, got \(8, 5\)"),
    (lambda x: A.Compose([A.HorizontalFlip(), "flip"]), TypeError, r"transforms\[1\] must be callable"),
    (lambda x: A.resize(x, 0), ValueError, r"size must be an int >= 1 or a tuple of such ints, got 0"),
])
def test_bad_augmentation_arguments_are_refused(call, error, match):
    with pytest.raises(error, match=match):
        call(np.zeros((3, 1, 8, 8)))


# ----------------------------------------------------------------------------- explorer and exercises
def test_augmentation_grid_rows_and_seeding(backend_name):
    from nnopt_lab.widgets.augmentation import TRANSFORMS, augmentation_grid

    x = B.to_backend(_images(3, 1, 8, 8), backend_name, "float64")
    grid = augmentation_grid(x, ["horizontal flip", "rotate ±15°"], p=1.0, seed=4, copies=2)
    assert tuple(grid.shape) == (3, 3, 1, 8, 8)
    np.testing.assert_array_equal(B.to_numpy(grid[0]), B.to_numpy(x))
    g = np.random.default_rng(4)
    g.random(3)                                              # p of the flip (p = 1: every image)
    g.random(3)                                              # p of the rotation
    angles = g.uniform(-15, 15, size=3)
    flipped = np.flip(B.to_numpy(x)[:, 0], -1)
    want = np.stack([ndi.rotate(flipped[n], angles[n], reshape=False, order=1, mode="grid-constant")
                     for n in range(3)])[:, None]
    compare(grid[1], want, "first augmented row", rtol=RTOL64, atol=ATOL64, quiet=True)
    again = augmentation_grid(x, ["horizontal flip", "rotate ±15°"], p=1.0, seed=4, copies=2)
    np.testing.assert_array_equal(B.to_numpy(again), B.to_numpy(grid))
    assert set(TRANSFORMS) >= {"horizontal flip", "vertical flip"}
    with pytest.raises(ValueError, match=r"unknown transform\(s\) \['shear'\]"):
        augmentation_grid(x, ["shear"])


def test_the_explorer_draws_the_grid_as_one_mosaic():
    import matplotlib
    matplotlib.use("Agg")
    from nnopt_lab.widgets.augmentation import AugmentationView, augmentation_grid, explorer, mosaic

    x = _images(4, 1, 8, 8)
    grid = B.to_numpy(augmentation_grid(x, ["vertical flip"], p=1.0, seed=1, copies=2))
    m = mosaic(grid)
    assert m.shape == (3 * 9 - 1, 4 * 9 - 1)
    np.testing.assert_array_equal(m[9:17, 18:26], grid[1, 2, 0])                  # row 1, picture 2
    assert np.isnan(m[8]).all() and np.isnan(m[:, 8]).all()                       # the gaps
    view = AugmentationView(x, labels=[0, 1, 2, 3], copies=2)
    shown = view.update(["vertical flip"], 1.0, 1)
    np.testing.assert_array_equal(shown, grid)
    np.testing.assert_array_equal(view.image.get_array().filled(np.nan), m)
    assert len(view.fig.axes) == 1 and "vertical flip" in view.title.get_text()
    with pytest.raises(ValueError, match="labels must have one entry per image"):
        AugmentationView(x, labels=[0])
    box = explorer(x, labels=[0, 1, 2, 3])
    first = box.image.value
    box.controls["seed"].value = 7
    assert box.image.value != first


def test_exercise_checkers_accept_right_answers_and_name_the_mistake(capsys):
    from nnopt_lab.exercises import augmentation as ex

    ex.check_hflip(lambda x: x[..., ::-1])                   # a right answer: no exception, the ✓ verdict
    assert capsys.readouterr().out.startswith("✓ hflip mirrors left ↔ right")
    with pytest.raises(AssertionError, match="vertical flip"):
        ex.check_hflip(lambda x: x[..., ::-1, :])
    ex.check_rot90_clockwise(lambda x: np.rot90(x, -1, axes=(2, 3)))
    assert capsys.readouterr().out.startswith("✓ clockwise quarter turn")
    with pytest.raises(AssertionError, match="COUNTER-clockwise"):
        ex.check_rot90_clockwise(lambda x: np.rot90(x, 1, axes=(2, 3)))
    with pytest.raises(AssertionError, match="swaps height and width"):
        ex.check_rot90_clockwise(lambda x: np.rot90(x, -1))
    ex.check_center_crop(lambda x, s: x[..., (x.shape[2] - s) // 2:(x.shape[2] - s) // 2 + s,
                                        (x.shape[3] - s) // 2:(x.shape[3] - s) // 2 + s])
    assert capsys.readouterr().out.startswith("✓ center_crop cuts the centred window")
    with pytest.raises(AssertionError, match="top-left corner"):
        ex.check_center_crop(lambda x, s: x[..., :s, :s])


@pytest.mark.parametrize("call, error, match", [
    # each leaked another exception, named no argument, or returned NaN before
    (lambda x: A.rotate(x[None], 30.0), ValueError, r"x must be an image batch of shape \(N, C, H, W\)"),
    (lambda x: A.resize(x[:0], 4), ValueError, r"x must not be empty"),
    (lambda x: A.resize(np.where(x > 0.9, np.inf, x), 4), ValueError, r"x must be finite"),
    (lambda x: A.rotate(np.where(x > 0.9, np.nan, x), 10.0), ValueError, r"x must be finite"),
    (lambda x: A.hflip(3.0), TypeError, r"x must be a numpy array or torch tensor, got float"),
    (lambda x: A.resized_crop(x, 3.0, 4), TypeError, r"boxes must be a list"),
    (lambda x: A.resized_crop(x, [(0, 0, 2.5, 2)] * 2, 4), ValueError, r"boxes must hold \(top, left, height, width\)"),
    (lambda x: A.resize(x, 2 ** 40), ValueError, r"size must be at most 4096 pixels"),
    (lambda x: A.pad(x, 2 ** 62), ValueError, r"padding must be an int in \[0, 4096\]"),
    (lambda x: A.RandomRotate90(ks=3), TypeError, r"ks must be a non-empty sequence"),
    (lambda x: A.RandomResizedCrop(4, scale=0.5), TypeError, r"scale must be a pair"),
    (lambda x: A.Compose(A.HorizontalFlip()), TypeError, r"transforms must be a list"),
    (lambda x: A.for_flat_batches(A.HorizontalFlip(), 64), TypeError, r"image_shape must be a tuple"),
    (lambda x: A.HorizontalFlip()(x, generator=3), TypeError, r"generator must be a numpy random Generator"),
])
def test_more_bad_augmentation_arguments_are_named(call, error, match):
    with pytest.raises(error, match=match):
        call(np.random.default_rng(0).random((2, 1, 8, 8)))


def test_numpy_scalars_are_accepted_like_python_numbers():
    x = np.random.default_rng(0).random((2, 1, 8, 8))
    compare(A.rot90(x, np.int64(1)), A.rot90(x, 1), "np.int64 k", rtol=0, atol=0, quiet=True)
    compare(A.crop(x, np.int64(1), np.int32(2), np.int64(3), 4), A.crop(x, 1, 2, 3, 4), "np ints", rtol=0, atol=0,
            quiet=True)
    compare(A.rotate(x, np.float32(30.0)), A.rotate(x, float(np.float32(30.0))), "np.float32 angle", rtol=0, atol=0,
            quiet=True)
    compare(A.resize(x, (np.int64(4), 5)), A.resize(x, (4, 5)), "np.int64 size", rtol=0, atol=0, quiet=True)
    assert A.HorizontalFlip(p=np.float32(0.25)).p == pytest.approx(0.25)
