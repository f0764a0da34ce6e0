"""ResNet (He et al. 2016): a block type plus four stage depths, one builder.

BasicBlock (two 3x3 convolutions) for ResNet-18/34, Bottleneck (1x1, 3x3, 1x1,
expansion 4, stride on the 3x3) for ResNet-50. A stage that changes the
resolution or the width gets a 1x1 strided projection shortcut.
"""

from __future__ import annotations

from functools import partial

import torch
from torch import nn

from .heads import TwoHeadNet, mlp_head
from .registry import register_model


def conv_bn(in_ch: int, out_ch: int, kernel: int, stride: int = 1) -> list[nn.Module]:
    return [
        nn.Conv2d(in_ch, out_ch, kernel_size=kernel, stride=stride, padding=kernel // 2, bias=False),
        nn.BatchNorm2d(out_ch),
    ]


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, in_ch: int, width: int, stride: int):
        super().__init__()
        self.body = nn.Sequential(*conv_bn(in_ch, width, 3, stride), nn.ReLU(inplace=True), *conv_bn(width, width, 3))
        self.shortcut = projection(in_ch, width * self.expansion, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.body(x) + self.shortcut(x))


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, in_ch: int, width: int, stride: int):
        super().__init__()
        out_ch = width * self.expansion
        self.body = nn.Sequential(
            *conv_bn(in_ch, width, 1),
            nn.ReLU(inplace=True),
            *conv_bn(width, width, 3, stride),
            nn.ReLU(inplace=True),
            *conv_bn(width, out_ch, 1),
        )
        self.shortcut = projection(in_ch, out_ch, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.body(x) + self.shortcut(x))


def projection(in_ch: int, out_ch: int, stride: int) -> nn.Module:
    """Identity when shapes match, else a 1x1 strided convolution with batch norm."""
    if stride == 1 and in_ch == out_ch:
        return nn.Identity()
    return nn.Sequential(*conv_bn(in_ch, out_ch, 1, stride))


RESNET_VARIANTS: dict[str, tuple[type[BasicBlock] | type[Bottleneck], list[int]]] = {
    "resnet18": (BasicBlock, [2, 2, 2, 2]),
    "resnet34": (BasicBlock, [3, 4, 6, 3]),
    "resnet50": (Bottleneck, [3, 4, 6, 3]),
}
STAGE_WIDTHS = [64, 128, 256, 512]


def build_resnet(
    block: type[BasicBlock] | type[Bottleneck],
    depths: list[int],
    *,
    num_classes: int,
    in_channels: int,
    input_size: int,
    box_head: bool,
    box_hidden: int = 256,
) -> TwoHeadNet:
    del input_size  # global average pooling makes the heads independent of it
    layers: list[nn.Module] = [
        *conv_bn(in_channels, 64, 7, stride=2),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(kernel_size=3, stride=2, padding=1),
    ]
    channels = 64
    for stage, (width, depth) in enumerate(zip(STAGE_WIDTHS, depths)):
        for index in range(depth):
            stride = 2 if stage > 0 and index == 0 else 1
            layers.append(block(channels, width, stride))
            channels = width * block.expansion
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
    backbone = nn.Sequential(*layers)
    classifier = nn.Linear(channels, num_classes)
    boxes = mlp_head(channels, [box_hidden], 4, dropout=0.0) if box_head else None
    return TwoHeadNet(backbone, classifier, boxes)


for _name, (_block, _depths) in RESNET_VARIANTS.items():
    register_model(_name, partial(build_resnet, _block, _depths))
