"""Explorer of chapter 1: how width and depth of an MLP drive its size, compute and latency.

:func:`mlp_costs` is the pure compute function (tested); :func:`explorer` is the thin
ipywidgets layer over it.

See: chapters/01_why_optimize.ipynb (seed §1.1: model complexity and resource limits)
"""
from __future__ import annotations

from .. import measure, models
from ..validation import check_int

__all__ = ["mlp_costs", "cost_grid", "explorer"]


def mlp_costs(width: int, depth: int, input_size: int = 64, classes: int = 10, batch_size: int = 1,
              timed: bool = True, repeats: int = 15, backend=None) -> dict:
    """Parameters, bytes (float32 and int8), forward FLOPs and latency of an MLP.

    Parameters
    ----------
    width : int >= 1
        Units of every hidden layer.
    depth : int >= 0
        Number of hidden layers (0 = logistic regression).
    timed : bool
        Also measure the median forward latency (ms) of one batch on ``backend``.

    Returns
    -------
    dict with ``sizes``, ``params``, ``bytes_fp32``, ``bytes_int8``, ``flops``, ``latency_ms``
    (None when not timed). Parameters follow :math:`P = \\sum_\\ell (d_{\\ell-1} + 1)\\, d_\\ell`
    and FLOPs :math:`2 N \\sum_\\ell d_{\\ell-1} d_\\ell`.
    """
    check_int("depth", depth, 0)
    check_int("width", width, 1)
    sizes = (input_size,) + (width,) * depth + (classes,)
    model = models.mlp(sizes, backend=backend)
    table = measure.summary(model, (input_size,), batch_size=batch_size)
    lat = (measure.measure_model_latency(model, (input_size,), batch_size=batch_size, repeats=repeats).median * 1e3
           if timed else None)
    return {"sizes": sizes, "params": table.total_params, "bytes_fp32": measure.model_bytes(model, "float32"),
            "bytes_int8": measure.model_bytes(model, "int8"), "flops": table.total_flops, "latency_ms": lat}


def cost_grid(widths, depths, **kw) -> dict:
    """:func:`mlp_costs` for every (depth, width): ``{depth: [costs for each width]}``."""
    return {d: [mlp_costs(w, d, **kw) for w in widths] for d in depths}


def explorer(input_size: int = 64, classes: int = 10):
    """Sliders for width, depth and batch size; prints the costs of the resulting MLP."""
    import ipywidgets as widgets

    def show(width, depth, batch_size):
        c = mlp_costs(width, depth, input_size, classes, batch_size)
        print(f"MLP {'-'.join(map(str, c['sizes']))}, batch {batch_size}\n"
              f"  parameters : {c['params']:,}\n"
              f"  size       : {c['bytes_fp32'] / 1024:,.1f} KiB as float32, {c['bytes_int8'] / 1024:,.1f} KiB as int8\n"
              f"  FLOPs      : {c['flops']:,} per forward pass\n"
              f"  latency    : {c['latency_ms']:.3f} ms (median, this machine, this backend)")

    return widgets.interactive(
        show,
        width=widgets.IntSlider(value=100, min=8, max=1024, step=8, description="width"),
        depth=widgets.IntSlider(value=1, min=0, max=6, description="depth"),
        batch_size=widgets.Dropdown(options=[1, 16, 64, 256], value=1, description="batch"))
