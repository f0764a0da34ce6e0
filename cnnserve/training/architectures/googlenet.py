"""GoogLeNet (Inception v1, Szegedy et al. 2014) as data and one builder.

``INCEPTION`` is the paper's Table 1, one row per module: 1x1 branch; 3x3 reduce, 3x3; 5x5 reduce, 5x5; pool
projection; "M" marks the 3x3 stride-2 max-pools between groups. Every convolution is followed by batch
normalization (as in torchvision's ``googlenet``, which the paper predates) and ReLU. With ``fifth_kernel=3`` the
"5x5" branches use 3x3 kernels, as torchvision's definition does (its source calls it a known bug kept for
compatibility): that configuration has torchvision's 6,624,904 parameters for 1000 classes without auxiliary
heads; the paper's 5x5 kernels (the default) make it 7,005,832.

``aux_classifiers=True`` adds the paper's two auxiliary heads (after 4a and 4d: 5x5/3 average pool, 1x1 conv to
128, 1024-wide layer, 70% dropout); they run only in training, and their logits are left on
``backbone.aux_logits`` for the training loop to weigh in (0.3 each, as the paper does).

As in alexnet.py, a max-pool is left out where the map is smaller than its window, so small inputs build too.
"""

from __future__ import annotations

import torch
from torch import nn

from .heads import TwoHeadNet, mlp_head
from .registry import register_model

INCEPTION: list[tuple[int, int, int, int, int, int] | str] = [
    (64, 96, 128, 16, 32, 32),  # 3a
    (128, 128, 192, 32, 96, 64),  # 3b
    "M",
    (192, 96, 208, 16, 48, 64),  # 4a
    (160, 112, 224, 24, 64, 64),  # 4b
    (128, 128, 256, 24, 64, 64),  # 4c
    (112, 144, 288, 32, 64, 64),  # 4d
    (256, 160, 320, 32, 128, 128),  # 4e
    "M",
    (256, 160, 320, 32, 128, 128),  # 5a
    (384, 192, 384, 48, 128, 128),  # 5b
]
AUX_AFTER = (3, 6)  # after 4a and after 4d (indices into INCEPTION)


def conv(in_channels: int, out_channels: int, kernel: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, kernel, stride, kernel // 2, bias=False),
                         nn.BatchNorm2d(out_channels, eps=1e-3), nn.ReLU(inplace=True))


class Inception(nn.Module):
    def __init__(self, in_channels: int, widths: tuple[int, ...], fifth_kernel: int):
        super().__init__()
        one, three_reduce, three, five_reduce, five, pool_projection = widths
        self.branches = nn.ModuleList([
            conv(in_channels, one, 1),
            nn.Sequential(conv(in_channels, three_reduce, 1), conv(three_reduce, three, 3)),
            nn.Sequential(conv(in_channels, five_reduce, 1), conv(five_reduce, five, fifth_kernel)),
            nn.Sequential(nn.MaxPool2d(3, 1, 1, ceil_mode=True), conv(in_channels, pool_projection, 1)),
        ])
        self.out_channels = one + three + five + pool_projection

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([branch(x) for branch in self.branches], 1)


class AuxiliaryHead(nn.Module):
    def __init__(self, in_channels: int, num_classes: int):
        super().__init__()
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(4), conv(in_channels, 128, 1), nn.Flatten(),
                                  nn.Linear(128 * 16, 1024), nn.ReLU(inplace=True), nn.Dropout(0.7),
                                  nn.Linear(1024, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(x)


def pool_if_fits(size: int) -> tuple[nn.Module, int]:
    """A 3x3 stride-2 max-pool (rounding up) where the map has room for it; nothing where it has not."""
    if size < 3:
        return nn.Identity(), size
    return nn.MaxPool2d(3, 2, ceil_mode=True), -(-(size - 3) // 2) + 1


class GoogLeNetBackbone(nn.Module):
    def __init__(self, in_channels: int, input_size: int, num_classes: int, fifth_kernel: int, aux_classifiers: bool):
        super().__init__()
        size = (input_size + 1) // 2  # the 7x7 stride-2 stem
        stem: list[nn.Module] = [conv(in_channels, 64, 7, 2)]
        pool, size = pool_if_fits(size)
        stem += [pool, conv(64, 64, 1), conv(64, 192, 3)]
        pool, size = pool_if_fits(size)
        self.stem = nn.Sequential(*stem, pool)
        self.stages = nn.ModuleList()
        self.aux = nn.ModuleDict()
        channels = 192
        for index, row in enumerate(INCEPTION):
            if row == "M":
                pool, size = pool_if_fits(size)
                self.stages.append(pool)
                continue
            module = Inception(channels, row, fifth_kernel)
            self.stages.append(module)
            channels = module.out_channels
            if aux_classifiers and index in AUX_AFTER:
                self.aux[str(index)] = AuxiliaryHead(channels, num_classes)
        self.out_channels = channels
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(0.4))
        self.aux_logits: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        self.aux_logits = []
        for index, stage in enumerate(self.stages):
            x = stage(x)
            if self.training and str(index) in self.aux:
                self.aux_logits.append(self.aux[str(index)](x))
        return self.pool(x)


def build_googlenet(
    *, num_classes: int, in_channels: int, input_size: int, box_head: bool, fifth_kernel: int = 5,
    aux_classifiers: bool = False, box_hidden: int = 256,
) -> TwoHeadNet:
    backbone = GoogLeNetBackbone(in_channels, input_size, num_classes, fifth_kernel, aux_classifiers)
    classifier = nn.Linear(backbone.out_channels, num_classes)
    boxes = mlp_head(backbone.out_channels, [box_hidden], 4, 0.0) if box_head else None
    return TwoHeadNet(backbone, classifier, boxes)


register_model("googlenet", build_googlenet)
