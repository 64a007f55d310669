#!/usr/bin/env python3
"""Speed of nnopt_lab against torch, printed as ratios measured in one run.

    python tasks.py bench            # or: .venv/bin/python benchmarks/run.py [--quick] [--rounds N]

Rows (throughput ratio = torch's time / ours; > 1 means ours is faster):
* train step (forward, backward, SGD update) of the MLPs 784-300-100-10 and 64-100-10
  (digits-sized) and of the small CNN on 8×8 digits, for ours on numpy, ours on torch, and
  torch.nn + autograd + torch.optim.SGD on the same device;
* Conv2d alone: forward, and forward + backward;
* a depthwise-separable block (depthwise 3x3 with groups = C_in, then pointwise 1x1):
  forward + backward of our layers against their torch.nn twin;
* int8 inference (nnopt_lab.inference.integer): an IntegerLinear 784->300 (uint8 codes in,
  codes out) against torch.ao.nn.quantized.Linear on the qnnpack and x86 engines, and the
  converted digits MLP 64-128-64-10 (float in, quantize, three integer layers, dequantize)
  against the same chain of torch's quantized modules, at batch 1 and --batch; ours with
  both requantizations ("float" is qnnpack's arithmetic, bit for bit; "fixed" gemmlowp's).

Contestants run interleaved, round after round, and each ratio is taken from the median
time per contestant, so a noisy machine moves both sides together. No absolute times are
claimed: only the ratios mean something across machines.
"""
from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from nnopt_lab import backend as B  # noqa: E402
from nnopt_lab import models  # noqa: E402
from nnopt_lab.nn import Conv2d, CrossEntropyLoss, Sequential  # noqa: E402
from nnopt_lab.nn import functional as F  # noqa: E402
from nnopt_lab.reference import torch_twin  # noqa: E402
from nnopt_lab.training import SGD, train_step  # noqa: E402


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def ours_train_step(model_factory, backend: str, x: np.ndarray, y: np.ndarray):
    b = B.get_backend(backend)
    B.seed(0)
    model = model_factory(b)
    xb, yb = B.to_backend(x, b), B.to_backend(y, b)
    opt, crit = SGD(model, lr=0.01), CrossEntropyLoss()
    return lambda: train_step(model, crit, opt, xb, yb), b.device


def torch_train_step(model_factory, device: str, x: np.ndarray, y: np.ndarray):
    B.seed(0)
    twin = torch_twin(model_factory(B.get_backend("numpy")), device=device)
    xb, yb = torch.as_tensor(x, device=device), torch.as_tensor(y, device=device)
    opt, lossf = torch.optim.SGD(twin.parameters(), lr=0.01), torch.nn.CrossEntropyLoss()

    def step():
        opt.zero_grad(set_to_none=True)
        lossf(twin(xb), yb).backward()
        opt.step()
    return step, device


def time_interleaved(contestants: dict, steps: int, rounds: int, pause: float = 0.3) -> dict[str, float]:
    """Median seconds per call of each contestant, measured in alternating rounds.

    The order rotates every round and a short pause separates contestants: BLAS and OpenMP
    worker threads keep spinning for a moment after a call, which would otherwise slow down
    whichever contestant runs next.
    """
    samples = {name: [] for name in contestants}
    for fn, device in contestants.values():      # warm-up
        for _ in range(max(3, steps // 5)):
            fn()
        _sync(device)
    names = list(contestants)
    for r in range(rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:
            fn, device = contestants[name]
            time.sleep(pause)
            _sync(device)
            t0 = time.perf_counter()
            for _ in range(steps):
                fn()
            _sync(device)
            samples[name].append((time.perf_counter() - t0) / steps)
    return {name: statistics.median(v) for name, v in samples.items()}


def report(title: str, times: dict[str, float], reference: str, batch: int) -> list[tuple]:
    rows = []
    for name, t in times.items():
        rows.append((title, name, batch / t, times[reference] / t))
    return rows


def bench_models(batch: int, steps: int, rounds: int, devices: list[str]) -> list[tuple]:
    rng = np.random.default_rng(0)
    cases = {
        "MLP 784-300-100-10": (lambda b: models.mlp((784, 300, 100, 10), backend=b), (batch, 784)),
        "MLP 64-100-10 (digits)": (lambda b: models.mlp((64, 100, 10), backend=b), (batch, 64)),
        "CNN 8x8 (digits)": (lambda b: models.small_cnn(backend=b), (batch, 1, 8, 8)),
    }
    rows = []
    for title, (factory, shape) in cases.items():
        x = rng.standard_normal(shape).astype(np.float32)
        y = rng.integers(0, 10, batch)
        contestants = {"torch.nn (cpu)": torch_train_step(factory, "cpu", x, y),
                       "ours numpy": ours_train_step(factory, "numpy", x, y),
                       "ours torch-cpu": ours_train_step(factory, "torch-cpu", x, y)}
        times = time_interleaved(contestants, steps, rounds)
        rows += report(f"train step, {title}", times, "torch.nn (cpu)", batch)
        if "cuda" in devices:
            contestants = {"torch.nn (cuda)": torch_train_step(factory, "cuda", x, y),
                           "ours torch-cuda": ours_train_step(factory, "torch-cuda", x, y)}
            times = time_interleaved(contestants, steps, rounds)
            rows += report(f"train step, {title}", times, "torch.nn (cuda)", batch)
    return rows


def bench_conv(steps: int, rounds: int, devices: list[str]) -> list[tuple]:
    rng = np.random.default_rng(1)
    rows = []
    for n, cin, hw, cout in [(64, 16, 8, 32), (32, 3, 32, 16)]:
        x = rng.standard_normal((n, cin, hw, hw)).astype(np.float32)
        w = rng.standard_normal((cout, cin, 3, 3)).astype(np.float32) * 0.1
        bias = np.zeros(cout, dtype=np.float32)
        g = rng.standard_normal((n, cout, hw, hw)).astype(np.float32)
        title = f"Conv2d {cin}->{cout} 3x3 pad 1 on {n}x{cin}x{hw}x{hw}"
        for device in devices:
            tx, tw, tb, tg = (torch.as_tensor(a, device=device) for a in (x, w, bias, g))
            txg, twg, tbg = (t.clone().requires_grad_() for t in (tx, tw, tb))

            def torch_fwd():
                with torch.no_grad():
                    torch.nn.functional.conv2d(tx, tw, tb, 1, 1)

            def torch_fwd_bwd():
                out = torch.nn.functional.conv2d(txg, twg, tbg, 1, 1)
                txg.grad = twg.grad = tbg.grad = None
                out.backward(tg)

            backends = ["numpy", "torch-cpu"] if device == "cpu" else ["torch-cuda"]
            fwd = {f"torch conv2d ({device})": (torch_fwd, device)}
            both = {f"torch conv2d ({device})": (torch_fwd_bwd, device)}
            for be in backends:
                ox, ow, ob, og = (B.to_backend(a, be) for a in (x, w, bias, g))
                fwd[f"ours {be}"] = ((lambda ox=ox, ow=ow, ob=ob: F.conv2d_forward(ox, ow, ob, 1, 1)), device)

                def ours_fwd_bwd(ox=ox, ow=ow, ob=ob, og=og):
                    _, cache = F.conv2d_forward(ox, ow, ob, 1, 1)
                    F.conv2d_backward(og, cache)
                both[f"ours {be}"] = (ours_fwd_bwd, device)
            rows += report(f"{title}, forward", time_interleaved(fwd, steps, rounds),
                           f"torch conv2d ({device})", n)
            rows += report(f"{title}, forward+backward", time_interleaved(both, steps, rounds),
                           f"torch conv2d ({device})", n)
    return rows


def bench_separable(steps: int, rounds: int, devices: list[str]) -> list[tuple]:
    """Depthwise-separable block: depthwise 3x3 (groups = C_in) then pointwise 1x1, as layers.

    Forward + backward (input gradient included) of our two Conv2d layers against their
    torch.nn twin with autograd, as the Conv2d rows measure.
    """
    rng = np.random.default_rng(2)
    n, cin, hw, cout = 64, 16, 8, 32
    x = rng.standard_normal((n, cin, hw, hw)).astype(np.float32)
    g = rng.standard_normal((n, cout, hw, hw)).astype(np.float32)
    title = f"Separable {cin}->{cout} (dw 3x3 g={cin} + pw 1x1) {n}x{cin}x{hw}x{hw}, fwd+bwd"

    def block(b):
        return Sequential(Conv2d(cin, cin, 3, padding=1, groups=cin, backend=b), Conv2d(cin, cout, 1, backend=b))

    rows = []
    for device in devices:
        B.seed(0)
        twin = torch_twin(block(B.get_backend("numpy")), device=device)
        txg, tg = torch.as_tensor(x, device=device).requires_grad_(), torch.as_tensor(g, device=device)

        def torch_fwd_bwd():
            txg.grad = None
            for p in twin.parameters():
                p.grad = None
            twin(txg).backward(tg)

        contestants = {f"torch.nn ({device})": (torch_fwd_bwd, device)}
        for be in (["numpy", "torch-cpu"] if device == "cpu" else ["torch-cuda"]):
            B.seed(0)
            ours, ox, og = block(be), B.to_backend(x, be), B.to_backend(g, be)

            def ours_fwd_bwd(ours=ours, ox=ox, og=og):
                ours.forward(ox)
                ours.backward(og)
            contestants[f"ours {be}"] = (ours_fwd_bwd, device)
        rows += report(title, time_interleaved(contestants, steps, rounds), f"torch.nn ({device})", n)
    return rows


def _torch_quantized_chain(imodel, engine: str):
    """torch.ao's quantized modules with our converted model's codes and scales, built on ``engine``.

    Returns a function float x -> float logits: quantize_per_tensor, (LinearReLU | Linear)..., dequantize.
    """
    import torch.ao.nn.intrinsic.quantized as nniq
    import torch.ao.nn.quantized as nnq
    torch.backends.quantized.engine = engine
    layers = []
    for lay in imodel.layers:
        wc = torch.from_numpy(B.to_numpy(lay.weight_codes).copy())
        if lay.per_channel:
            sw = torch.from_numpy(B.to_numpy(lay.weight_scale).astype(np.float64))
            qw = torch._make_per_channel_quantized_tensor(wc, sw, torch.zeros(len(sw), dtype=torch.long), 0)
        else:
            qw = torch._make_per_tensor_quantized_tensor(wc, float(lay.weight_scale), 0)
        out_f, in_f = wc.shape
        layer = nniq.LinearReLU(in_f, out_f) if lay.relu else nnq.Linear(in_f, out_f)
        bias = B.to_numpy(lay.bias_codes).astype(np.float64) * (B.to_numpy(lay.weight_scale) * lay.input_scale)
        layer.set_weight_bias(qw, torch.from_numpy(bias.astype(np.float32)))
        layer.scale, layer.zero_point = lay.output_scale, lay.output_zero_point
        layers.append(layer)
    s0, z0 = imodel.input_scale, imodel.input_zero_point

    def forward(x):
        torch.backends.quantized.engine = engine        # the packed weights are the engine's; set it per call
        q = torch.quantize_per_tensor(x, s0, z0, torch.quint8)
        for layer in layers:
            q = layer(q)
        return q.dequantize()
    return forward, layers


def bench_integer(batch: int, steps: int, rounds: int) -> list[tuple]:
    """int8 inference: ours (numpy, torch-cpu; float and fixed requantization) against torch.ao on qnnpack / x86."""
    import warnings

    from nnopt_lab.inference import integer as I
    warnings.filterwarnings("ignore", message=".*quantiz", category=UserWarning)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    engines = [e for e in ("qnnpack", "x86") if e in torch.backends.quantized.supported_engines]
    old_engine, old_threads = torch.backends.quantized.engine, torch.get_num_threads()
    # one torch thread: on 2 cores, qnnpack's pthreadpool and torch's OpenMP workers spinning beside
    # OpenBLAS's made every contestant 2-10x slower at random (a 2-thread run gave nonsense ratios)
    torch.set_num_threads(1)
    rng = np.random.default_rng(3)
    rows = []
    try:
        # one Linear 784 -> 300, per-channel weights, fused ReLU, codes -> codes
        B.seed(3)
        float_model = models.mlp((784, 300, 10), backend="numpy").eval()
        calib = rng.random((256, 784)).astype(np.float32)
        x = rng.random((batch, 784)).astype(np.float32)
        ours = {req: I.convert(float_model, calib, requantization=req) for req in ("float", "fixed")}
        codes = ours["float"].quantize_input(x)
        contestants = {}
        for engine in engines:
            _, layers = _torch_quantized_chain(ours["float"], engine)
            tq = torch._make_per_tensor_quantized_tensor(torch.from_numpy(codes), ours["float"].input_scale,
                                                         ours["float"].input_zero_point)

            def run(layer=layers[0], tq=tq, engine=engine):
                torch.backends.quantized.engine = engine
                layer(tq)
            contestants[f"torch.ao {engine}"] = (run, "cpu")
        for be in ("numpy", "torch-cpu"):
            for req, model in ours.items():
                layer = I.IntegerLinear(B.to_backend(model.layers[0].weight_codes, be),
                                        B.to_backend(model.layers[0].weight_scale, be),
                                        B.to_backend(model.layers[0].bias_codes, be), model.layers[0].input_scale,
                                        model.layers[0].input_zero_point, model.layers[0].output_scale,
                                        model.layers[0].output_zero_point, relu=True, requantization=req)
                qb = B.to_backend(codes, be)
                contestants[f"ours {be} {req}"] = ((lambda layer=layer, qb=qb: layer(qb)), "cpu")
        reference = next(iter(contestants))
        rows += report(f"int8 Linear 784->300 +ReLU per channel, codes, batch {batch}",
                       time_interleaved(contestants, steps, rounds), reference, batch)
        # the converted digits MLP, float -> float
        B.seed(4)
        mlp = models.mlp((64, 128, 64, 10), backend="numpy").eval()
        calib = (rng.random((512, 64)) * 16).astype(np.float32)
        for n in sorted({1, batch}):
            x = (rng.random((n, 64)) * 16).astype(np.float32)
            contestants = {}
            base = I.convert(mlp, calib, requantization="float")
            for engine in engines:
                forward, _ = _torch_quantized_chain(base, engine)
                tx = torch.from_numpy(x)
                if engine == "qnnpack":       # the same arithmetic: the same logits, bit for bit (a sanity check)
                    assert np.array_equal(forward(tx).numpy(), B.to_numpy(base(x))), "ours != qnnpack"
                contestants[f"torch.ao {engine}"] = ((lambda forward=forward, tx=tx: forward(tx)), "cpu")
            for be in ("numpy", "torch-cpu"):
                net = mlp if be == "numpy" else copy.deepcopy(mlp).to(be)
                xb = B.to_backend(x, be)
                for req in ("float", "fixed"):
                    model = I.convert(net, B.to_backend(calib, be), requantization=req)
                    contestants[f"ours {be} {req}"] = ((lambda model=model, xb=xb: model(xb)), "cpu")
                contestants[f"ours {be} float32 MLP"] = ((lambda net=net, xb=xb: net.forward(xb)), "cpu")
            reference = next(iter(contestants))
            rows += report(f"int8 MLP 64-128-64-10 (digits), float in/out, batch {n}",
                           time_interleaved(contestants, steps, rounds), reference, n)
    finally:
        torch.backends.quantized.engine = old_engine
        torch.set_num_threads(old_threads)
    return rows


def print_table(rows: list[tuple]) -> None:
    print(f"{'benchmark':58s} {'contestant':26s} {'samples/s':>12s} {'ratio':>7s}")
    last = None
    for title, name, throughput, ratio in rows:
        if title != last and last is not None:
            print()
        print(f"{title if title != last else '':58s} {name:26s} {throughput:12,.0f} {ratio:6.2f}×")
        last = title


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="few steps: a smoke test, not a measurement")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--only", choices=("train", "conv", "separable", "integer"), default=None,
                        help="run one group of rows")
    args = parser.parse_args(argv)
    for name in ("rounds", "batch"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be an int >= 1, got {getattr(args, name)}")
    steps, rounds = (3, 2) if args.quick else (30, args.rounds)
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    B.no_tf32()
    print(f"torch {torch.__version__}, numpy {np.__version__}, threads {torch.get_num_threads()}, "
          f"devices {devices}, batch {args.batch}, {steps} steps × {rounds} interleaved rounds")
    print("ratio = torch's time / ours (throughput relative to torch; > 1 = ours faster)\n")
    groups = {"train": lambda: bench_models(args.batch, steps, rounds, devices),
              "conv": lambda: bench_conv(steps, rounds, devices),
              "separable": lambda: bench_separable(steps, rounds, devices),
              "integer": lambda: bench_integer(args.batch, steps, rounds)}
    rows = []
    for name, group in groups.items():
        if args.only in (None, name):
            rows += group()
    print_table(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
