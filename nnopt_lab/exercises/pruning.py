r"""Self-checks for chapters/03_2_pruning.ipynb: fine-grained (unstructured) magnitude pruning and
the bytes of a CSR matrix.

:func:`check_fine_grained_prune` runs the learner's ``fine_grained_prune(tensor, sparsity)`` (MIT
EfficientML Lab 1's exercise) on fixed small tensors and compares the mask with the workbook's
magnitude pruning, which the tests hold equal to ``torch.nn.utils.prune.l1_unstructured``:
exactly :math:`k = \operatorname{round}(s \cdot n)` weights of smallest :math:`|w|` are zeroed
(Python's ``round``: half to even, :math:`0.125 \cdot 20 = 2.5 \to 2`). When the mask differs it
replays the usual mistakes (floor or half-up rounding, sparsity read as density, signed values
instead of magnitudes, the inverted mask, ties at the threshold pruned too, the pruned tensor
returned instead of the mask, the tensor not pruned in place) and names the one made.

See: chapters/03_2_pruning.ipynb (seed §3.2.2)
"""
from __future__ import annotations

import math
from typing import Any, Callable

from .. import backend as B
from ..compression import pruning
from . import checks

__all__ = ["check_fine_grained_prune", "check_csr_bytes"]


# ----------------------------------------------------------------------------- fixed inputs
def _distinct_matrix() -> list[list[float]]:
    """4 × 5 weights with 20 distinct magnitudes and mixed signs (no ties anywhere)."""
    gen = B.generator(321)
    mags = (gen.permutation(20) + 1) * 0.05 + gen.uniform(0.0, 0.01, 20)
    signs = gen.choice([-1.0, 1.0], 20)
    return (mags * signs).reshape(4, 5).tolist()


def _conv_weights() -> Any:
    """(3, 2, 3, 3) convolution weights, 54 distinct magnitudes."""
    gen = B.generator(7)
    return (gen.permutation(54) + 1.0) * gen.choice([-0.01, 0.01], 54)


#: (what, values, shape, sparsities). 0.37·20 = 7.4 tells ceil from round; 0.125·20 = 2.5 and 0.625·20 = 12.5 tell half-to-even from
#: half-up rounding; 0.38·20 = 7.6 tells round from floor; 0.7·54 = 37.8 likewise on a 4-D tensor.
_CASES = [
    ("a 4×5 Linear weight", _distinct_matrix, (4, 5), (0.37, 0.125, 0.38, 0.5, 0.625, 0.95, 0.0)),
    ("a (3, 2, 3, 3) Conv2d weight", _conv_weights, (3, 2, 3, 3), (0.7,)),
]
#: Ties at the threshold: |w| sorted is 0.5, 0.5, 1, 1, 2, 3; sparsity 0.5 removes exactly 3.
_TIES = ([[1.0, -1.0, 2.0], [0.5, -0.5, 3.0]], 0.5)


def _tensor(values, shape, backend) -> Any:
    b = B.get_backend("numpy", "float64") if backend is None else B.get_backend(backend)
    return B.to_backend(B.to_numpy(B.to_backend(values, "numpy")).reshape(shape), b)


# ----------------------------------------------------------------------------- masks by rule
def _mask_removing(scores, zeros: int) -> list[float]:
    """1.0 everywhere but at the ``zeros`` smallest scores (stable order; scores are distinct here)."""
    order = scores.argsort(kind="stable")
    mask = [1.0] * len(scores)
    for i in order[:max(0, min(zeros, len(scores)))]:
        mask[int(i)] = 0.0
    return mask


def _reference(flat, sparsity: float) -> list[float]:
    """The workbook's mask (:func:`nnopt_lab.compression.pruning.prune_mask` of |w|, torch's rule):
    exactly round(s·n) smallest |w| removed, as a flat list."""
    scores = B.to_backend(abs(flat), B.get_backend("numpy", "float64"))
    return [float(v) for v in B.to_numpy(pruning.prune_mask(scores, sparsity)).ravel().tolist()]


def _mistakes(flat, sparsity: float) -> dict[str, list[float]]:
    n, ref = len(flat), _reference(flat, sparsity)
    k = sparsity * n
    return {
        f"the number of zeros is rounded down (int(s·n)); torch rounds it, round(s·n) "
        f"({sparsity}·{n} = {k:g} → {round(k)} zeros)": _mask_removing(abs(flat), int(k)),
        f"the number of zeros is rounded half UP; Python's round (which torch uses) rounds half to "
        f"even: round({k:g}) = {round(k)}": _mask_removing(abs(flat), math.floor(k + 0.5)),
        f"the number of zeros is rounded up (ceil); torch uses round(s·n) = {round(k)}":
            _mask_removing(abs(flat), math.ceil(k)),
        "sparsity is the fraction of weights REMOVED: you kept round(s·n) weights instead of "
        "removing them": _mask_removing(abs(flat), n - round(k)),
        "you ranked the weights by their signed value; importance is the magnitude |w| "
        "(a large negative weight matters as much as a large positive one)": _mask_removing(flat, round(k)),
        "the mask is inverted: 1 marks a weight that is KEPT (the largest |w|), 0 one that is pruned":
            [1.0 - v for v in ref],
    }


# ----------------------------------------------------------------------------- the checker
def _learner_mask(fn: Callable, tensor, sparsity: float) -> tuple[Any, Any]:
    """The learner's mask (float64 numpy) and the tensor after the call (numpy)."""
    got = checks.call("fine_grained_prune", fn, tensor, sparsity)
    if got is None:
        raise AssertionError("✗ fine_grained_prune returned None: return the mask (1 = kept, 0 = pruned), "
                             "after pruning the tensor in place with tensor *= mask")
    mask = checks.as_float64(got, "fine_grained_prune", tuple(tensor.shape))
    return mask, B.to_numpy(tensor).astype("float64")


def _explain(what: str, sparsity: float, flat, mask, after) -> str | None:
    """None when the mask and the in-place pruning are right, else what is wrong."""
    ref = _reference(flat, sparsity)
    got = [float(v) for v in mask.ravel()]
    if got != ref:
        pruned = [float(w) * m for w, m in zip(flat, ref)]
        if checks.close_numbers(got, pruned, 1e-12) and any(v not in (0.0, 1.0) for v in got):
            return (f"on {what} at sparsity {sparsity}: you returned the pruned tensor; return the MASK "
                    f"(1 = kept, 0 = pruned) and prune the tensor in place")
        for message, variant in _mistakes(flat, sparsity).items():
            if got == variant:
                return f"on {what} at sparsity {sparsity}: {message}"
        zeros = sum(v == 0.0 for v in got)
        return (f"on {what} at sparsity {sparsity}: expected {round(sparsity * len(flat))} zeros at the smallest "
                f"|w|, your mask has {zeros} zeros, first wrong entry at flat index "
                f"{next(i for i, (a, b) in enumerate(zip(got, ref)) if a != b)}")
    expected_after = [float(w) * m for w, m in zip(flat, ref)]
    if not checks.close_numbers([float(v) for v in after.ravel()], expected_after, 1e-15):
        return (f"on {what} at sparsity {sparsity}: the mask is right but the tensor was not pruned in place: "
                f"multiply it by the mask in place (tensor *= mask), as MIT Lab 1's fine_grained_prune does")
    return None


def _check_ties(fn: Callable, backend) -> None:
    values, sparsity = _TIES
    tensor = _tensor(values, (2, 3), backend)
    flat = B.to_numpy(tensor).astype("float64").ravel()
    mask, _ = _learner_mask(fn, tensor, sparsity)
    got = mask.ravel().tolist()
    want = round(sparsity * len(flat))
    zeros = [abs(float(w)) for w, m in zip(flat, got) if m == 0.0]
    kept = [abs(float(w)) for w, m in zip(flat, got) if m != 0.0]
    if len(zeros) > want and all(z <= sorted(abs(flat))[want - 1] for z in zeros):
        raise AssertionError(
            f"✗ fine_grained_prune: with ties at the threshold (|w| = {sorted(abs(flat))[want - 1]:g} twice) you "
            f"pruned {len(zeros)} weights, every |w| <= the k-th value (MIT Lab 1's kthvalue rule). "
            f"torch.nn.utils.prune removes exactly round(s·n) = {want}: rank the weights (argsort or topk) "
            f"instead of comparing with a threshold")
    if len(zeros) != want or (zeros and kept and max(zeros) > min(kept)):
        raise AssertionError(f"✗ fine_grained_prune: on {values} at sparsity {sparsity} expected {want} zeros at "
                             f"the smallest |w|, got the mask {got}")


def check_fine_grained_prune(fine_grained_prune: Callable, backend=None) -> None:
    r"""Check ``fine_grained_prune(tensor, sparsity) -> mask`` (MIT EfficientML Lab 1).

    The mask (same shape, 1 = kept, 0 = pruned) must zero exactly
    :math:`\operatorname{round}(s \cdot n)` weights of smallest magnitude, as
    ``torch.nn.utils.prune.l1_unstructured`` does, and the tensor must be pruned in place
    (``tensor *= mask``). Fixed inputs: a 4×5 and a (3, 2, 3, 3) tensor without ties at several
    sparsities (including 0 and the half-way cases of the rounding) and one tensor with ties at
    the threshold.

    Parameters
    ----------
    fine_grained_prune : callable
    backend : backend name, optional
        Where the test tensors live (default numpy float64).

    Prints ✓, or raises AssertionError naming the mistake (rounding, density for sparsity,
    signed values, inverted mask, ties, tensor returned instead of mask, not in place).

    See: chapters/03_2_pruning.ipynb (seed §3.2.2)
    """
    checks.require_function("fine_grained_prune", fine_grained_prune)
    count = 0
    for what, make, shape, sparsities in _CASES:
        for sparsity in sparsities:
            tensor = _tensor(make(), shape, backend)
            flat = B.to_numpy(tensor).astype("float64").ravel()
            mask, after = _learner_mask(fine_grained_prune, tensor, sparsity)
            message = _explain(what, sparsity, flat, mask, after)
            if message is not None:
                raise AssertionError(f"✗ fine_grained_prune: {message}")
            count += 1
    _check_ties(fine_grained_prune, backend)
    print(f"✓ fine_grained_prune matches torch.nn.utils.prune.l1_unstructured on {count + 1} fixed cases "
          f"(round(s·n) zeros at the smallest |w|, ties included, pruned in place)")


# ----------------------------------------------------------------------------- CSR bytes
_CSR_CASES = [((100, 64), 0.0, 32, 32), ((100, 64), 0.5, 32, 32), ((300, 100), 0.9, 32, 32),
              ((10, 300), 0.95, 32, 16), ((3, 5), 1.0, 8, 32)]


def check_csr_bytes(csr_bytes: Callable) -> None:
    r"""Check ``csr_bytes(rows, cols, nnz, value_bits, index_bits)``: the storage of a CSR matrix,

    .. math:: \text{bytes} = \big\lceil \tfrac18\,(\text{nnz}\cdot b_v + \text{nnz}\cdot b_i
              + (\text{rows} + 1)\, b_i) \big\rceil

    (the values, one column index per value, and rows + 1 row pointers). Compared with
    :func:`nnopt_lab.widgets.pruning.csr_bytes` on fixed shapes; names the usual mistakes
    (row pointers forgotten, ``rows`` pointers instead of ``rows + 1``, column indices
    forgotten, bits used as bytes).

    See: chapters/03_2_pruning.ipynb (seed §3.2.2)
    """
    from ..widgets.pruning import csr_bytes as reference

    checks.require_function("csr_bytes", csr_bytes)
    for (rows, cols), sparsity, vb, ib in _CSR_CASES:
        nnz = round((1 - sparsity) * rows * cols)
        want = reference(rows, cols, nnz, vb, ib)
        got = checks.call("csr_bytes", csr_bytes, rows, cols, nnz, vb, ib)
        if got == want:
            continue
        case = f"a {rows}×{cols} matrix with {nnz} nonzeros, {vb}-bit values, {ib}-bit indices"
        variants = {
            "the row pointers are missing: CSR stores rows + 1 of them (where each row starts, and the end)":
                math.ceil((nnz * (vb + ib)) / 8),
            "CSR stores rows + 1 row pointers, not rows (the last one marks where the final row ends)":
                math.ceil((nnz * (vb + ib) + rows * ib) / 8),
            "the column indices are missing: every stored value needs its column":
                math.ceil((nnz * vb + (rows + 1) * ib) / 8),
            "the sizes are bits: divide by 8 for bytes": nnz * (vb + ib) + (rows + 1) * ib,
        }
        for message, value in variants.items():
            if got == value:
                raise AssertionError(f"✗ csr_bytes: on {case}: {message}")
        raise AssertionError(f"✗ csr_bytes: on {case} expected {want:,} bytes, got {got!r}")
    print(f"✓ csr_bytes matches on {len(_CSR_CASES)} matrices (values + column indices + rows + 1 row pointers)")
