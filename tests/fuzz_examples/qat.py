"""Fuzz examples of nnopt_lab.inference.qat (quantization-aware training): see README.md here."""


def _prepared(h):
    from nnopt_lab.inference import qat
    return qat.prepare_qat(h._model(), bits=4, activation_bits=4)


def _calibrated(h):
    from nnopt_lab.inference import qat
    return qat.calibrate(_prepared(h), h.rand(6, 3))


def _ste_cache(h):
    from nnopt_lab.inference import qat
    return qat.fake_quantize_forward(h.rand(5), 0.1, 2, 0, 15)[1]


def _lsq_cache(h):
    from nnopt_lab.inference import qat
    return qat.lsq_forward(h.rand(5) * 3, 0.1, 2, 0, 15, grad_factor=0.5)[1]


def _fake_quantize_after_forward(h, learnable=False):
    from nnopt_lab.inference import qat
    from nnopt_lab import backend as B
    fq = qat.FakeQuantize(4, learnable=learnable, backend=B.Backend("numpy", "float64"))
    fq.forward(h.rand(4, 3))
    return fq


def _qat_layer(h, learnable=False):
    from nnopt_lab.inference import qat
    return qat.QATLayer(h._linear(3, 2), bits=4, learnable=learnable)


def _qat_layer_after_forward(h, learnable=False):
    layer = _qat_layer(h, learnable)
    layer.forward(h.rand(4, 3))
    return layer


def examples(h):
    return {
        "inference.qat.fake_quantize_forward": lambda: dict(x=h.rand(5), scale=0.1, zero_point=2, qmin=0, qmax=15),
        "inference.qat.fake_quantize_backward": lambda: dict(dout=h.rand(5, seed=1), cache=_ste_cache(h)),
        "inference.qat.lsq_grad_factor": lambda: dict(n=10, qmax=15),
        "inference.qat.lsq_forward": lambda: dict(x=h.rand(5), scale=0.1, zero_point=2, qmin=0, qmax=15),
        "inference.qat.lsq_backward": lambda: dict(dout=h.rand(5, seed=1), cache=_lsq_cache(h)),
        "inference.qat.FakeQuantize": lambda: dict(bits=8),
        "inference.qat.QATLayer": lambda: dict(layer=h._linear(3, 2), bits=4),
        "inference.qat.prepare_qat": lambda: dict(model=h._model(), bits=4, activation_bits=4),
        "inference.qat.calibrate": lambda: dict(qat_model=_prepared(h), x=h.rand(6, 3)),
        "inference.qat.strip_qat": lambda: dict(qat_model=_calibrated(h)),
    }


def methods(h):
    from nnopt_lab import backend as B
    from nnopt_lab.inference import qat
    return {
        "FakeQuantize.forward": (lambda: qat.FakeQuantize(4, backend=B.Backend("numpy", "float64")), "forward",
                                 lambda: dict(x=h.rand(4, 3))),
        "FakeQuantize(learnable).forward": (lambda: qat.FakeQuantize(4, learnable=True,
                                                                     backend=B.Backend("numpy", "float64")),
                                            "forward", lambda: dict(x=h.rand(4, 3))),
        "FakeQuantize.backward": (lambda: _fake_quantize_after_forward(h), "backward", lambda: dict(dout=h.rand(4, 3))),
        "FakeQuantize(learnable).backward": (lambda: _fake_quantize_after_forward(h, True), "backward",
                                             lambda: dict(dout=h.rand(4, 3))),
        "QATLayer.forward": (lambda: _qat_layer(h), "forward", lambda: dict(x=h.rand(4, 3))),
        "QATLayer(learnable).forward": (lambda: _qat_layer(h, True), "forward", lambda: dict(x=h.rand(4, 3))),
        "QATLayer.backward": (lambda: _qat_layer_after_forward(h), "backward", lambda: dict(dout=h.rand(4, 2))),
        "QATLayer(learnable).backward": (lambda: _qat_layer_after_forward(h, True), "backward",
                                         lambda: dict(dout=h.rand(4, 2))),
        "prepare_qat(...).forward": (lambda: _calibrated(h), "forward", lambda: dict(x=h.rand(4, 3))),
    }
