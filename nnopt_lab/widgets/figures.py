"""Pieces the chapters' explorers share (one figure made once, redrawn by blitting).

See: chapters/03_3_model_trimming.ipynb
"""
from __future__ import annotations

import io
from typing import Any

__all__ = ["canvas_png"]


def canvas_png(canvas: Any) -> bytes:
    """The figure on an Agg ``canvas`` as drawn now, as PNG bytes (fast, level-1 compression).

    What an explorer sends to the browser after a redraw; its cost is part of the redraw budget.
    """
    from PIL import Image

    width, height = canvas.get_width_height()
    out = io.BytesIO()
    Image.frombuffer("RGBA", (width, height), bytes(canvas.buffer_rgba()), "raw", "RGBA", 0, 1).save(
        out, format="png", compress_level=1)
    return out.getvalue()
