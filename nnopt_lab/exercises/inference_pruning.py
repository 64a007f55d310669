"""Self-checks for the exercises of chapters/05_1_inference_pruning.ipynb.

* :func:`check_csr_from_dense` -- the learner's CSR construction ``(values, col_indices,
  crow_indices)`` against :func:`nnopt_lab.inference.sparse.csr_from_dense` (which equals
  ``scipy.sparse.csr_matrix``'s ``data``, ``indices``, ``indptr``: tests/test_sparse.py and
  the chapter's check cell show it), on fixed matrices with empty rows, an all-zero matrix
  and one row.

When the answer differs, the checker names the usual mistake: the zeros stored, the entries
in column order (CSC), row pointers without the leading 0, per-row counts instead of their
running sum, row indices in place of column indices. A learner who has not started is told so.

See: chapters/05_1_inference_pruning.ipynb
"""
from __future__ import annotations

from typing import Any, Callable

from .. import backend as B
from ..inference.sparse import csr_from_dense
from . import checks
from .checks import ExerciseFailed

__all__ = ["csr_cases", "check_csr_from_dense"]


def csr_cases() -> list:
    """The fixed float64 numpy matrices of :func:`check_csr_from_dense` (with empty rows, all-zero, one row)."""
    g = B.generator(51)
    random = g.standard_normal((6, 7)) * (g.random((6, 7)) > 0.7)
    random[2] = 0.0
    small = B.to_numpy([[0.0, 2.0, 0.0, 0.0, 1.5], [0.0, 0.0, 0.0, 0.0, 0.0], [3.0, 0.0, 0.0, -1.0, 0.0],
                        [0.0, 0.0, 0.0, 0.0, 4.0]]).astype("float64")
    return [small, random, B.to_numpy([[0.0, 0.0, 7.0]]).astype("float64"), 0.0 * small]


def _reference(w) -> tuple:
    a = csr_from_dense(w)
    return tuple(B.to_numpy(x).astype("float64") for x in (a.values, a.col_indices, a.crow_indices))


def _mistakes(w) -> dict:
    """(values, col_indices, crow_indices) computed known-wrong ways (numpy float64), by the message naming them."""
    values, cols, crow = _reference(w)
    m, k = w.shape
    counts = crow[1:] - crow[:-1]
    csc = csr_from_dense(w.T.copy())                      # the transpose's CSR is the CSC order of w
    rows_of_csc = B.to_numpy(csc.col_indices).astype("float64")
    every = (w.reshape(-1), (B.to_numpy(range(k)).astype("float64")[None, :] + 0 * w).reshape(-1),
             B.to_numpy(range(0, m * k + 1, k)).astype("float64"))
    coo_rows = B.to_numpy(csr_from_dense(w).row_indices()).astype("float64")
    return {
        "you stored the zeros too: CSR keeps only the nonzero entries (values, col_indices have nnz entries)": every,
        "your entries are in column order (that is CSC): CSR goes row by row, columns ascending inside a row":
            (B.to_numpy(csc.values).astype("float64"), rows_of_csc, crow),
        "crow_indices lacks its leading 0: it has M + 1 entries, crow[0] = 0 and crow[i + 1] - crow[i] is row "
        "i's count": (values, cols, crow[1:]),
        "crow_indices holds each row's count; CSR stores their running sum (crow[i + 1] = crow[i] + count_i), "
        "with a leading 0": (values, cols, B.to_numpy([0.0] + list(counts))),
        "you stored each entry's ROW index; col_indices holds each stored entry's column": (values, coo_rows, crow),
    }


def _same(got: tuple, want: tuple) -> bool:
    return all(g.shape == w.shape and bool((abs(g - w) <= 1e-12 * (1 + abs(w))).all()) for g, w in zip(got, want))


def _triple(answer: Any) -> tuple:
    if not isinstance(answer, (tuple, list)) or len(answer) != 3:
        raise ExerciseFailed(f"✗ csr_from_dense must return three arrays (values, col_indices, crow_indices), "
                             f"got {type(answer).__name__}")
    return tuple(checks.as_float64(a, f"csr_from_dense ({part})").reshape(-1)
                 for a, part in zip(answer, ("values", "col_indices", "crow_indices")))


def check_csr_from_dense(fn: Callable[[Any], tuple]) -> None:
    r"""Check ``fn(weight) -> (values, col_indices, crow_indices)``: the CSR form of a 2-D array.

    ``values`` and ``col_indices`` list the nonzero entries row by row (columns ascending);
    ``crow_indices`` has M + 1 entries, :math:`\text{crow}[0] = 0`,
    :math:`\text{crow}[i+1] = \text{crow}[i] + \#\{j: W_{ij} \ne 0\}`. Prints one ✓ line, or
    raises AssertionError naming the mistake.

    See: chapters/05_1_inference_pruning.ipynb
    """
    checks.require_function("fn", fn)
    for k, w in enumerate(csr_cases()):
        got = _triple(checks.call("csr_from_dense", fn, w.copy()))
        want = _reference(w)
        if _same(got, want):
            continue
        for message, wrong in _mistakes(w).items():
            wrong = tuple(B.to_numpy(x).astype("float64").reshape(-1) for x in wrong)
            if _same(got, wrong):
                raise ExerciseFailed(f"✗ csr_from_dense: {message}")
        for part, g, v in zip(("values", "col_indices", "crow_indices"), got, want):
            if not _same((g,), (v,)):
                detail = (f"{g.shape[0]} entries, expected {v.shape[0]}" if g.shape != v.shape else
                          f"first difference at index {int((abs(g - v) > 1e-12 * (1 + abs(v))).nonzero()[0][0])}")
                raise ExerciseFailed(f"✗ csr_from_dense: wrong {part} for test matrix {k} of shape {w.shape}: {detail}")
    print(f"✓ csr_from_dense matches nnopt_lab.inference.sparse.csr_from_dense (= scipy.sparse.csr_matrix) "
          f"on {len(csr_cases())} matrices, empty rows and an all-zero one included")
