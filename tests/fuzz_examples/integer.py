"""Fuzz examples of nnopt_lab.inference.integer (integer-only int8 inference)."""
import numpy as np


def _codes(*shape, seed=0):
    return np.random.default_rng(seed).integers(0, 256, shape).astype(np.uint8)


def _weight(*shape, seed=1):
    return np.random.default_rng(seed).integers(-127, 128, shape).astype(np.int8)


def _linear_args():
    return dict(weight_codes=_weight(3, 4), weight_scale=0.01, bias_codes=np.arange(3, dtype=np.int32),
                input_scale=0.02, input_zero_point=10, output_scale=0.05, output_zero_point=7)


def _conv_args():
    return dict(weight_codes=_weight(2, 1, 3, 3), weight_scale=np.array([0.01, 0.02], dtype=np.float32),
                bias_codes=None, input_scale=0.02, input_zero_point=10, output_scale=0.05, output_zero_point=7,
                padding=1)


def _linear():
    from nnopt_lab.inference import integer as I
    return I.IntegerLinear(**_linear_args())


def _conv():
    from nnopt_lab.inference import integer as I
    return I.IntegerConv2d(**_conv_args())


def _model():
    from nnopt_lab.inference import integer as I
    return I.IntegerModel([_linear()], 0.02, 10)


def _quantizer():
    from nnopt_lab.compression import quantization as Q
    return Q.Quantizer(0.02, 10, 0, 255)


def examples(h):
    p = "inference.integer."
    return {
        p + "requantize_multiplier": lambda: dict(real_multiplier=0.003),
        p + "saturating_rounding_doubling_high_mul": lambda: dict(a=np.array([5, -7, 2 ** 30], dtype=np.int32),
                                                                  b=np.array([2 ** 30, 3, 2 ** 30 + 5], dtype=np.int32)),
        p + "rounding_divide_by_pot": lambda: dict(x=np.array([5, -5, 100], dtype=np.int32), exponent=2),
        p + "requantize": lambda: dict(acc=np.array([[100, -2000, 70000]], dtype=np.int32), multiplier=2 ** 30 + 7,
                                       shift=5, zero_point=3, qmin=0, qmax=255),
        p + "requantize_float": lambda: dict(acc=np.array([[100, -2000, 70000]], dtype=np.int32), multiplier=0.003,
                                             zero_point=3, qmin=0, qmax=255),
        p + "quantize_bias": lambda: dict(bias=h.rand(3), weight_scale=0.01, input_scale=0.02),
        p + "IntegerLinear": _linear_args,
        p + "IntegerConv2d": _conv_args,
        p + "IntegerMaxPool2d": lambda: dict(kernel_size=2),
        p + "IntegerReLU": lambda: dict(zero_point=5),
        p + "IntegerModel": lambda: dict(layers=[_linear()], input_scale=0.02, input_zero_point=10),
        p + "convert": lambda: dict(model=h._model(), calibration_x=h.rand(6, 3)),
        # compression.quantization's function for the STE mask (qat) lives with the integer path's examples
        "compression.quantization.codes_before_clamp": lambda: dict(x=h.rand(5), scale=0.01, zero_point=3),
        "compression.quantization.Quantizer": lambda: dict(scale=0.01, zero_point=3, qmin=0, qmax=255),
    }


def methods(h):
    from nnopt_lab.inference import integer as I
    return {
        "IntegerLinear.forward": (_linear, "forward", lambda: dict(q=_codes(2, 4))),
        "IntegerLinear.from_float": (lambda: I.IntegerLinear, "from_float",
                                     lambda: dict(layer=h._linear(3, 2), input_scale=0.02, input_zero_point=10,
                                                  output_scale=0.05, output_zero_point=7)),
        "IntegerLinear.dequantized_weight": (_linear, "dequantized_weight", lambda: dict(dtype="float64")),
        "IntegerConv2d.forward": (_conv, "forward", lambda: dict(q=_codes(2, 1, 5, 5))),
        "IntegerConv2d.from_float": (lambda: I.IntegerConv2d, "from_float",
                                     lambda: dict(layer=h._conv(), input_scale=0.02, input_zero_point=10,
                                                  output_scale=0.05, output_zero_point=7)),
        "IntegerMaxPool2d.forward": (lambda: I.IntegerMaxPool2d(2), "forward", lambda: dict(q=_codes(2, 1, 4, 4))),
        "IntegerReLU.forward": (lambda: I.IntegerReLU(5), "forward", lambda: dict(q=_codes(2, 3))),
        "IntegerFlatten.forward": (I.IntegerFlatten, "forward", lambda: dict(q=_codes(2, 1, 2, 2))),
        "IntegerModel.forward": (_model, "forward", lambda: dict(x=h.rand(2, 4))),
        "IntegerModel.forward_codes": (_model, "forward_codes", lambda: dict(q=_codes(2, 4))),
        "IntegerModel.quantize_input": (_model, "quantize_input", lambda: dict(x=h.rand(2, 4))),
        "Quantizer.quantize": (_quantizer, "quantize", lambda: dict(x=h.rand(2, 4))),
        "Quantizer.dequantize": (_quantizer, "dequantize", lambda: dict(q=_codes(2, 4), dtype="float64")),
    }
