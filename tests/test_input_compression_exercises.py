"""The checker of chapter 2.3's PCA-reconstruction exercise: a right answer passes (whatever the
signs of the SVD), each named mistake is recognised, a learner who has not started is told so."""
import numpy as np
import pytest
from sklearn.decomposition import PCA as SklearnPCA

from nnopt_lab.exercises import input_compression as ex
from nnopt_lab.exercises.checks import NOT_STARTED, ExerciseFailed


def pca_reconstruct(train, x, k):
    mu = train.mean(axis=0)
    vk = np.linalg.svd(train - mu, full_matrices=False)[2][:k].T
    return (x - mu) @ vk @ vk.T + mu


def test_the_reference_is_sklearn():
    train, test = ex._pca_code_inputs()
    for k in (1, 2, 4):
        ref = SklearnPCA(k, svd_solver="full").fit(train)
        np.testing.assert_allclose(pca_reconstruct(train, test, k), ref.inverse_transform(ref.transform(test)),
                                   rtol=1e-10, atol=1e-10)


def test_right_answer_passes_also_with_flipped_signs(capsys):
    assert ex.check_pca_reconstruct(pca_reconstruct) is None

    def flipped(train, x, k):
        mu = train.mean(axis=0)
        vk = -np.linalg.svd(train - mu, full_matrices=False)[2][:k].T
        return (x - mu) @ vk @ vk.T + mu
    ex.check_pca_reconstruct(flipped)
    assert capsys.readouterr().out.count("✓ pca_reconstruct") == 2


def _svd(a):
    return np.linalg.svd(a, full_matrices=False)[2]


@pytest.mark.parametrize("wrong, words", [
    (lambda tr, x, k: (x @ _svd(tr)[:k].T) @ _svd(tr)[:k], "not centred"),
    (lambda tr, x, k: (x - tr.mean(0)) @ _svd(tr - tr.mean(0))[:k].T @ _svd(tr - tr.mean(0))[:k], "not added back"),
    (lambda tr, x, k: (x - x.mean(0)) @ _svd(tr - tr.mean(0))[:k].T @ _svd(tr - tr.mean(0))[:k] + x.mean(0), "TRAINING"),
    (lambda tr, x, k: (x - tr.mean(0)) @ _svd(tr - tr.mean(0))[-k:].T @ _svd(tr - tr.mean(0))[-k:] + tr.mean(0), "SMALLEST"),
    (lambda tr, x, k: (x - tr.mean(0)) @ _svd(tr - tr.mean(0))[:, :k] @ _svd(tr - tr.mean(0))[:, :k].T + tr.mean(0), "ROWS"),
    (lambda tr, x, k: x + 0.1, "differs from the reference"),
    (lambda tr, x, k: x[:, :k], "shape"),
])
def test_each_named_mistake_is_recognised(wrong, words):
    with pytest.raises(ExerciseFailed) as err:
        ex.check_pca_reconstruct(wrong)
    assert words in str(err.value) and "[[" not in str(err.value)


def test_not_started_and_errors_are_told_apart():
    def todo(train, x, k):
        raise NotImplementedError()
    with pytest.raises(ExerciseFailed) as err:
        ex.check_pca_reconstruct(todo)
    assert NOT_STARTED in str(err.value)
    with pytest.raises(ExerciseFailed, match="raised ZeroDivisionError"):
        ex.check_pca_reconstruct(lambda train, x, k: 1 / 0)
