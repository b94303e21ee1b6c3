"""The interface every ID backbone implements, and the registry that finds one by name."""

from __future__ import annotations

import torch
from torch import nn

BACKBONE_REGISTRY: dict[str, type["Backbone"]] = {}


class Backbone(nn.Module):
    """Maps the F field embeddings of a sample to one vector.

    Subclasses take `(num_fields, embedding_size, **options)`, set `self.output_size`, and
    implement `forward(field_embeddings)` with `field_embeddings` of shape
    `(batch, num_fields, embedding_size)` (multi-valued fields already pooled) returning
    `(batch, output_size)`.
    """

    output_size: int

    def __init__(self, num_fields: int, embedding_size: int):
        super().__init__()
        self.num_fields = num_fields
        self.embedding_size = embedding_size

    def forward(self, field_embeddings: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError


def register_backbone(name: str):
    """Class decorator: `@register_backbone("mynet")` makes `backbone="mynet"` usable in FlipConfig."""

    def wrap(cls: type[Backbone]) -> type[Backbone]:
        if not (isinstance(cls, type) and issubclass(cls, Backbone)):
            raise TypeError(f"@register_backbone({name!r}) expects a Backbone subclass, got {cls!r}.")
        BACKBONE_REGISTRY[name] = cls
        cls.backbone_name = name
        return cls

    return wrap


def available_backbones() -> list[str]:
    return sorted(BACKBONE_REGISTRY)


def build_backbone(name: str, num_fields: int, embedding_size: int, options: dict | None = None) -> Backbone:
    if name not in BACKBONE_REGISTRY:
        raise ValueError(f"Unknown backbone {name!r}. Valid backbones: {', '.join(available_backbones())}.")
    return BACKBONE_REGISTRY[name](num_fields, embedding_size, **(options or {}))


class MLP(nn.Sequential):
    """Linear -> activation -> dropout blocks, shared by the backbones that end in a DNN tower."""

    def __init__(self, input_size: int, hidden_sizes, dropout: float = 0.0, activation: type[nn.Module] = nn.ReLU):
        layers = []
        for size in hidden_sizes:
            layers += [nn.Linear(input_size, size), activation(), nn.Dropout(dropout)]
            input_size = size
        super().__init__(*layers)
        self.output_size = input_size
