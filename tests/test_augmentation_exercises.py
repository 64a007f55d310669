"""The checker of chapter 2.2's rotation exercise: a right answer passes, each named mistake is
recognised, a learner who has not started is told so, an error is one line."""
import numpy as np
import pytest
import scipy.ndimage as ndi

from nnopt_lab.exercises import augmentation as ex
from nnopt_lab.exercises.checks import NOT_STARTED, ExerciseFailed


def rotate(image, angle, fill):
    h, w = image.shape
    ch, cw = (h - 1) / 2, (w - 1) / 2
    t = np.radians(angle)
    i, j = np.mgrid[0:h, 0:w].astype(float)
    r = np.cos(t) * (i - ch) + np.sin(t) * (j - cw) + ch
    c = -np.sin(t) * (i - ch) + np.cos(t) * (j - cw) + cw
    r0, c0 = np.floor(r).astype(int), np.floor(c).astype(int)
    out = np.zeros((h, w))
    for dr in (0, 1):
        for dc in (0, 1):
            rr, cc = r0 + dr, c0 + dc
            inside = (rr >= 0) & (rr < h) & (cc >= 0) & (cc < w)
            out += (1 - abs(r - rr)) * (1 - abs(c - cc)) * np.where(
                inside, image[np.clip(rr, 0, h - 1), np.clip(cc, 0, w - 1)], fill)
    return out


def test_the_reference_is_scipy_and_the_helper_sampler_is_right():
    image = ex._rotation_image()
    for angle in ex._ANGLES:
        want = ndi.rotate(image, angle, reshape=False, order=1, mode="grid-constant", cval=0.25)
        np.testing.assert_allclose(ex._sample(image, angle, 0.25), want, atol=1e-12)
        np.testing.assert_allclose(rotate(image, angle, 0.25), want, atol=1e-12)


def test_right_answer_passes(capsys):
    assert ex.check_rotate(rotate) is None
    assert "✓ rotate matches" in capsys.readouterr().out


@pytest.mark.parametrize("wrong, words", [
    (lambda im, a, f: rotate(im, -a, f), "COUNTER-clockwise"),
    (lambda im, a, f: ex._sample(im, a, f, centre_shift=0.5), "(H/2, W/2)"),
    (lambda im, a, f: ex._sample(im, a, f, nearest=True), "nearest pixel"),
    (lambda im, a, f: rotate(im, a, 0.0), "`fill`, not 0"),
    (lambda im, a, f: ndi.rotate(im, a, reshape=False, order=1, cval=f), "pixel ("),
    (lambda im, a, f: im.T, "shape (9, 7)"),
])
def test_each_named_mistake_is_recognised(wrong, words):
    with pytest.raises(ExerciseFailed) as err:
        ex.check_rotate(wrong)
    assert words in str(err.value) and "[[" not in str(err.value)


def test_not_started_and_errors_are_told_apart():
    def todo(image, angle, fill):
        raise NotImplementedError()
    with pytest.raises(ExerciseFailed) as err:
        ex.check_rotate(todo)
    assert NOT_STARTED in str(err.value)
    with pytest.raises(ExerciseFailed, match="raised ZeroDivisionError"):
        ex.check_rotate(lambda image, angle, fill: 1 / 0)
