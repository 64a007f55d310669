"""The checker of chapter 2.1's k-nearest-neighbour fill exercise: a right answer passes, each named
mistake is recognised, a learner who has not started is told so, an error is one line."""
import numpy as np
import pytest
from sklearn.impute import KNNImputer

from nnopt_lab.exercises import cleaning as ex
from nnopt_lab.exercises.checks import NOT_STARTED, ExerciseFailed
from nnopt_lab.preprocessing import cleaning as C


def knn_impute(train, test, k):
    out = test.copy()
    d = train.shape[1]
    for i in range(len(test)):
        both = ~np.isnan(train) & ~np.isnan(test[i])
        diff = np.where(both, train - test[i], 0.0)
        dist = np.sqrt((diff ** 2).sum(1) * d / both.sum(1))
        for j in np.flatnonzero(np.isnan(test[i])):
            donors = np.flatnonzero(~np.isnan(train[:, j]))
            out[i, j] = train[donors[np.argsort(dist[donors], kind="stable")[:k]], j].mean()
    return out


def test_the_fixed_tables_are_a_real_test_of_the_rule():
    train, test = ex._knn_tables()
    assert np.isnan(train).sum() >= 10 and np.isnan(test).sum() >= 4
    want = KNNImputer(n_neighbors=3).fit(train).transform(test)         # the checker's reference is sklearn's
    np.testing.assert_allclose(C.KNNImputer(3).fit(train).transform(test), want, rtol=1e-12)
    for wrong in (ex._knn_variant(train, test, 3, rescale=False), ex._knn_variant(train, test, 3, only_donors=False)):
        assert np.abs(wrong - want).max() > 1e-3                       # each mistake changes the answer


def test_right_answer_passes(capsys):
    assert ex.check_knn_impute(knn_impute) is None
    assert "✓ knn_impute matches" in capsys.readouterr().out


def _constant(value):
    return lambda train, test, k: value


@pytest.mark.parametrize("make_wrong, words", [
    (lambda tr, te: ex._knn_variant(tr, te, 3, rescale=False), "not rescaled by D/|P|"),
    (lambda tr, te: ex._knn_variant(tr, te, 3, only_donors=False), "rows that HAVE the column"),
    (lambda tr, te: C.SimpleImputer("mean").fit(tr).transform(te), "mean fill"),
    (lambda tr, te: KNNImputer(n_neighbors=3).fit(te).transform(te), "TRAINING table"),
    (lambda tr, te: np.nan_to_num(te), "row 0, column 1"),
    (lambda tr, te: te, "still holds NaN"),
    (lambda tr, te: KNNImputer(n_neighbors=3).fit(tr).transform(te) + 1.0, "OBSERVED entry"),
    (lambda tr, te: te[:, :3], "shape"),
])
def test_each_named_mistake_is_recognised(make_wrong, words):
    train, test = ex._knn_tables()
    with pytest.raises(ExerciseFailed) as err:
        ex.check_knn_impute(_constant(make_wrong(train, test)))
    assert words in str(err.value) and "[[" not in str(err.value)


def test_not_started_and_errors_are_told_apart():
    def todo(train, test, k):
        raise NotImplementedError()
    with pytest.raises(ExerciseFailed) as err:
        ex.check_knn_impute(todo)
    assert NOT_STARTED in str(err.value)
    with pytest.raises(ExerciseFailed, match="raised ZeroDivisionError"):
        ex.check_knn_impute(lambda train, test, k: 1 / 0)
