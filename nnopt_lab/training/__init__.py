"""Training: optimizers, the fit loop (schedules and batch-size tools in chapter 4)."""
from .loop import Callback, History, TrainState, accuracy, batches, evaluate, fit, predict, train_step
from .optim import SGD, Optimizer
