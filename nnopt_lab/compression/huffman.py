r"""Huffman coding of integer symbols, from scratch: Deep Compression's third stage.

After pruning and weight sharing, a layer is stored as small integer indices into a
codebook. Their frequencies are far from uniform (weights cluster near zero), so a variable-
length prefix code -- short words for frequent indices -- stores them in fewer bits than
:math:`\lceil\log_2 k\rceil` each (Han et al. 2016 report 20-30 % less).

For symbol counts :math:`n_s` (probabilities :math:`p_s = n_s / N`) and code lengths
:math:`\ell_s`:

.. math::

    L = \sum_s p_s \ell_s, \qquad H = -\sum_s p_s \log_2 p_s, \qquad H \le L < H + 1,
    \qquad \text{total bits} = \sum_s n_s \ell_s = N L .

Huffman's code has the least total bits of all prefix codes (Huffman 1952).

Names:

* :func:`symbol_counts` -- how often each symbol occurs in an integer array;
* :func:`huffman_code` -- the code, ``{symbol: "0101"}``, from the counts;
* :func:`encode` / :func:`decode` -- an integer array to bytes and back (exact);
* :func:`entropy`, :func:`average_length`, :func:`total_bits` -- the figures above.

Deterministic codes. The tree is built with a heap of (count, order) pairs: leaves are
ordered by symbol value, each merged node comes after every node made before it, so among
equal counts the smaller symbol, then the older node, is taken first; the first node taken
at a merge gets the bit 0. Only the resulting code LENGTHS are kept, and the words are the
*canonical* Huffman code of those lengths (as in DEFLATE): sorted by (length, symbol), each
word is the previous one plus one, shifted left when the length grows. A decoder then needs
only the length of each symbol's word.

One symbol: its word is empty (0 bits: :math:`L = H = 0`); the count of symbols, which
:func:`decode` takes, says how many there were.

See: chapters/03_1_model_compression.ipynb
"""
from __future__ import annotations

import heapq
import math
from typing import Any

from .. import backend as B
from ..validation import as_int, check_array, check_int

__all__ = ["symbol_counts", "huffman_code", "encode", "decode", "entropy", "average_length", "total_bits"]


# ----------------------------------------------------------------------------- checks
def _symbols_list(name: str, symbols: Any) -> list[int]:
    """An integer array (any shape) or a sequence of ints, as a flat list of Python ints."""
    if hasattr(symbols, "shape") and hasattr(symbols, "dtype"):
        check_array(name, symbols)
        kind = B.dtype_name(symbols)
        if not kind.startswith(("int", "uint")):
            raise TypeError(f"{name} must hold integers (indices), got dtype {kind}")
        return B.to_numpy(symbols).reshape(-1).tolist()
    if isinstance(symbols, (list, tuple, range)):
        out = []
        for i, s in enumerate(symbols):
            value = as_int(s)
            if value is None:
                raise TypeError(f"{name} must hold integers, got {s!r} at position {i}")
            out.append(value)
        return out
    raise TypeError(f"{name} must be an integer array or a list of ints, got {type(symbols).__name__}")


def _check_counts(counts: Any) -> dict[int, int]:
    """``counts`` must be a dict {int symbol: int count >= 0}; the symbols that occur, as plain ints."""
    if not isinstance(counts, dict):
        raise TypeError(f"counts must be a dict {{symbol: count}} (see symbol_counts), got {type(counts).__name__}")
    out = {}
    for symbol, count in counts.items():
        s = as_int(symbol)
        if s is None:
            raise TypeError(f"counts' symbols must be ints, got {symbol!r}")
        c = check_int(f"counts[{symbol!r}]", count, low=0)
        if c:
            out[s] = out.get(s, 0) + c
    return out


def _check_code(code: Any) -> dict[int, str]:
    """``code`` must be a dict {int: str of 0s and 1s} that is prefix-free."""
    if not isinstance(code, dict):
        raise TypeError(f"code must be a dict {{symbol: bit string}} (see huffman_code), got {type(code).__name__}")
    for symbol, word in code.items():
        if as_int(symbol) is None:
            raise TypeError(f"code's symbols must be ints, got {symbol!r}")
        if not isinstance(word, str) or word.strip("01"):
            raise ValueError(f"code[{symbol!r}] must be a string of 0s and 1s, got {word!r}")
    words = sorted(code.values())
    for a, b in zip(words, words[1:]):          # a prefix sorts right before a word it starts
        if b.startswith(a):
            raise ValueError(f"code must be prefix-free: {a!r} is a prefix of {b!r}")
    if len(code) > 1 and "" in words:
        raise ValueError("code must be prefix-free: the empty word is only allowed for one symbol")
    return {as_int(s): w for s, w in code.items()}


# ----------------------------------------------------------------------------- the code
def symbol_counts(symbols: Any) -> dict[int, int]:
    """How often each value occurs: ``{symbol: count}`` in increasing symbol order.

    Parameters
    ----------
    symbols : integer array (numpy or torch, any shape) or list of ints

    See: chapters/03_1_model_compression.ipynb
    """
    values = _symbols_list("symbols", symbols)
    counts: dict[int, int] = {}
    for s in values:
        counts[s] = counts.get(s, 0) + 1
    return dict(sorted(counts.items()))


def _code_lengths(counts: dict[int, int]) -> dict[int, int]:
    """Huffman code length of each symbol (heap of (count, order, node); ties as the module says)."""
    symbols = sorted(counts)
    if len(symbols) <= 1:
        return {s: 0 for s in symbols}
    heap = [(counts[s], order, order) for order, s in enumerate(symbols)]   # (count, order, node id)
    heapq.heapify(heap)
    parent: dict[int, int] = {}
    next_id = len(symbols)
    while len(heap) > 1:
        count_a, _, a = heapq.heappop(heap)       # bit 0
        count_b, _, b = heapq.heappop(heap)       # bit 1
        parent[a] = parent[b] = next_id
        heapq.heappush(heap, (count_a + count_b, next_id, next_id))
        next_id += 1
    root = heap[0][2]
    depth = {root: 0}
    for node in range(next_id - 1, -1, -1):      # parents are made after their children
        if node != root:
            depth[node] = depth[parent[node]] + 1
    return {s: depth[i] for i, s in enumerate(symbols)}


def _canonical(lengths: dict[int, int]) -> dict[int, str]:
    """The canonical prefix code of the given lengths: sorted by (length, symbol), each word the
    previous plus one, shifted left when the length grows."""
    code, word, previous = {}, 0, 0
    for s in sorted(lengths, key=lambda t: (lengths[t], t)):
        word <<= lengths[s] - previous
        previous = lengths[s]
        code[s] = format(word, f"0{previous}b") if previous else ""
        word += 1
    return dict(sorted(code.items()))


def huffman_code(counts: dict) -> dict[int, str]:
    r"""The Huffman code of the symbols that occur: ``{symbol: bit string}``.

    Parameters
    ----------
    counts : dict {int: int >= 0}
        How often each symbol occurs (:func:`symbol_counts`); symbols with count 0 get no word.

    Returns
    -------
    dict {int: str}
        A prefix-free code with the least :math:`\sum_s n_s \ell_s` (canonical words, ties broken
        as the module docstring says). ``{}`` for no symbols; ``{s: ""}`` for one.

    Examples
    --------
    >>> huffman_code({0: 45, 1: 13, 2: 12, 3: 16, 4: 9, 5: 5})
    {0: '0', 1: '100', 2: '101', 3: '110', 4: '1110', 5: '1111'}

    See: chapters/03_1_model_compression.ipynb
    """
    return _canonical(_code_lengths(_check_counts(counts)))


# ----------------------------------------------------------------------------- figures
def entropy(counts: dict) -> float:
    r"""Shannon entropy of the symbol frequencies, in bits: :math:`H = -\sum_s p_s \log_2 p_s`.

    0.0 for one symbol; ValueError when no symbol occurs (no distribution).

    See: chapters/03_1_model_compression.ipynb
    """
    counts = _check_counts(counts)
    total = sum(counts.values())
    if total == 0:
        raise ValueError("counts must count at least one symbol: the entropy of nothing is undefined")
    return -sum(c / total * math.log2(c / total) for c in counts.values())


def total_bits(code: dict, counts: dict) -> int:
    r"""Bits of the coded message: :math:`\sum_s n_s \ell_s` (every counted symbol needs a word).

    See: chapters/03_1_model_compression.ipynb
    """
    code, counts = _check_code(code), _check_counts(counts)
    missing = sorted(set(counts) - set(code))
    if missing:
        raise ValueError(f"code has no word for the symbols {missing[:5]} of counts")
    return sum(c * len(code[s]) for s, c in counts.items())


def average_length(code: dict, counts: dict) -> float:
    r"""Bits per symbol: :math:`L = \sum_s p_s \ell_s`; for Huffman's code :math:`H \le L < H + 1`.

    See: chapters/03_1_model_compression.ipynb
    """
    counts = _check_counts(counts)
    total = sum(counts.values())
    if total == 0:
        raise ValueError("counts must count at least one symbol: the average length over nothing is undefined")
    return total_bits(code, counts) / total


# ----------------------------------------------------------------------------- encode / decode
def encode(symbols: Any, code: dict) -> bytes:
    """The words of ``symbols`` one after the other, packed into bytes (first bit = highest bit).

    The last byte is padded with 0 bits. :func:`decode` with the number of symbols reverses it.

    Parameters
    ----------
    symbols : integer array (any shape, read flat) or list of ints
    code : dict {int: str}
        Every symbol must have a word (:func:`huffman_code`).

    See: chapters/03_1_model_compression.ipynb
    """
    values = _symbols_list("symbols", symbols)
    code = _check_code(code)
    try:
        bits = "".join([code[s] for s in values])
    except KeyError as missing:
        raise ValueError(f"symbols holds {missing.args[0]!r}, which code has no word for") from None
    if not bits:
        return b""
    n_bytes = -(-len(bits) // 8)
    return int(bits, 2).to_bytes(n_bytes, "big") if len(bits) % 8 == 0 else \
        int(bits + "0" * (8 * n_bytes - len(bits)), 2).to_bytes(n_bytes, "big")


def decode(data: bytes, code: dict, n_symbols: int, backend=None) -> Any:
    """The ``n_symbols`` symbols that :func:`encode` packed into ``data``, as an int64 array.

    Parameters
    ----------
    data : bytes
    code : dict {int: str}
        The code used to encode.
    n_symbols : int >= 0
    backend : str, Backend or None
        Where the result goes (default: the active backend).

    Returns
    -------
    int64 array, shape (n_symbols,)

    Raises
    ------
    ValueError
        When ``data`` ends before ``n_symbols`` words, holds a bit pattern that is no word, or
        has more than the last byte's zero padding left over (it does not come from this code).

    See: chapters/03_1_model_compression.ipynb
    """
    if not isinstance(data, (bytes, bytearray)):
        raise TypeError(f"data must be bytes (from encode), got {type(data).__name__}")
    code = _check_code(code)
    n_symbols = check_int("n_symbols", n_symbols, low=0)
    bits = format(int.from_bytes(data, "big"), f"0{8 * len(data)}b") if data else ""
    out, position = _read_words(bits, code, n_symbols)
    rest = bits[position:]
    if len(rest) >= 8 or rest.strip("0"):
        raise ValueError(f"data holds {len(rest)} bits after the {n_symbols} symbols that are not the zero "
                         f"padding of the last byte: it was not made by encode with this code and n_symbols")
    return B.to_backend(out, backend, dtype="int64")


def _read_words(bits: str, code: dict[int, str], n_symbols: int) -> tuple[list[int], int]:
    """Read ``n_symbols`` words from the bit string; return them and where reading stopped."""
    if n_symbols and not code:
        raise ValueError("code is empty: there are no words to decode")
    lookup = {word: s for s, word in code.items()}
    lengths = sorted({len(word) for word in code.values()})
    out, position, end = [], 0, len(bits)
    for _ in range(n_symbols):
        for length in lengths:
            symbol = lookup.get(bits[position:position + length])
            if symbol is not None and position + length <= end:
                out.append(symbol)
                position += length
                break
        else:
            what = "ends" if end - position < lengths[-1] else "holds a bit pattern that is no word"
            raise ValueError(f"data {what} at bit {position}, after {len(out)} of n_symbols = {n_symbols} symbols")
    return out, position
