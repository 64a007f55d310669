"""Fuzz examples of nnopt_lab.inference.calibration (observers: constructors and __call__)."""


def examples(h):
    return {
        "inference.calibration.Observer": lambda: dict(bits=8),
        "inference.calibration.MinMaxObserver": lambda: dict(bits=8, symmetric=False),
        "inference.calibration.MovingAverageMinMaxObserver": lambda: dict(averaging_constant=0.1, bits=8),
        "inference.calibration.PerChannelMinMaxObserver": lambda: dict(axis=0, bits=8, symmetric=True),
        "inference.calibration.PercentileObserver": lambda: dict(percentile=99.0, bins=64, bits=8),
        "inference.calibration.MSEObserver": lambda: dict(bins=64, bits=4, symmetric=True),
        "inference.calibration.EntropyObserver": lambda: dict(bins=64, quantized_bins=8, bits=8),
        "inference.calibration.make_observer": lambda: dict(method="percentile", bits=8, symmetric=False),
    }


def methods(h):
    from nnopt_lab.inference import calibration as C

    def seen(cls, **kw):
        def make():
            obs = cls(**kw)
            obs(h.rand(4, 3) - 0.5)
            return obs
        return make

    table = {}
    for name, cls, kw in (("MinMaxObserver", C.MinMaxObserver, {}),
                          ("MovingAverageMinMaxObserver", C.MovingAverageMinMaxObserver, {}),
                          ("PerChannelMinMaxObserver", C.PerChannelMinMaxObserver, dict(axis=1)),
                          ("PercentileObserver", C.PercentileObserver, dict(bins=64, symmetric=True)),
                          ("MSEObserver", C.MSEObserver, dict(bins=64)),
                          ("EntropyObserver", C.EntropyObserver, dict(bins=64, quantized_bins=8))):
        table[f"{name}.__call__"] = (seen(cls, **kw), "__call__", lambda: dict(x=h.rand(5, 3, seed=2) * 3 - 1))
    table["MSEObserver.errors"] = (seen(C.MSEObserver, bins=64), "errors",
                                   lambda: dict(lo=-h.rand(3), hi=h.rand(3, seed=1)))
    return table
