"""VGG (Simonyan & Zisserman 2014): configurations A, B, D, E as data, one builder.

Each configuration lists the output channels of its 3x3 convolutions (padding
1) with "M" for a 2x2 max-pool. The classic classifier (7x7 pooled features,
two 4096-wide layers with dropout) is the default; ``pool_size=1`` and a
smaller ``classifier_width`` give the slim head used for small inputs, and
``width_multiplier`` scales every convolution's channels (0.5 runs a step of
vgg11-digits in 0.44 s against 1.44 s at full width, batch 64 at 48 px on two
AVX2 cores).

Pools round up (``ceil_mode``): at 48 px the last pool meets a 3x3 map, and a
floor-mode pool keeps only its top-left 2x2 window, so the heads never saw the
right and bottom third of the picture at the deepest level (vgg11-digits
version 2 read 0.93-0.96 of the robustness suite's digits). At ImageNet's 224 px
every map is even and the two modes agree.
"""

from __future__ import annotations

from functools import partial

from torch import nn

from .heads import TwoHeadNet, mlp_head
from .registry import register_model

VGG_CONFIGS: dict[str, list[int | str]] = {
    "A": [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "B": [64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "D": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"],
    "E": [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512, "M"],
}
VGG_VARIANTS = {"vgg11": "A", "vgg13": "B", "vgg16": "D", "vgg19": "E"}


def scaled(config: list[int | str], width_multiplier: float) -> list[int | str]:
    return [item if item == "M" else max(1, round(item * width_multiplier)) for item in config]


def make_layers(config: list[int | str], in_channels: int, batch_norm: bool) -> nn.Sequential:
    layers: list[nn.Module] = []
    channels = in_channels
    for item in config:
        if item == "M":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2, ceil_mode=True))
            continue
        layers.append(nn.Conv2d(channels, item, kernel_size=3, padding=1))
        if batch_norm:
            layers.append(nn.BatchNorm2d(item))
        layers.append(nn.ReLU(inplace=True))
        channels = item
    return nn.Sequential(*layers)


def build_vgg(
    config: str,
    batch_norm: bool,
    *,
    num_classes: int,
    in_channels: int,
    input_size: int,
    box_head: bool,
    pool_size: int = 7,
    classifier_width: int = 4096,
    dropout: float = 0.5,
    width_multiplier: float = 1.0,
) -> TwoHeadNet:
    del input_size  # adaptive pooling makes the heads independent of it
    layers = scaled(VGG_CONFIGS[config], width_multiplier)
    out_channels = [c for c in layers if c != "M"][-1]
    backbone = nn.Sequential(
        make_layers(layers, in_channels, batch_norm),
        nn.AdaptiveAvgPool2d(pool_size),
        nn.Flatten(),
    )
    features = out_channels * pool_size * pool_size
    hidden = [classifier_width, classifier_width]
    classifier = mlp_head(features, hidden, num_classes, dropout)
    boxes = mlp_head(features, hidden, 4, dropout) if box_head else None
    return TwoHeadNet(backbone, classifier, boxes)


for _name, _config in VGG_VARIANTS.items():
    register_model(_name, partial(build_vgg, _config, False))
    register_model(f"{_name}_bn", partial(build_vgg, _config, True))
