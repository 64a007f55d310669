"""Showing the library's own code in a chapter, without cutting source text by hand.

A chapter that says "here is how ``mean_filter`` works" prints the function with
:func:`show_source`; the docstring can be left out, so the reader sees the code itself.
Nothing here searches the text for a marker string: the docstring is found with ``ast``.

See: chapters/01_why_optimize.ipynb
"""
from __future__ import annotations

import ast
import inspect
import textwrap
from typing import Any

from .validation import check_bool

__all__ = ["source_of", "show_source"]


def source_of(obj: Any, docstring: bool = True) -> str:
    """The source text of a function, method or class, optionally without its docstring.

    Parameters
    ----------
    obj : function, method or class
    docstring : bool
        ``False`` replaces the docstring with ``...`` (a one-line marker that it was cut).

    Returns
    -------
    str
        The dedented source, ending with a newline.

    Raises
    ------
    TypeError
        When ``obj`` has no Python source (a builtin, a number, ...), or ``docstring`` is not a
        bool (numpy bools are accepted).

    See: chapters/01_why_optimize.ipynb
    """
    docstring = check_bool("docstring", docstring)
    try:
        text = textwrap.dedent(inspect.getsource(obj))
    except (TypeError, OSError) as error:
        raise TypeError(f"obj must be a function, method or class with Python source, "
                        f"got {type(obj).__name__}") from error
    if docstring:
        return text
    node = ast.parse(text).body[0]
    body = getattr(node, "body", [])
    first = body[0] if body else None
    if not (isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant)
            and isinstance(first.value.value, str)):
        return text
    lines = text.splitlines(keepends=True)
    indent = lines[first.lineno - 1][: first.col_offset]
    kept = lines[: first.lineno - 1] + [f"{indent}...  # docstring left out\n"] + lines[first.end_lineno:]
    return "".join(kept)


def show_source(obj: Any, docstring: bool = False) -> None:
    """Print the source of ``obj`` (by default without its docstring): :func:`source_of`, printed.

    Parameters
    ----------
    obj : function, method or class
    docstring : bool, default False

    See: chapters/01_why_optimize.ipynb
    """
    print(source_of(obj, docstring=docstring), end="")
