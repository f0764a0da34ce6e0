"""The settings that produce each committed model, as data.

``python -m training train --recipe NAME`` trains, exports and writes the card
for one of them; ``make models`` runs all three. Any flag given on the command
line overrides the recipe's value, and the card records the resolved settings.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Recipe:
    arch: str
    channels: int
    input_size: int
    epochs: int
    batch_size: int = 64
    lr: float = 2e-3
    box_weight: float = 2.0
    copies_per_epoch: int = 4
    options: dict = field(default_factory=dict)


RECIPES: dict[str, Recipe] = {
    "lenet5-digits": Recipe(
        arch="lenet5", channels=1, input_size=32, epochs=80, lr=3e-3, copies_per_epoch=8, box_weight=1.0
    ),
    "resnet18-digits": Recipe(arch="resnet18", channels=3, input_size=64, epochs=14, lr=2e-3),
    "vgg11-digits": Recipe(
        arch="vgg11_bn",
        channels=3,
        input_size=64,
        epochs=10,
        lr=1e-3,
        copies_per_epoch=3,
        options={"pool_size": 1, "classifier_width": 256, "dropout": 0.1},
    ),
}
