"""One place that maps an architecture name to its builder.

Training, export and the tests all go through ``create_model`` and
``list_models``, so a newly registered architecture is trained, exported and
tested the moment it is added.
"""

from __future__ import annotations

from typing import Callable

from .heads import TwoHeadNet

Builder = Callable[..., TwoHeadNet]
_BUILDERS: dict[str, Builder] = {}


def register_model(name: str, builder: Builder) -> None:
    if name in _BUILDERS:
        raise ValueError(f"architecture {name!r} is already registered")
    _BUILDERS[name] = builder


def list_models() -> list[str]:
    return sorted(_BUILDERS)


def create_model(
    name: str,
    *,
    num_classes: int,
    in_channels: int,
    input_size: int,
    box_head: bool = True,
    **options,
) -> TwoHeadNet:
    """Build architecture ``name`` for square ``input_size`` inputs.

    ``options`` are architecture-specific (for example VGG's
    ``classifier_width``); unknown options raise ``TypeError``.
    """
    try:
        builder = _BUILDERS[name]
    except KeyError:
        raise KeyError(f"unknown architecture {name!r}; known: {', '.join(list_models())}") from None
    return builder(
        num_classes=num_classes, in_channels=in_channels, input_size=input_size, box_head=box_head, **options
    )
