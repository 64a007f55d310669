"""Training (seed §2.3, §3.3): the fit loop, optimizers, learning-rate schedules, batch size."""
from .batch_size import (BatchSizeSchedule, GradientNoise, fit_with_batch_schedule, full_gradient, gradient_noise,
                         linear_scaling_rule, linear_scaling_warmup, throughput, updates_per_epoch)
from .loop import (BatchLoss, Callback, DivergenceWarning, History, TrainingDiverged, TrainState, accuracy, batches,
                   evaluate, fit, predict, train_step)
from .snapshot import preserved
from .clipping import ClippedOptimizer, clip_grad_norm, clip_grad_value, total_grad_norm
from .optim import OPTIMIZERS, SGD, Adagrad, Adam, AdamW, Optimizer, RMSprop, check_lr
from .schedules import (ConstantLR, CosineAnnealingLR, CosineAnnealingWarmRestarts, ExponentialLR, LinearLR,
                        LinearWarmup, LRProbe, LRScheduler, MultiStepLR, OneCycleLR,
                        ReduceLROnPlateau, ScheduleCallback, SequentialLR, StepLR, lr_curve, with_warmup)
from .range_test import RangeTestResult, lr_range_test
