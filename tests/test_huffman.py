"""nnopt_lab.compression.huffman: exact round trips, optimal lengths, H <= L < H + 1.

References: the textbook example (CLRS §16.3: total 224 bits), an independent optimal cost
(the sum of the merged weights of any Huffman tree, computed here with heapq on the counts
alone), brute force over all prefix-code length assignments for small alphabets (Kraft), and
Shannon's bounds.
"""
import heapq
import itertools
import math
import time

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from nnopt_lab import backend as B
from nnopt_lab.compression import huffman as H


def optimal_total_bits(counts):
    """The least total bits of any prefix code: the sum of all merges of Huffman's algorithm."""
    heap = [c for c in counts.values() if c]
    if len(heap) <= 1:
        return 0
    heapq.heapify(heap)
    total = 0
    while len(heap) > 1:
        a, b = heapq.heappop(heap), heapq.heappop(heap)
        total += a + b
        heapq.heappush(heap, a + b)
    return total


def brute_force_best(counts):
    """The least sum(n_s * l_s) over all length assignments with Kraft sum <= 1 (small alphabets)."""
    values = list(counts.values())
    best = math.inf
    for lengths in itertools.product(range(1, len(values)), repeat=len(values)):
        if sum(2.0 ** -l for l in lengths) <= 1:
            best = min(best, sum(c * l for c, l in zip(values, lengths)))
    return best


def is_prefix_free(code):
    words = list(code.values())
    return not any(a != b and b.startswith(a) for a in words for b in words) and len(set(words)) == len(words)


def check_code(counts):
    code = H.huffman_code(counts)
    used = {s: c for s, c in counts.items() if c}
    assert set(code) == set(used)
    assert is_prefix_free(code)
    assert H.total_bits(code, used) == optimal_total_bits(used)
    if len(used) >= 2:
        assert sum(2.0 ** -len(w) for w in code.values()) == 1.0      # a full tree: Kraft with equality
        h, length = H.entropy(used), H.average_length(code, used)
        assert h <= length + 1e-12 and length < h + 1
    return code


# ----------------------------------------------------------------------------- the code
def test_textbook_example():
    counts = {0: 45, 1: 13, 2: 12, 3: 16, 4: 9, 5: 5}                 # CLRS's a..f (thousands)
    code = check_code(counts)
    assert {s: len(w) for s, w in code.items()} == {0: 1, 1: 3, 2: 3, 3: 3, 4: 4, 5: 4}
    assert H.total_bits(code, counts) == 224
    assert code == {0: "0", 1: "100", 2: "101", 3: "110", 4: "1110", 5: "1111"}   # canonical words


def test_ties_are_broken_deterministically():
    counts = {7: 1, 3: 1, 5: 1, 1: 1}
    assert H.huffman_code(counts) == H.huffman_code(dict(reversed(list(counts.items()))))
    assert H.huffman_code(counts) == {1: "00", 3: "01", 5: "10", 7: "11"}
    # counts (2, 1, 1, 2): lengths (2, 3, 3, 1) and (2, 2, 2, 2) both cost 12; after merging the
    # two 1s, the leaves 0 and 3 (count 2) are taken before the merged node (count 2, made later)
    code = H.huffman_code({0: 2, 1: 1, 2: 1, 3: 2})
    assert sorted(len(w) for w in code.values()) == [2, 2, 2, 2]


@pytest.mark.parametrize("counts", [{0: 1, 1: 1}, {4: 10, 9: 1}, {0: 3, 1: 2, 2: 1}, {0: 5, 1: 5, 2: 5, 3: 1, 4: 1},
                                    {0: 1, 1: 1, 2: 2, 3: 3, 4: 5, 5: 8}])
def test_lengths_are_optimal_by_brute_force(counts):
    code = check_code(counts)
    assert H.total_bits(code, counts) == brute_force_best(counts)


def test_edge_cases_empty_one_and_two_symbols():
    assert H.huffman_code({}) == {} and H.huffman_code({3: 0}) == {}
    assert H.encode([], {}) == b"" and H.decode(b"", {}, 0).shape == (0,)
    one = H.huffman_code({5: 9})
    assert one == {5: ""} and H.entropy({5: 9}) == 0.0 and H.average_length(one, {5: 9}) == 0.0
    assert H.encode([5] * 9, one) == b"" and H.decode(b"", one, 9).tolist() == [5] * 9
    two = H.huffman_code({0: 1, 1: 1000})
    assert sorted(two.values()) == ["0", "1"]
    data = H.encode([1] * 1000 + [0], two)
    assert len(data) == math.ceil(1001 / 8) and H.decode(data, two, 1001).tolist() == [1] * 1000 + [0]


def test_highly_skewed_counts_make_long_words_and_stay_within_the_bounds():
    counts = {s: 2 ** s for s in range(20)}          # a Fibonacci-like worst case: lengths 1 .. 19
    code = check_code(counts)
    assert max(len(w) for w in code.values()) == 19
    symbols = [s for s, c in counts.items() for _ in range(min(c, 50))]
    assert H.decode(H.encode(symbols, code), code, len(symbols)).tolist() == symbols


# ----------------------------------------------------------------------------- round trips
@settings(max_examples=200, deadline=None, derandomize=True, database=None)
@given(st.lists(st.integers(min_value=0, max_value=300), max_size=400))
def test_round_trip_is_exact_and_the_bounds_hold(symbols):
    counts = H.symbol_counts(symbols)
    code = check_code(counts) if counts else {}
    data = H.encode(symbols, code)
    assert len(data) == math.ceil(H.total_bits(code, counts) / 8) if counts else data == b""
    assert H.decode(data, code, len(symbols)).tolist() == symbols


@settings(max_examples=100, deadline=None, derandomize=True, database=None)
@given(st.dictionaries(st.integers(-5, 50), st.integers(0, 10 ** 6), max_size=40))
def test_any_counts_give_an_optimal_prefix_code(counts):
    check_code(counts)


def test_arrays_of_every_backend_and_dtype_round_trip(backend_name):
    b = B.get_backend(backend_name)
    g = np.random.default_rng(0)
    for dtype in ("uint8", "int16", "int32", "int64"):
        x = B.to_backend((g.geometric(0.25, size=(30, 40)) % 16).astype(dtype), b)
        counts = H.symbol_counts(x)
        assert counts == dict(sorted(zip(*np.unique(B.to_numpy(x), return_counts=True))))
        code = H.huffman_code(counts)
        y = H.decode(H.encode(x, code), code, 1200, backend=b)
        assert B.same_kind(y, x) and B.dtype_name(y) == "int64"
        assert np.array_equal(B.to_numpy(y), B.to_numpy(x).reshape(-1))


def test_1e5_indices_encode_and_decode_well_under_a_second():
    x = np.random.default_rng(1).geometric(0.2, 100_000) % 32
    start = time.perf_counter()
    counts = H.symbol_counts(x)
    code = H.huffman_code(counts)
    data = H.encode(x, code)
    y = H.decode(data, code, x.shape[0], backend="numpy")
    seconds = time.perf_counter() - start
    assert np.array_equal(y, x)
    assert len(data) * 8 - H.total_bits(code, counts) in range(8)
    assert H.average_length(code, counts) < 5       # fewer bits than the 5 of a fixed-width index
    assert seconds < 0.5, f"{seconds:.2f} s"


# ----------------------------------------------------------------------------- bad input
BAD = {
    "float symbols": (lambda: H.symbol_counts(np.ones(3)), TypeError, "symbols"),
    "str symbols": (lambda: H.symbol_counts("abc"), TypeError, "symbols"),
    "list of floats": (lambda: H.symbol_counts([1, 2.5]), TypeError, "symbols"),
    "counts kind": (lambda: H.huffman_code([1, 2]), TypeError, "counts"),
    "negative count": (lambda: H.huffman_code({0: -1}), ValueError, "counts"),
    "float count": (lambda: H.huffman_code({0: 1.5}), ValueError, "counts"),
    "symbol kind": (lambda: H.huffman_code({"a": 1}), TypeError, "counts"),
    "unknown symbol": (lambda: H.encode([0, 7], {0: "0", 1: "1"}), ValueError, "symbols"),
    "not prefix-free": (lambda: H.encode([0], {0: "0", 1: "01"}), ValueError, "prefix"),
    "bad word": (lambda: H.encode([0], {0: "2"}), ValueError, "code"),
    "code kind": (lambda: H.decode(b"", [], 0), TypeError, "code"),
    "data kind": (lambda: H.decode("0101", {0: "0"}, 1), TypeError, "data"),
    "n_symbols": (lambda: H.decode(b"", {0: "0"}, -1), ValueError, "n_symbols"),
    "too short": (lambda: H.decode(b"\x00", {0: "0", 1: "1"}, 9), ValueError, "ends"),
    "left over": (lambda: H.decode(b"\x00\x00", {0: "0", 1: "1"}, 3), ValueError, "padding"),
    "not a word": (lambda: H.decode(b"\xff", {0: "0", 1: "10"}, 1), ValueError, "no word"),
    "entropy of nothing": (lambda: H.entropy({}), ValueError, "counts"),
    "missing word": (lambda: H.total_bits({0: "0"}, {0: 1, 1: 1}), ValueError, "code"),
}


@pytest.mark.parametrize("case", BAD, ids=list(BAD))
def test_bad_input_raises_naming_the_argument(case):
    call, error, word = BAD[case]
    with pytest.raises(error, match=word):
        call()


def test_numpy_and_torch_scalars_are_accepted():
    assert H.huffman_code({np.int64(0): np.int64(3), 1: torch.tensor(1)}) == {0: "0", 1: "1"}
    assert H.decode(b"\x40", {0: "0", 1: "1"}, np.int32(2)).tolist() == [0, 1]
