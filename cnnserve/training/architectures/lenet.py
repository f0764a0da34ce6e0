"""LeNet-5 (LeCun et al. 1998), with ReLU and max pooling in place of the
original scaled tanh and trainable subsampling; the layer sizes are the paper's
unless ``widths`` says otherwise (Caffe's well-known MNIST LeNet uses 20 and 50
feature maps and a 500-unit layer)."""

from __future__ import annotations

import torch
from torch import nn

from .heads import TwoHeadNet, mlp_head
from .registry import register_model


def build_lenet5(
    *,
    num_classes: int,
    in_channels: int,
    input_size: int,
    box_head: bool,
    box_hidden: int = 64,
    widths: tuple[int, int, int, int] = (6, 16, 120, 84),
) -> TwoHeadNet:
    """``widths``: the two convolutions' feature maps and the two hidden layers' units."""
    first, second, hidden, last = widths
    convs = nn.Sequential(
        nn.Conv2d(in_channels, first, kernel_size=5),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(2),
        nn.Conv2d(first, second, kernel_size=5),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(2),
        nn.Flatten(),
    )
    with torch.no_grad():
        flat = convs(torch.zeros(1, in_channels, input_size, input_size)).shape[1]
    backbone = nn.Sequential(
        convs,
        nn.Linear(flat, hidden),
        nn.ReLU(inplace=True),
        nn.Linear(hidden, last),
        nn.ReLU(inplace=True),
    )
    classifier = nn.Linear(last, num_classes)
    boxes = mlp_head(last, [box_hidden], 4, dropout=0.0) if box_head else None
    return TwoHeadNet(backbone, classifier, boxes)


register_model("lenet5", build_lenet5)
