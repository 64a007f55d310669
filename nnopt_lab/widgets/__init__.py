"""Interactive explorers: each is a pure compute function (tested) plus a thin ipywidgets layer.

One file per chapter topic; every explorer has a static figure beside it in the notebook.
"""
