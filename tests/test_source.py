"""nnopt_lab.source: a function's, method's or class's own text, with or without its docstring."""
import inspect
import textwrap

import numpy as np
import pytest

from nnopt_lab.source import show_source, source_of


def square(x):
    """The square of x."""
    return x * x


class Counter:
    """Counts calls."""

    def __init__(self):
        self.n = 0

    def tick(self, by=1):
        """Add ``by``."""
        self.n += by
        return self.n


def no_docstring(x):
    return x + 1


@pytest.mark.parametrize("obj", [square, Counter.tick, Counter().tick, Counter])
def test_with_docstring_is_inspects_dedented_source(obj):
    assert source_of(obj) == textwrap.dedent(inspect.getsource(obj))
    assert source_of(obj, docstring=np.bool_(True)) == source_of(obj, docstring=True)   # numpy bools accepted


@pytest.mark.parametrize("obj, docstring, body", [
    (square, '"""The square of x."""', "return x * x"),
    (Counter.tick, '"""Add ``by``."""', "self.n += by"),
    (Counter, '"""Counts calls."""', "def tick(self, by=1):"),
])
def test_without_docstring_only_the_docstring_is_cut(obj, docstring, body):
    full = source_of(obj)
    cut = source_of(obj, docstring=False)
    assert docstring in full and docstring not in cut and body in cut
    assert "...  # docstring left out" in cut
    assert cut == full.replace(docstring, "...  # docstring left out")
    assert source_of(obj, docstring=np.bool_(False)) == cut
    compile(cut, "<cut>", "exec")                        # still Python


def test_no_docstring_is_left_as_it_is(capsys):
    assert source_of(no_docstring, docstring=False) == source_of(no_docstring)
    show_source(square)
    assert capsys.readouterr().out == source_of(square, docstring=False)


@pytest.mark.parametrize("obj", [len, 3, "abc"])
def test_objects_without_python_source_are_refused_naming_obj(obj):
    with pytest.raises(TypeError, match=r"obj must be a function, method or class with Python source, got "):
        source_of(obj)


@pytest.mark.parametrize("docstring", [None, 1, "yes", np.zeros(2)])
def test_docstring_must_be_a_bool(docstring):
    with pytest.raises(TypeError, match=r"docstring must be a bool, got "):
        source_of(square, docstring=docstring)
