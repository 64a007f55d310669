"""The from-scratch network core: functional forward/backward pairs and layers."""
from . import functional
from .layers import (AvgPool2d, BatchNorm1d, BatchNorm2d, Conv2d, CrossEntropyLoss, Dropout, Flatten,
                     Linear, MaxPool2d, Module, Parameter, ReLU, Sequential)
