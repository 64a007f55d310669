"""Argument checks shared by every module: one implementation, one wording of the error.

Each check raises ``ValueError`` naming the argument, the value it got and what is allowed,
e.g. ``stride must be an int >= 1, got 0``, and returns the value when it is fine.
"""
from __future__ import annotations

from typing import Any

__all__ = ["check_int"]


def check_int(name: str, value: Any, low: int = 1) -> int:
    """``value`` must be an int (not a bool) >= ``low``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{name} must be an int >= {low}, got {value!r}")
    return value
