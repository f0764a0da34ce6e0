"""The two heads every backbone ends in, and the module that joins them.

A backbone maps images to a flat feature vector; the classifier head turns it
into class logits and the box head into four numbers in [0, 1]
(x1, y1, x2, y2, normalized to the input image). Keeping the heads apart from
the backbones is what lets one training loop and one exporter serve every
architecture.
"""

from __future__ import annotations

import torch
from torch import nn


def mlp_head(in_features: int, hidden: list[int], out_features: int, dropout: float) -> nn.Sequential:
    """Linear layers with ReLU (and dropout when asked) between them."""
    layers: list[nn.Module] = []
    width = in_features
    for h in hidden:
        layers += [nn.Linear(width, h), nn.ReLU(inplace=True)]
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        width = h
    layers.append(nn.Linear(width, out_features))
    return nn.Sequential(*layers)


class TwoHeadNet(nn.Module):
    """Backbone + classifier head + optional box head.

    ``forward`` returns ``(logits, boxes)``; ``boxes`` is None when the model
    was built without a box head (the classic classification-only form used to
    check parameter counts against the papers).
    """

    def __init__(self, backbone: nn.Module, classifier: nn.Module, box_head: nn.Module | None):
        super().__init__()
        self.backbone = backbone
        self.classifier = classifier
        self.box_head = box_head

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        features = self.backbone(x)
        logits = self.classifier(features)
        boxes = torch.sigmoid(self.box_head(features)) if self.box_head is not None else None
        return logits, boxes
