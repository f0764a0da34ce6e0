"""Architectures: every backbone registers itself here on import."""

from . import alexnet, googlenet, lenet, resnet, vgg  # noqa: F401  (registration side effect)
from .heads import TwoHeadNet
from .registry import create_model, list_models

__all__ = ["TwoHeadNet", "create_model", "list_models"]
