r"""The capstone (seed §1.2, §2–§3): one pipeline from a trained model to the smallest one that keeps its accuracy.

A :class:`Pipeline` is a list of small step objects run in order on a model and a
:class:`~nnopt_lab.datasets.Dataset`; every step *composes* the workbook's own code and writes
no technique again:

* :class:`Distill` -- a smaller MLP student trained on the current model's soft labels
  (:class:`~nnopt_lab.inference.distillation.DistillationLoss` in :func:`~nnopt_lab.training.fit`);
* :class:`Prune` -- magnitude pruning, unstructured (:func:`~nnopt_lab.compression.pruning.prune`,
  one threshold over all layers by default) or structured (whole units,
  :func:`~nnopt_lab.compression.pruning.ln_structured`), one-shot or iterative
  (:func:`~nnopt_lab.compression.pruning.iterative_prune`), with fine-tuning;
* :class:`FineTune` -- :func:`~nnopt_lab.training.fit` (masks keep pruned weights at zero; a
  shared layer trains its centroids);
* :class:`Trim` -- fold BatchNorm (:func:`~nnopt_lab.compression.trimming.fold_batchnorms`) and
  cut out the units pruning emptied (:func:`~nnopt_lab.compression.pruning.remove_pruned_units`);
* :class:`QuantizeInt8` -- integer-only int8 inference (:func:`nnopt_lab.inference.integer.convert`);
* :class:`ShareWeights` -- k-means codebooks of :math:`2^b` centroids
  (:class:`~nnopt_lab.compression.weight_sharing.SharedLayer`; the pruned zeros keep a centroid
  fixed at 0, as in Deep Compression);
* :class:`Encode` -- Deep Compression's storage: relative sparse indices with filler zeros
  (:func:`~nnopt_lab.inference.sparse.relative_from_dense`) and Huffman coding
  (:mod:`~nnopt_lab.compression.huffman`); the model does not change, the rows from then on also
  hold :func:`encoded_bytes`.

After the baseline and after every step the :class:`Report` records test accuracy, the bytes
*as stored* (:func:`stored_bytes`), MACs (:func:`nnopt_lab.measure.flops`) and the median
latency at batch 1 and 64 (:func:`nnopt_lab.measure.latency`). The total compression is

.. math:: r = \frac{\text{bytes}_{\text{baseline, float32}}}{\text{bytes}_{\text{final, as stored}}}

(Deep Compression: 40× on LeNet-300-100 with no accuracy lost, counting its own storage: after an
:class:`Encode` step the rows also give :math:`\text{bytes}_{\text{baseline}} / \text{encoded bytes}`).

The torch side (import of a learner's ``torch.nn.Sequential``, export back, and the
"what a user would pick instead" baseline of torch's own tools) is in
:mod:`nnopt_lab.reference`: :func:`~nnopt_lab.reference.from_torch`,
:func:`~nnopt_lab.reference.to_torch`, :func:`~nnopt_lab.reference.to_torch_quantized`,
:func:`~nnopt_lab.reference.torch_tools_baseline`.

See: chapters/06_capstone.ipynb (seed §1.2, §2–§3)
"""
from __future__ import annotations

import csv
import io
import json
import math
import os
import tempfile
import time
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from . import backend as B
from . import measure
from . import models
from .compression import pruning, trimming
from .compression.weight_sharing import SharedLayer, share_weights
from .datasets import Dataset
from .inference.distillation import DistillationLoss, check_temperature
from .compression import huffman
from .inference.sparse import csr_from_dense, relative_from_dense
from .nn.layers import BatchNorm1d, BatchNorm2d, Conv2d, Flatten, Linear, Module, Sequential
from .training import loop
from .training.loop import MAX_EPOCHS
from .training.optim import SGD
from .validation import as_int, check_bool, check_choice, check_int, check_number, check_path, check_probability, \
    check_sequence

__all__ = ["Step", "Distill", "Prune", "FineTune", "Trim", "QuantizeInt8", "ShareWeights", "Encode", "Pipeline",
           "StepResult", "Report", "stored_bytes", "encoded_bytes", "evaluate_accuracy", "measure_step", "FLOAT_BITS",
           "SCHEDULES"]

#: Bits of one stored float (the baseline is float32, whatever dtype the model computes in).
FLOAT_BITS = 32
MAX_SHARE_BITS = 8          # 256 centroids: the indices fit a uint8
#: Bits of one Huffman code length in a stored code table (one per symbol of the alphabet, 0 = absent).
TABLE_BITS = 8
LATENCY_BATCHES = (1, 64)
#: Pruning schedules of :class:`Prune`.
SCHEDULES = ("oneshot", "iterative", "gradual")


# ----------------------------------------------------------------------------- what a model is
def _integer_model_type() -> type | None:
    """:class:`nnopt_lab.inference.integer.IntegerModel` (None while that module is not written)."""
    from .inference import integer
    return getattr(integer, "IntegerModel", None)


def _is_integer(model: Any) -> bool:
    t = _integer_model_type()
    return t is not None and isinstance(model, t)


def _kind(model: Any) -> str:
    """"int8", "shared" (some layer holds a k-means codebook) or "float"."""
    if _is_integer(model):
        return "int8"
    if any(isinstance(m, SharedLayer) for m in model.modules()):
        return "shared"
    return "float"


def _check_model(model: Any, step: str) -> None:
    if _is_integer(model) or isinstance(model, Module):
        return
    raise TypeError(f"model must be an nnopt_lab Sequential (or the IntegerModel of QuantizeInt8) for {step}, "
                    f"got {type(model).__name__}")


def _refuse_integer(model: Any, step: str, advice: str) -> None:
    if _is_integer(model):
        raise ValueError(f"{step} got an int8 IntegerModel (QuantizeInt8 already ran): {advice}")


def _refuse_shared(model: Any, step: str, advice: str) -> None:
    if any(isinstance(m, SharedLayer) for m in model.modules()):
        raise ValueError(f"{step} got a model whose weights are shared k-means codebooks (ShareWeights already "
                         f"ran): {advice}")


def _weighted(model: Sequential) -> list[int]:
    """Positions of the Linear / Conv2d layers."""
    return [i for i, m in enumerate(model) if isinstance(m, (Linear, Conv2d))]


def _fit_kwargs(step: "Step", ctx: "_Context", model: Module, epochs: int) -> dict:
    """What every training step gives :func:`~nnopt_lab.training.fit`: one SGD, one seed, no bar."""
    return dict(epochs=epochs, batch_size=step.batch_size, seed=ctx.next_seed(), progress=False,
                optimizer=SGD(model, lr=step.lr, momentum=step.momentum))


# ----------------------------------------------------------------------------- steps
class Step:
    """A step of a :class:`Pipeline`: ``apply(model, data, ctx) -> model`` (a new or changed model).

    Subclasses hold their parameters as attributes (checked when built) and say what they
    cannot take (a quantized model to prune, BatchNorm before int8) with a ValueError.

    See: chapters/06_capstone.ipynb (seed §1.2)
    """

    name = "step"

    def _params(self) -> dict:
        return {}

    def __repr__(self) -> str:
        inner = ", ".join(f"{k}={v!r}" for k, v in self._params().items())
        return f"{type(self).__name__}({inner})"

    def apply(self, model: Any, data: Dataset, ctx: "_Context") -> Any:  # pragma: no cover - abstract
        raise NotImplementedError


def _train_settings(self, epochs, lr, momentum, batch_size, *, epochs_low: int = 1, epochs_name: str = "epochs") -> None:
    self.epochs = check_int(epochs_name, epochs, epochs_low, MAX_EPOCHS)
    self.lr = check_number("lr", lr, 0.0, low_open=True)
    self.momentum = check_number("momentum", momentum, 0.0, 1.0, high_open=True)
    self.batch_size = check_int("batch_size", batch_size, 1)


class Distill(Step):
    r"""Train a smaller MLP student on the current model's soft labels (知识蒸馏, seed §2.4.2).

    The student is ``mlp((D,) + hidden + (C,))`` (with a Flatten first for image inputs),
    D = the flat input size, C = the class count, trained by :func:`~nnopt_lab.training.fit`
    with :class:`~nnopt_lab.inference.distillation.DistillationLoss`:

    .. math:: L = \alpha\,T^2\,\mathrm{KL}\big(\sigma(z_t/T)\,\|\,\sigma(z_s/T)\big)
              + (1-\alpha)\,\mathrm{CE}(z_s, y)

    Parameters
    ----------
    hidden : sequence of int >= 1, the student's hidden sizes
    temperature : float > 0
    alpha : float in [0, 1]
    epochs : int >= 1
    lr, momentum : SGD's rate (> 0) and momentum (in [0, 1))
    batch_size : int >= 1

    Seed: the student's initial weights and the batch order come from the pipeline's seed.

    See: chapters/06_capstone.ipynb (seed §2.4.2)
    """

    name = "distill"

    def __init__(self, hidden=(32,), temperature: float = 4.0, alpha: float = 0.9, epochs: int = 30,
                 lr: float = 0.05, momentum: float = 0.9, batch_size: int = 64):
        hidden = [hidden] if as_int(hidden) is not None else check_sequence("hidden", hidden)
        self.hidden = tuple(check_int(f"hidden[{i}]", h, 1) for i, h in enumerate(hidden))
        self.temperature = check_temperature(temperature)
        self.alpha = check_probability("alpha", alpha)
        _train_settings(self, epochs, lr, momentum, batch_size)

    def _params(self) -> dict:
        return dict(hidden=self.hidden, temperature=self.temperature, alpha=self.alpha, epochs=self.epochs,
                    lr=self.lr)

    def apply(self, model, data, ctx):
        _refuse_integer(model, "Distill", "distil from the float model, then quantize the student")
        teacher = model.eval()
        flat = math.prod(data.input_shape)
        B.seed(ctx.next_seed())                      # the student's initial weights
        student = models.mlp((flat,) + self.hidden + (data.num_classes,), backend=data.backend)
        if len(data.input_shape) > 1:
            student = Sequential(Flatten(), *student)
        loss = DistillationLoss(teacher, self.temperature, self.alpha)
        loop.fit(student, data.train, loss_fn=loss, **_fit_kwargs(self, ctx, student, self.epochs))
        return student.eval()


class Prune(Step):
    r"""Magnitude pruning (剪枝, seed §2.2.2) to a target sparsity, optionally fine-tuned.

    * unstructured (default): the fraction ``sparsity`` of the Linear / Conv2d weights with the
      smallest :math:`|w|` is masked, with one threshold over all layers (``scope="global"``, as
      ``torch.nn.utils.prune.global_unstructured``) or per layer (``scope="layer"``) --
      :func:`~nnopt_lab.compression.pruning.prune`;
    * structured: every Linear / Conv2d but the last loses ``round(sparsity · units)`` output
      units of smallest :math:`L_2` norm (:func:`~nnopt_lab.compression.pruning.ln_structured`,
      with their bias); :class:`Trim` then removes them physically.

    ``schedule="oneshot"`` prunes once, then fine-tunes ``fine_tune_epochs`` (0: none);
    ``"iterative"`` prunes in ``rounds`` steps to :math:`s_r = 1 - (1 - s)^{r/R}`, fine-tuning
    ``fine_tune_epochs`` after each (:func:`~nnopt_lab.compression.pruning.iterative_prune`);
    ``"gradual"`` (unstructured) trains ``fine_tune_epochs`` while the masks follow Zhu & Gupta's
    cubic :math:`s_t = s\,(1 - (1 - t/t_1)^3)` at every update, :math:`t_1` the start of the last
    epoch (:class:`~nnopt_lab.compression.pruning.GradualPruning`).

    Parameters
    ----------
    sparsity : float in [0, 1)
    structured : bool
    schedule : {"oneshot", "iterative", "gradual"}
    rounds : int >= 1 (iterative only)
    fine_tune_epochs : int >= 0 (>= 1 for iterative and gradual)
    lr, momentum, batch_size : the fine-tuning's SGD
    scope : {"global", "layer"} (unstructured only)

    Raises (when run)
    -----------------
    ValueError for an int8 model or one with shared weights (prune before quantizing).

    See: chapters/06_capstone.ipynb (seed §2.2.2, §2.4.1)
    """

    name = "prune"

    def __init__(self, sparsity: float, structured: bool = False, schedule: str = "oneshot", rounds: int = 3,
                 fine_tune_epochs: int = 0, lr: float = 0.01, momentum: float = 0.9, batch_size: int = 64,
                 scope: str = "global"):
        self.sparsity = check_probability("sparsity", sparsity, high_open=True)
        self.structured = check_bool("structured", structured)
        self.schedule = check_choice("schedule", schedule, SCHEDULES)
        self.rounds = check_int("rounds", rounds, 1, pruning.MAX_ROUNDS)
        self.scope = check_choice("scope", scope, ("global", "layer"))
        _train_settings(self, fine_tune_epochs, lr, momentum, batch_size, epochs_low=0, epochs_name="fine_tune_epochs")
        if self.schedule != "oneshot" and self.epochs == 0:
            raise ValueError(f"fine_tune_epochs must be >= 1 with schedule={self.schedule!r} (it prunes while it "
                             f"trains), got 0")
        if self.structured and self.schedule == "gradual":
            raise ValueError("schedule='gradual' prunes single weights (GradualPruning): use 'oneshot' or "
                             "'iterative' with structured=True")
        self.fine_tune_epochs = self.epochs

    def _params(self) -> dict:
        out = dict(sparsity=self.sparsity, structured=self.structured, schedule=self.schedule)
        if self.schedule == "iterative":
            out["rounds"] = self.rounds
        out["fine_tune_epochs"] = self.fine_tune_epochs
        return out

    def apply(self, model, data, ctx):
        _refuse_integer(model, "Prune", "a quantized model cannot be pruned; put Prune before QuantizeInt8")
        _refuse_shared(model, "Prune", "put Prune before ShareWeights (Deep Compression prunes, then shares)")
        if not isinstance(model, Sequential):
            raise TypeError(f"Prune needs an nnopt_lab Sequential, got {type(model).__name__}")
        if self.structured:
            self._structured(model, data, ctx)
        elif self.schedule == "gradual":
            steps_per_epoch = -(-int(data.train[0].shape[0]) // self.batch_size)
            end = max(0, (self.epochs - 1) * steps_per_epoch)       # the last epoch trains at the final sparsity
            schedule = pruning.PolynomialDecay(0.0, self.sparsity, 0, end, frequency=1)
            callback = pruning.GradualPruning(schedule, scope=self.scope)
            loop.fit(model, data.train, callbacks=[callback], **_fit_kwargs(self, ctx, model, self.epochs))
        elif self.schedule == "iterative":
            kwargs = _fit_kwargs(self, ctx, model, self.epochs)
            pruning.iterative_prune(model, data.train, final_sparsity=self.sparsity, rounds=self.rounds,
                                    scope=self.scope, **kwargs)
        else:
            pruning.prune(model, self.sparsity, scope=self.scope)
            if self.epochs:
                loop.fit(model, data.train, **_fit_kwargs(self, ctx, model, self.epochs))
        return model.eval()

    def _structured(self, model: Sequential, data: Dataset, ctx: "_Context") -> None:
        layers = [model[i] for i in _weighted(model)[:-1]]       # the last layer's outputs are the classes
        if not layers:
            raise ValueError("structured pruning needs a Linear / Conv2d before the last one (whose outputs are "
                             "the classes); this model has none")
        rounds = self.rounds if self.schedule == "iterative" else 1
        for r in range(1, rounds + 1):
            target = self.sparsity if r == rounds else 1.0 - (1.0 - self.sparsity) ** (r / rounds)
            for layer in layers:
                units = layer._params["weight"].shape[0]
                extra = min(round(target * units), units - 1) - len(trimming.dead_units(layer))
                if extra > 0:
                    pruning.ln_structured(layer, extra, n=2, dim=0, bias=True)
            if self.epochs:
                loop.fit(model, data.train, **_fit_kwargs(self, ctx, model, self.epochs))


class FineTune(Step):
    """Train the current model further with :func:`~nnopt_lab.training.fit` (SGD with momentum).

    Pruning masks keep pruned weights at zero; a :class:`~nnopt_lab.compression.weight_sharing.SharedLayer`
    trains its centroids (Deep Compression's centroid fine-tuning).

    Parameters
    ----------
    epochs : int >= 1
    lr : float > 0
    momentum : float in [0, 1)
    batch_size : int >= 1

    See: chapters/06_capstone.ipynb (seed §1.2)
    """

    name = "finetune"

    def __init__(self, epochs: int = 5, lr: float = 0.01, momentum: float = 0.9, batch_size: int = 64):
        _train_settings(self, epochs, lr, momentum, batch_size)

    def _params(self) -> dict:
        return dict(epochs=self.epochs, lr=self.lr)

    def apply(self, model, data, ctx):
        _refuse_integer(model, "FineTune", "fine-tune before QuantizeInt8 (integer codes have no gradient)")
        loop.fit(model, data.train, **_fit_kwargs(self, ctx, model, self.epochs))
        return model.eval()


class Trim(Step):
    """Fold BatchNorm into the layer before it and cut out the units pruning emptied (seed §2.2.3).

    :func:`~nnopt_lab.compression.trimming.fold_batchnorms`, then
    :func:`~nnopt_lab.compression.pruning.remove_pruned_units` (a removed unit's constant output
    moves into the next layer's bias): the outputs do not change, the model gets smaller. With
    ``remove_masks`` the remaining pruning masks are dropped as well
    (:func:`~nnopt_lab.compression.pruning.remove_masks`; zeros then become ordinary values that
    further training may move).

    See: chapters/06_capstone.ipynb (seed §2.2.3)
    """

    name = "trim"

    def __init__(self, remove_masks: bool = False):
        self.remove_masks = check_bool("remove_masks", remove_masks)

    def _params(self) -> dict:
        return dict(remove_masks=self.remove_masks) if self.remove_masks else {}

    def apply(self, model, data, ctx):
        _refuse_integer(model, "Trim", "fold BatchNorm and remove units before QuantizeInt8")
        _refuse_shared(model, "Trim", "put Trim before ShareWeights")
        if not isinstance(model, Sequential):
            raise TypeError(f"Trim needs an nnopt_lab Sequential, got {type(model).__name__}")
        new = pruning.remove_pruned_units(trimming.fold_batchnorms(model.eval()))
        if self.remove_masks:
            pruning.remove_masks(new)
        return new.eval()


class QuantizeInt8(Step):
    """Integer-only int8 inference (seed §2.4.3): :func:`nnopt_lab.inference.integer.convert`.

    Weights int8 symmetric (per output channel with ``per_channel``), activations uint8 with
    ranges from ``observer`` on ``calibration_samples`` training samples, ReLU fused, integer
    requantization (``requantization="fixed"``). The result is an ``IntegerModel``: nothing
    trains it afterwards.

    Raises (when run)
    -----------------
    ValueError for a model with BatchNorm (add :class:`Trim` before), with shared weights, or
    already quantized.

    See: chapters/06_capstone.ipynb (seed §2.4.3)
    """

    name = "int8"

    def __init__(self, per_channel: bool = True, observer: str = "minmax", calibration_samples: int = 256,
                 requantization: str = "fixed"):
        self.per_channel = check_bool("per_channel", per_channel)
        if not isinstance(observer, str):
            raise TypeError(f"observer must be the name of an observer such as 'minmax', got {observer!r}")
        self.observer = observer
        self.calibration_samples = check_int("calibration_samples", calibration_samples, 1)
        self.requantization = check_choice("requantization", requantization, ("fixed", "float"))

    def _params(self) -> dict:
        return dict(per_channel=self.per_channel, observer=self.observer)

    def apply(self, model, data, ctx):
        _refuse_integer(model, "QuantizeInt8", "the model is int8 already")
        _refuse_shared(model, "QuantizeInt8", "choose int8 or k-means codebooks for the weights, not both")
        bn = [f"model[{i}] ({type(m).__name__})" for i, m in enumerate(model) if isinstance(m, (BatchNorm1d, BatchNorm2d))]
        if bn:
            raise ValueError(f"QuantizeInt8 got a model with BatchNorm ({', '.join(bn)}): fold it first -- put Trim() "
                             f"before QuantizeInt8 (compression.trimming.fold_batchnorms)")
        from .inference import integer
        calibration = data.train[0][: self.calibration_samples]
        return integer.convert(model.eval(), calibration, per_channel=self.per_channel, observer=self.observer,
                               requantization=self.requantization)


class ShareWeights(Step):
    r"""Weight sharing by k-means (seed §2.2.1; Deep Compression stage 2): :math:`2^b` centroids per layer.

    Every Linear / Conv2d becomes a :class:`~nnopt_lab.compression.weight_sharing.SharedLayer`
    (indices of b bits and a float32 codebook). A pruned layer keeps its zeros: its codebook is
    :math:`[0, c_1, \dots, c_{k-1}]` with the :math:`c_j` the k-means
    (:func:`~nnopt_lab.compression.weight_sharing.share_weights`) of its nonzero weights only,
    and the 0 centroid is masked so that fine-tuning never moves it. ``fine_tune_epochs``
    trains the centroids (and biases) afterwards.

    Parameters
    ----------
    bits : int in [1, 8]
    fine_tune_epochs : int >= 0
    lr, momentum, batch_size : the centroid fine-tuning's SGD
    init : str, the centroids' initialization (:data:`~nnopt_lab.compression.weight_sharing.INITS`)

    See: chapters/06_capstone.ipynb (seed §2.2.1)
    """

    name = "share"

    def __init__(self, bits: int = 4, fine_tune_epochs: int = 0, lr: float = 0.001, momentum: float = 0.9,
                 batch_size: int = 64, init: str = "linear"):
        from .compression.weight_sharing import INITS
        self.bits = check_int("bits", bits, 1, MAX_SHARE_BITS)
        self.init = check_choice("init", init, INITS)
        _train_settings(self, fine_tune_epochs, lr, momentum, batch_size, epochs_low=0, epochs_name="fine_tune_epochs")
        self.fine_tune_epochs = self.epochs

    def _params(self) -> dict:
        return dict(bits=self.bits, fine_tune_epochs=self.fine_tune_epochs)

    def apply(self, model, data, ctx):
        _refuse_integer(model, "ShareWeights", "share the float weights, or quantize to int8: not both")
        _refuse_shared(model, "ShareWeights", "the weights are shared already")
        if not isinstance(model, Sequential):
            raise TypeError(f"ShareWeights needs an nnopt_lab Sequential, got {type(model).__name__}")
        B.seed(ctx.next_seed())                      # the 'random' / 'kmeans++' inits draw from it
        layers = [self._share(m) if isinstance(m, (Linear, Conv2d)) else trimming._copy(m) for m in model]
        new = Sequential(*layers)
        if self.epochs:
            loop.fit(new, data.train, **_fit_kwargs(self, ctx, new, self.epochs))
        return new.eval()

    def _share(self, layer: Module) -> SharedLayer:
        k = 2 ** self.bits
        p = layer._params["weight"]
        w = p.masked(p.data)
        xp = B.namespace(w)
        flat = xp.reshape(w, (-1,))
        nonzero = flat[flat != 0]
        plain = trimming._copy(layer)
        plain._params["weight"].data = B.copy(w)
        plain._params["weight"].mask = None
        if int(nonzero.shape[0]) == int(flat.shape[0]):                    # nothing pruned
            return SharedLayer(plain, min(k, int(xp.unique_values(flat).shape[0])), init=self.init)
        distinct = int(xp.unique_values(nonzero).shape[0])
        shared = SharedLayer(plain, min(k, distinct + 1), init=self.init, max_iter=1)   # its codebook is replaced
        k = shared.k
        state = shared.state_dict()
        if k == 1:
            codebook = xp.zeros((1,), dtype=w.dtype, device=B.device(w))
            indices = xp.zeros(tuple(flat.shape), dtype=state["indices"].dtype, device=B.device(w))
        else:
            centroids, idx = share_weights(nonzero, k - 1, init=self.init)
            zero = xp.zeros((1,), dtype=w.dtype, device=B.device(w))
            codebook = xp.concat([zero, centroids])
            indices = xp.zeros(tuple(flat.shape), dtype=state["indices"].dtype, device=B.device(w))
            indices[flat != 0] = xp.astype(xp.reshape(idx, (-1,)) + 1, state["indices"].dtype)
        state["codebook"] = codebook
        state["indices"] = xp.reshape(indices, tuple(w.shape))
        shared.load_state_dict(state)
        fixed = xp.ones((k,), dtype=w.dtype, device=B.device(w))
        fixed[0] = 0
        shared.codebook.mask = fixed                 # the 0 centroid (the pruned weights) never moves
        return shared


class Encode(Step):
    r"""Deep Compression's storage (stage 3; Han et al. 2016, §2 and §4): relative sparse indices + Huffman.

    The model does not change -- its decoded weights are exactly its weights -- but from this
    step on every row of the report also holds ``encoded_bytes``, the bytes as Deep Compression
    stores them (:func:`encoded_bytes`): each Linear / Conv2d weight either densely or as
    relative indices (:func:`~nnopt_lab.inference.sparse.relative_from_dense`: per stored entry
    its value -- a k-means index, an int8 code or a float32 -- and a ``relative_index_bits``-bit
    gap, with filler zeros for longer gaps), whichever is smaller; with ``huffman`` the values
    (k-means indices, int8 codes) and the gaps are Huffman-coded
    (:mod:`~nnopt_lab.compression.huffman`) where that is smaller, the code tables counted.
    ``bytes`` keeps counting the plain format (:func:`stored_bytes`).

    When it runs, every weight is encoded to bytes, decoded and compared with the weight
    (the round trip is exact, or a RuntimeError says which layer differs).

    Parameters
    ----------
    relative_index_bits : int in [1, 16] (Deep Compression: 5 for fully connected layers, 8 for convolutions)
    huffman : bool

    Seed: none (deterministic).

    See: chapters/06_capstone.ipynb (seed §2.2.1)
    """

    name = "encode"

    def __init__(self, relative_index_bits: int = 5, huffman: bool = True):
        from .inference.sparse import MAX_RELATIVE_BITS
        self.relative_index_bits = check_int("relative_index_bits", relative_index_bits, 1, MAX_RELATIVE_BITS)
        self.huffman = check_bool("huffman", huffman)

    def _params(self) -> dict:
        return dict(relative_index_bits=self.relative_index_bits, huffman=self.huffman)

    def apply(self, model, data, ctx):
        _check_model(model, "Encode")
        for label, positions_of, symbols, value_bits in _weight_symbols(model):
            _encode_weight(label, positions_of, symbols, value_bits, self.relative_index_bits, self.huffman,
                           round_trip=True)
        ctx.encoding = self
        return model


# ----------------------------------------------------------------------------- measuring
def _storage(count: int, nonzero: int, rows: int, value_bits: int, w2d: Any) -> tuple[int, str]:
    """Bytes of one weight: dense codes, or CSR (values + int32 column indices + row pointers) if smaller."""
    dense = -(-count * value_bits // 8)
    if nonzero == count:
        return dense, "dense"
    csr = csr_from_dense(w2d)
    index_bytes = csr.nbytes - csr.nnz * csr.values.dtype.itemsize
    sparse = -(-csr.nnz * value_bits // 8) + index_bytes
    return (sparse, "csr") if sparse < dense else (dense, "dense")


def _float_layer_bytes(layer: Module) -> tuple[int, str]:
    """A float layer: weight (dense or CSR) + every other parameter at 32 bits."""
    other = sum(math.prod(p.shape) for n, p in layer._params.items() if n != "weight") * FLOAT_BITS
    if not isinstance(layer, (Linear, Conv2d)):
        return -(-other // 8), "dense"
    p = layer._params["weight"]
    w = p.masked(p.data)
    xp = B.namespace(w)
    w2d = xp.reshape(w, (w.shape[0], -1))
    weight, fmt = _storage(math.prod(p.shape), int(xp.count_nonzero(w)), int(w.shape[0]), FLOAT_BITS, w2d)
    return weight + -(-other // 8), fmt


def _shared_layer_bytes(layer: SharedLayer) -> tuple[int, str]:
    """Indices (dense, or CSR when smaller) + codebook + bias (float32), as quantized_size counts them."""
    from .compression.weight_sharing import index_bits
    w = layer.weight()
    xp = B.namespace(w)
    w2d = xp.reshape(w, (w.shape[0], -1))
    bits = index_bits(layer.k)
    idx, fmt = _storage(math.prod(tuple(w.shape)), int(xp.count_nonzero(w)), int(w.shape[0]), bits, w2d)
    rest = sum(math.prod(p.shape) for p in layer._params.values()) * FLOAT_BITS   # codebook + bias
    return idx + -(-rest // 8), fmt


def _integer_bytes(model: Any) -> tuple[int, str]:
    """``model.stored_bytes()`` with each layer's int8 codes as CSR instead where that is smaller."""
    total, formats = int(model.stored_bytes()), set()
    for layer in model.layers:
        codes = getattr(layer, "weight_codes", None)
        if codes is None:
            continue
        xp = B.namespace(codes)
        w2d = xp.reshape(codes, (codes.shape[0], -1))
        count = math.prod(tuple(codes.shape))
        best, fmt = _storage(count, int(xp.count_nonzero(codes)), int(codes.shape[0]), 8, w2d)
        total += best - count                       # stored_bytes counted the codes densely (1 byte each)
        formats.add(fmt)
    return total, "+".join(sorted(formats)) or "dense"


def stored_bytes(model: Any, detail: bool = False) -> int | tuple[int, str]:
    r"""Bytes of a model's parameters *as stored*: float32 values, int8 codes, b-bit k-means indices.

    Each Linear / Conv2d weight is stored densely or, when that is smaller, in CSR
    (:class:`~nnopt_lab.inference.sparse.CSRMatrix`: the nonzero values at their width plus
    int32 column indices and row pointers):

    .. math:: \text{bytes}_W = \min\Big(\big\lceil \tfrac{n b}{8} \big\rceil,\;
              \big\lceil \tfrac{nnz\, b}{8} \big\rceil + 4\,nnz + 4\,(M + 1)\Big)

    with b = 32 (float), 8 (int8 codes) or :math:`\lceil\log_2 k\rceil` (k-means indices,
    plus the codebook of k float32). Biases, BatchNorm affine parameters, codebooks at 32
    bits; an int8 model's scales, zero points and multipliers as its ``stored_bytes()`` counts
    them. Buffers (BatchNorm running statistics) are not counted, as in
    :func:`nnopt_lab.measure.model_bytes` -- for an unpruned float model the two agree
    (``model_bytes(model, "float32")``).

    Parameters
    ----------
    model : Module or IntegerModel
    detail : bool
        Also return the formats used ("dense", "csr" or "csr+dense").

    See: chapters/06_capstone.ipynb (seed §1.2)
    """
    detail = check_bool("detail", detail)
    if _is_integer(model):
        total, fmt = _integer_bytes(model)
        return (total, fmt) if detail else total
    if not isinstance(model, Module):
        raise TypeError(f"model must be an nnopt_lab Module or IntegerModel, got {type(model).__name__}")
    total, formats, seen = 0, set(), set()
    for m in model.modules():
        if id(m) in seen:
            continue
        seen.add(id(m))
        if isinstance(m, SharedLayer):
            b, fmt = _shared_layer_bytes(m)
        elif m._params:
            b, fmt = _float_layer_bytes(m)
        else:
            continue
        total += b
        formats.add(fmt)
    fmt = "+".join(sorted(formats)) or "dense"
    return (total, fmt) if detail else total


def _weight_symbols(model: Any) -> list[tuple]:
    """Per Linear / Conv2d weight: (label, array whose zeros are the sparse ones, integer symbols of
    every weight -- k-means indices or int8 codes -- or None for float32 values, bits of one value)."""
    from .compression.weight_sharing import index_bits
    out = []
    if _is_integer(model):
        for i, layer in enumerate(model.layers):
            codes = getattr(layer, "weight_codes", None)
            if codes is not None:
                out.append((f"layers[{i}]", codes, codes, 8))
        return out
    seen = set()
    for name, m in _named_modules(model):
        if id(m) in seen:
            continue
        seen.add(id(m))
        if isinstance(m, SharedLayer):
            out.append((name, m.weight(), m.indices, index_bits(m.k)))
        elif isinstance(m, (Linear, Conv2d)):
            p = m._params["weight"]
            out.append((name, p.masked(p.data), None, FLOAT_BITS))
    return out


def _named_modules(model: Module) -> list[tuple[str, Module]]:
    if isinstance(model, Sequential):
        return [(f"model[{i}]", m) for i, m in enumerate(model)]
    return [(f"module {j}", m) for j, m in enumerate(model.modules())]


def _huffman_bits(symbols: list[int], alphabet_bits: int) -> int:
    """Bits of ``symbols`` Huffman-coded, with the code table: one :data:`TABLE_BITS` length per symbol
    of the alphabet of :math:`2^{b}`, or (symbol, length) pairs of the symbols that occur, the smaller."""
    counts = huffman.symbol_counts(symbols)
    table = min(2 ** alphabet_bits * TABLE_BITS, len(counts) * (alphabet_bits + TABLE_BITS))
    return huffman.total_bits(huffman.huffman_code(counts), counts) + table if counts else 0


def _part_bits(symbols: list[int] | None, count: int, width: int, use_huffman: bool) -> tuple[int, bool]:
    """(bits, Huffman-coded?) of ``count`` values of ``width`` bits: fixed width or Huffman, the smaller."""
    fixed = count * width
    if symbols is None or not use_huffman or not count:
        return fixed, False
    coded = _huffman_bits(symbols, width)
    return (coded, True) if coded < fixed else (fixed, False)


def _encode_weight(label: str, positions_of: Any, symbols: Any, value_bits: int, rel_bits: int, use_huffman: bool,
                   round_trip: bool = False) -> tuple[int, str]:
    """(bits, format) of one weight stored as Deep Compression does; ``round_trip`` also encodes to bytes,
    decodes and checks."""
    xp = B.namespace(positions_of)
    n = math.prod(tuple(positions_of.shape))
    flat_symbols = None if symbols is None else B.to_numpy(xp.reshape(symbols, (-1,))).tolist()
    dense_bits, dense_huff = _part_bits(flat_symbols, n, value_bits, use_huffman)
    rel = relative_from_dense(positions_of, rel_bits)
    positions = B.to_numpy(rel.positions()).tolist()
    entry_symbols = None if flat_symbols is None else [flat_symbols[p] for p in positions]
    value_part, value_huff = _part_bits(entry_symbols, rel.n_entries, value_bits, use_huffman)
    gaps = B.to_numpy(rel.gaps).tolist()
    gap_part, gap_huff = _part_bits(gaps, rel.n_entries, rel_bits, use_huffman)
    if round_trip:
        if not bool(xp.all(rel.to_dense() == positions_of)):
            raise RuntimeError(f"Encode: the relative-index round trip of {label} is not exact")
        for what, values, coded in (("values", entry_symbols, value_huff), ("gaps", gaps, gap_huff),
                                    ("values", flat_symbols, dense_huff)):
            if coded:
                code = huffman.huffman_code(huffman.symbol_counts(values))
                data = huffman.encode(values, code)
                back = B.to_numpy(huffman.decode(data, code, len(values), backend="numpy")).tolist()
                if back != values or len(data) != -(-huffman.total_bits(code, huffman.symbol_counts(values)) // 8):
                    raise RuntimeError(f"Encode: the Huffman round trip of {label}'s {what} is not exact")
    relative = value_part + gap_part
    tag = "-huffman" if (value_huff or gap_huff) else ""
    if relative < dense_bits:
        return relative, "relative" + tag
    return dense_bits, "dense" + ("-huffman" if dense_huff else "")


def encoded_bytes(model: Any, relative_index_bits: int = 5, huffman: bool = True,
                  detail: bool = False) -> int | tuple[int, str]:
    r"""Bytes of a model's parameters as Deep Compression stores them (Han et al. 2016, §2 and §4).

    Each Linear / Conv2d weight (n entries, values of :math:`b_v` bits: k-means indices of
    :math:`\lceil\log_2 k\rceil` bits, int8 codes of 8, float32 values of 32) is stored densely
    or in the relative-index format (:func:`~nnopt_lab.inference.sparse.relative_from_dense`,
    :math:`n_e` = nonzeros + filler zeros, gaps of :math:`b_r` = ``relative_index_bits``),
    whichever is smaller:

    .. math:: \text{bits}_W = \min\big(V(n),\; V(n_e) + G(n_e)\big),\qquad
              \text{bytes}_W = \lceil \text{bits}_W / 8 \rceil,

    with :math:`V(m) = m\,b_v` and :math:`G(m) = m\,b_r` at fixed width, or with ``huffman``
    the Huffman-coded bits (:func:`~nnopt_lab.compression.huffman.total_bits`) plus the code
    table (one 8-bit length per symbol of the alphabet, or (symbol, length) pairs of the symbols
    that occur, the smaller) when that is smaller; float32 values are never Huffman-coded. The
    rest -- biases, codebooks (float32), an int8 model's scales and zero points -- is counted as in
    :func:`stored_bytes`.

    Parameters
    ----------
    model : Module or IntegerModel
    relative_index_bits : int in [1, 16]
    huffman : bool
    detail : bool
        Also return the formats used: "dense" or "relative", with "-huffman" where Huffman-coded
        ("+" between the formats of layers that differ).

    Seed: none (deterministic).

    See: chapters/06_capstone.ipynb (seed §2.2.1)
    """
    from .inference.sparse import MAX_RELATIVE_BITS
    rel_bits = check_int("relative_index_bits", relative_index_bits, 1, MAX_RELATIVE_BITS)
    use_huffman = check_bool("huffman", huffman)
    detail = check_bool("detail", detail)
    if not (isinstance(model, Module) or _is_integer(model)):
        raise TypeError(f"model must be an nnopt_lab Module or IntegerModel, got {type(model).__name__}")
    weights, formats = 0, set()
    parts = _weight_symbols(model)
    for label, positions_of, symbols, value_bits in parts:
        bits, fmt = _encode_weight(label, positions_of, symbols, value_bits, rel_bits, use_huffman)
        weights += -(-bits // 8)
        formats.add(fmt)
    if _is_integer(model):
        rest = int(model.stored_bytes()) - sum(math.prod(tuple(p[1].shape)) for p in parts)
    else:
        rest, seen = 0, set()
        for m in model.modules():
            if id(m) in seen or not m._params:
                continue
            seen.add(id(m))
            names = [n for n in m._params if isinstance(m, SharedLayer) or n != "weight" or
                     not isinstance(m, (Linear, Conv2d))]
            rest += -(-sum(math.prod(m._params[n].shape) for n in names) * FLOAT_BITS // 8)
    total = weights + rest
    fmt = "+".join(sorted(formats)) or "dense"
    return (total, fmt) if detail else total


def _predict(model: Any, x: Any, batch_size: int = 1024) -> Any:
    if isinstance(model, Module):
        return loop.predict(model, x, batch_size)
    outs = [model(x[i:i + batch_size]) for i in range(0, x.shape[0], batch_size)]
    return B.namespace(outs[0]).concat(outs, axis=0)


def evaluate_accuracy(model: Any, data: tuple, batch_size: int = 1024) -> float:
    r"""Accuracy :math:`\frac1N \sum_i [\arg\max f(x_i) = y_i]` of a float or int8 model on ``data = (X, y)``.

    See: chapters/06_capstone.ipynb (seed §1.2)
    """
    x, y = loop.check_xy("data", data)
    batch_size = check_int("batch_size", batch_size, 1)
    if not (isinstance(model, Module) or _is_integer(model)):
        raise TypeError(f"model must be an nnopt_lab Module or IntegerModel, got {type(model).__name__}")
    return loop.accuracy(_predict(model, x, batch_size), y)


def _params_and_sparsity(model: Any) -> tuple[int, float]:
    """(weights + other parameters, a shared layer's indices for its weights; fraction of zero Linear/Conv2d weights)."""
    if _is_integer(model):
        count = zeros = total = 0
        for layer in model.layers:
            codes = getattr(layer, "weight_codes", None)
            if codes is None:
                continue
            n = math.prod(tuple(codes.shape))
            bias = getattr(layer, "bias_codes", None)
            count += n + (0 if bias is None else math.prod(tuple(bias.shape)))
            zeros += n - int(B.namespace(codes).count_nonzero(codes))
            total += n
        return count, zeros / total if total else 0.0
    zeros = total = 0
    for m in model.modules():                      # a SharedLayer's wrapped layer is not among them
        if isinstance(m, SharedLayer):
            w = m.weight()
        elif isinstance(m, (Linear, Conv2d)):
            p = m._params["weight"]
            w = p.masked(p.data)
        else:
            continue
        n = math.prod(tuple(w.shape))
        zeros += n - int(B.namespace(w).count_nonzero(w))
        total += n
    shared = [m for m in model.modules() if isinstance(m, SharedLayer)]
    count = measure.count_parameters(model) + sum(math.prod(tuple(m.indices.shape)) - m.k for m in shared)
    return count, zeros / total if total else 0.0


def _latency_ms(model: Any, x: Any, batch: int, repeats: int) -> float:
    xb = x[:batch]
    if xb.shape[0] < batch:                           # fewer test samples than the batch: repeat them
        reps = -(-batch // int(xb.shape[0]))
        xb = B.namespace(xb).concat([xb] * reps, axis=0)[:batch]
    if isinstance(model, Module):
        was = model.training
        model.eval()
        try:
            return measure.latency(model.forward, xb, warmup=2, repeats=repeats).median * 1e3
        finally:
            model.train(was)
    return measure.latency(model, xb, warmup=2, repeats=repeats).median * 1e3


@dataclass(frozen=True)
class StepResult:
    """One row of a :class:`Report`: the model after a step, measured.

    Attributes
    ----------
    step : str, the step's repr ("baseline" for the model given)
    kind : {"float", "shared", "int8", "torch"}
    accuracy, val_accuracy : float in [0, 1] (test and validation splits)
    bytes : int, parameters as stored (:func:`stored_bytes`)
    compression : float, the baseline's float32 bytes / bytes
    macs : int, multiply-accumulates of one sample (dense: zeros are multiplied too)
    params : int, the model's weights and biases (a shared layer: one per index, its codebook not counted)
    sparsity : float, fraction of zero Linear/Conv2d weights
    latency_b1_ms, latency_b64_ms : float or None, median latency at batch 1 and 64 (None: not measured)
    storage : str, "dense", "csr" or "csr+dense"
    seconds : float, the step's own wall time (not reproducible)
    encoded_bytes : int or None, the bytes as Deep Compression stores them (:func:`encoded_bytes`), in the rows
        from an :class:`Encode` step on (None before)
    encoded_compression : float or None, the baseline's float32 bytes / encoded_bytes

    See: chapters/06_capstone.ipynb (seed §1.2)
    """

    step: str
    kind: str
    accuracy: float
    val_accuracy: float
    bytes: int
    compression: float
    macs: int
    params: int
    sparsity: float
    latency_b1_ms: float | None = None
    latency_b64_ms: float | None = None
    storage: str = "dense"
    seconds: float = 0.0
    encoded_bytes: int | None = None
    encoded_compression: float | None = None

    #: fields that differ between two runs of one seed (timings)
    TIMINGS = ("latency_b1_ms", "latency_b64_ms", "seconds")

    def as_dict(self, timings: bool = True) -> dict:
        """The fields as a dict (without the timings when ``timings=False``)."""
        d = asdict(self)
        if not check_bool("timings", timings):
            for k in self.TIMINGS:
                d.pop(k)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "StepResult":
        """A row from a dict holding (at least) every field without a default; other keys are ignored."""
        if not isinstance(d, dict):
            raise TypeError(f"d must be a dict of StepResult fields, got {type(d).__name__}")
        from dataclasses import MISSING
        names = {f.name for f in fields(cls)}
        missing = [f.name for f in fields(cls) if f.name not in d and f.default is MISSING]
        if missing:
            raise ValueError(f"d lacks the fields {missing} of a StepResult")
        return cls(**{k: v for k, v in d.items() if k in names})


def measure_step(model: Any, data: Dataset, step: str = "model", *, baseline_bytes: int | None = None,
                 macs: int | None = None, latency: bool = True, repeats: int = 20,
                 seconds: float = 0.0, encoding: "Encode | None" = None) -> StepResult:
    """Measure one model as a :class:`Report` row: accuracy, bytes as stored, MACs, parameters, latency.

    Parameters
    ----------
    model : Module or IntegerModel
    data : Dataset (accuracy on ``test`` and ``val``; latency on the first test samples)
    step : str, the row's label
    baseline_bytes : int >= 1, optional (default: this model's own float32 bytes)
    macs : int >= 0, optional
        MACs of one sample; None measures them (:func:`nnopt_lab.measure.flops`) for a Module --
        an int8 model runs the MACs of the float model it came from (the pipeline passes them).
    latency : bool, measure latency (median of ``repeats`` at batch 1 and 64)
    repeats : int >= 1
    seconds : float, the step's wall time to record
    encoding : Encode or None
        Also count the bytes as that step encodes them (:func:`encoded_bytes`); the pipeline passes
        the last :class:`Encode` that ran.

    See: chapters/06_capstone.ipynb (seed §1.2)
    """
    if not isinstance(data, Dataset):
        raise TypeError(f"data must be an nnopt_lab Dataset, got {type(data).__name__}")
    if not isinstance(step, str):
        raise TypeError(f"step must be a str label, got {type(step).__name__}")
    _check_model(model, "measure_step")
    latency = check_bool("latency", latency)
    repeats = check_int("repeats", repeats, 1, measure.MAX_REPEATS)
    seconds = check_number("seconds", seconds, 0.0)
    if encoding is not None and not isinstance(encoding, Encode):
        raise TypeError(f"encoding must be an Encode step or None, got {type(encoding).__name__}")
    size, fmt = stored_bytes(model, detail=True)
    if baseline_bytes is None:
        baseline_bytes = size if not isinstance(model, Module) else measure.model_bytes(model, "float32")
    baseline_bytes = check_int("baseline_bytes", baseline_bytes, 1)
    if macs is None:
        if not isinstance(model, Module):
            raise ValueError("macs must be given for an int8 model (those of the float model it was converted from)")
        macs = measure.flops(model, tuple(data.input_shape), batch_size=1).total_macs
    macs = check_int("macs", macs, 0)
    params, sparsity = _params_and_sparsity(model)
    x_test = data.test[0]
    lat = (_latency_ms(model, x_test, 1, repeats), _latency_ms(model, x_test, 64, repeats)) if latency \
        else (None, None)
    enc = None if encoding is None else encoded_bytes(model, encoding.relative_index_bits, encoding.huffman)
    return StepResult(step, _kind(model), evaluate_accuracy(model, data.test), evaluate_accuracy(model, data.val),
                      int(size), baseline_bytes / size, int(macs), int(params), float(sparsity), lat[0], lat[1],
                      fmt, float(seconds), enc, None if enc is None else baseline_bytes / enc)


# ----------------------------------------------------------------------------- the report
def _atomic_text(path: str, text: str) -> None:
    """Write ``text`` to a temporary file beside ``path``, then rename it into place."""
    if os.path.isdir(path):
        raise ValueError(f"path must name a file to write, got {path!r}, which is a folder")
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=os.path.basename(path), dir=folder)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


_PARETO_METRICS = ("bytes", "latency_b1_ms", "latency_b64_ms", "macs", "params")


@dataclass
class Report:
    """What a :meth:`Pipeline.run` measured: one :class:`StepResult` per step, the baseline first.

    Attributes
    ----------
    rows : list of StepResult
    final_model : Module or IntegerModel, the model after the last step
    models : list, the model after each row (``models[0]`` the baseline's copy)
    seed : int
    backend : str

    See: chapters/06_capstone.ipynb (seed §1.2)
    """

    rows: list
    final_model: Any = None
    models: list = field(default_factory=list, repr=False)
    seed: int = 0
    backend: str = ""

    @property
    def baseline(self) -> StepResult:
        return self.rows[0]

    @property
    def final(self) -> StepResult:
        return self.rows[-1]

    def add(self, row: Any) -> "Report":
        """Append a row (a StepResult or a dict of its fields, e.g. :func:`nnopt_lab.reference.torch_tools_baseline`).

        Its ``compression`` is recomputed against this report's baseline.
        """
        if not isinstance(row, (StepResult, dict)):
            raise TypeError(f"row must be a StepResult or a dict of its fields, got {type(row).__name__}")
        row = row if isinstance(row, StepResult) else StepResult.from_dict(row)
        from dataclasses import replace
        base = self.rows[0].bytes if self.rows else None
        self.rows.append(replace(row, compression=base / row.bytes if base else row.compression,
                                 encoded_compression=base / row.encoded_bytes if base and row.encoded_bytes
                                 else row.encoded_compression))
        self.models.append(None)
        return self

    def table(self) -> str:
        """The rows as a fixed-width text table (accuracy in %, bytes, ×compression, MACs, latency in ms).

        When a row has ``encoded_bytes`` (an :class:`Encode` step ran) two columns follow: the
        encoded bytes and their compression ("-" in the rows before).
        """
        head = ("step", "acc %", "val %", "bytes", "×", "MACs", "params", "sparsity", "b1 ms", "b64 ms", "storage")
        lat = (lambda v: "-" if v is None else f"{v:.3f}")
        body = [(r.step, f"{100 * r.accuracy:.2f}", f"{100 * r.val_accuracy:.2f}", f"{r.bytes:,}",
                 f"{r.compression:.1f}", f"{r.macs:,}", f"{r.params:,}", f"{100 * r.sparsity:.1f} %",
                 lat(r.latency_b1_ms), lat(r.latency_b64_ms), r.storage) for r in self.rows]
        if any(r.encoded_bytes is not None for r in self.rows):
            head += ("encoded", "enc ×")
            body = [line + (("-", "-") if r.encoded_bytes is None else
                            (f"{r.encoded_bytes:,}", f"{r.encoded_compression:.1f}"))
                    for line, r in zip(body, self.rows)]
        widths = [max(len(str(x)) for x in col) for col in zip(head, *body)]
        lines = ["  ".join(str(x).ljust(w) if i in (0, 10) else str(x).rjust(w) for i, (x, w) in
                           enumerate(zip(line, widths))) for line in [head, *body]]
        return "\n".join(lines[:1] + ["-" * len(lines[0])] + lines[1:])

    def __str__(self) -> str:
        return self.table()

    def as_dict(self, timings: bool = True) -> dict:
        """``{"seed", "backend", "rows": [row dicts]}`` (JSON-ready; ``timings=False`` drops the timings)."""
        return {"seed": self.seed, "backend": self.backend,
                "rows": [r.as_dict(timings=check_bool("timings", timings)) for r in self.rows]}

    def to_json(self, path: str) -> str:
        """Write :meth:`as_dict` as JSON to ``path`` atomically (temporary file + ``os.replace``); returns the path."""
        path = check_path("path", path)
        _atomic_text(path, json.dumps(self.as_dict(), indent=2) + "\n")
        return path

    def to_csv(self, path: str) -> str:
        """Write the rows as CSV (one header line, the StepResult fields) atomically; returns the path."""
        path = check_path("path", path)
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=[f.name for f in fields(StepResult)], lineterminator="\n")
        writer.writeheader()
        for r in self.rows:
            writer.writerow({k: "" if v is None else v for k, v in r.as_dict().items()})
        _atomic_text(path, out.getvalue())
        return path

    def best_within(self, points: float, baseline: float | None = None) -> StepResult:
        """The row with the fewest bytes whose test accuracy is at least ``baseline - points/100``.

        Parameters
        ----------
        points : float >= 0, accuracy percentage points one may lose
        baseline : float in [0, 1], optional (default: the first row's accuracy)

        Returns
        -------
        StepResult (the first row itself when nothing smaller keeps the accuracy; ties in bytes go
        to the more accurate row). ValueError when no row qualifies (a ``baseline`` above every row).
        """
        points = check_number("points", points, 0.0)
        base = self.rows[0].accuracy if baseline is None else check_probability("baseline", baseline)
        ok = [r for r in self.rows if r.accuracy >= base - points / 100 - 1e-12]
        if not ok:
            raise ValueError(f"no row keeps accuracy >= {base - points / 100:.4f} (baseline {base:.4f} - {points} "
                             f"points); best is {max(r.accuracy for r in self.rows):.4f}")
        return min(ok, key=lambda r: (r.bytes, -r.accuracy))

    def pareto(self, metric: str = "bytes") -> list:
        """The rows on the Pareto front of accuracy (higher) against ``metric`` (lower), by ``metric``.

        ``metric`` in ("bytes", "latency_b1_ms", "latency_b64_ms", "macs", "params"). A row is on the front
        when no other row is at least as good in both and better in one.
        """
        metric = check_choice("metric", metric, _PARETO_METRICS)
        rows = [r for r in self.rows if getattr(r, metric) is not None]
        if not rows:
            raise ValueError(f"no row has {metric} (run the pipeline with latency=True)")
        front = [r for r in rows if not any(
            getattr(o, metric) <= getattr(r, metric) and o.accuracy >= r.accuracy and
            (getattr(o, metric) < getattr(r, metric) or o.accuracy > r.accuracy) for o in rows)]
        return sorted(front, key=lambda r: getattr(r, metric))


# ----------------------------------------------------------------------------- the pipeline
class _Context:
    """What the steps share: the run's seed (each training draws the next one)."""

    def __init__(self, seed: int):
        self.seed = seed
        self.count = 0
        self.encoding = None                         # the last Encode step that ran

    def next_seed(self) -> int:
        self.count += 1
        return self.seed * 1000 + self.count


class Pipeline:
    """Steps run in order on a copy of a trained model, measured after each (seed §1.2, §2–§3).

    >>> report = Pipeline([Prune(0.9, fine_tune_epochs=5), Trim(), QuantizeInt8()]).run(model, data)  # doctest: +SKIP
    >>> print(report.table())                                                                         # doctest: +SKIP

    Parameters
    ----------
    steps : sequence of Step (:class:`Distill`, :class:`Prune`, :class:`FineTune`, :class:`Trim`,
        :class:`QuantizeInt8`, :class:`ShareWeights`, :class:`Encode`), in any order; a step that cannot take
        what the one before made says so when it runs (ValueError).

    See: chapters/06_capstone.ipynb (seed §1.2)
    """

    def __init__(self, steps):
        steps = check_sequence("steps", steps)
        for i, s in enumerate(steps):
            if not isinstance(s, Step):
                raise TypeError(f"steps[{i}] must be a pipeline Step (Distill, Prune, FineTune, Trim, QuantizeInt8, "
                                f"ShareWeights, Encode), got {type(s).__name__}")
        self.steps = list(steps)

    def __repr__(self) -> str:
        return "Pipeline([" + ", ".join(map(repr, self.steps)) + "])"

    def run(self, model: Module, data: Dataset, *, seed: int = 0, latency: bool = True, repeats: int = 20) -> Report:
        """Run the steps on a copy of ``model`` (moved to ``data``'s backend); return the :class:`Report`.

        Parameters
        ----------
        model : Module, trained (its accuracy is the baseline row)
        data : Dataset (train for training and calibration, val and test for the rows)
        seed : int >= 0
            Every random draw (students' initial weights, batch orders, centroid inits) comes from
            it: one seed gives the same report (timings aside) on one backend.
        latency : bool
            Measure latency (median of ``repeats`` calls at batch 1 and at batch 64).
        repeats : int >= 1

        Returns
        -------
        Report

        See: chapters/06_capstone.ipynb (seed §1.2)
        """
        if not isinstance(model, Module):
            raise TypeError(f"model must be an nnopt_lab Module (import a torch model with "
                            f"nnopt_lab.reference.from_torch), got {type(model).__name__}")
        if not isinstance(data, Dataset):
            raise TypeError(f"data must be an nnopt_lab Dataset (e.g. datasets.load_digits()), got {type(data).__name__}")
        seed = check_int("seed", seed, 0)
        latency = check_bool("latency", latency)
        repeats = check_int("repeats", repeats, 1, measure.MAX_REPEATS)
        current = trimming._copy(model).to(data.backend).eval()
        B.seed(seed)
        ctx = _Context(seed)
        base_bytes = measure.model_bytes(current, "float32")
        t0 = time.perf_counter()
        rows = [measure_step(current, data, "baseline", baseline_bytes=base_bytes, latency=latency, repeats=repeats,
                             seconds=0.0)]
        kept = [trimming._copy(current)]
        macs = rows[0].macs
        for step in self.steps:
            t0 = time.perf_counter()
            current = step.apply(current, data, ctx)
            seconds = time.perf_counter() - t0
            if isinstance(current, Module):
                macs = None
            row = measure_step(current, data, repr(step), baseline_bytes=base_bytes, macs=macs, latency=latency,
                               repeats=repeats, seconds=seconds, encoding=ctx.encoding)
            macs = row.macs
            rows.append(row)
            kept.append(current if not isinstance(current, Module) else trimming._copy(current))
        return Report(rows, current, kept, seed, str(data.backend))
