"""The interface every ID backbone implements, and the registry that finds one by name."""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

BACKBONE_REGISTRY: dict[str, type["Backbone"]] = {}

# The FLIP reference MLP tower (300-300-128), the default of every backbone with a DNN part.
DEFAULT_HIDDEN_SIZES = (300, 300, 128)


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

    def reset_parameters(self) -> None:
        """Re-initialise every weight of the backbone.

        `PreTrainedModel` calls this for weights a checkpoint does not hold (they are created on
        the meta device first), so a layer with its own `nn.Parameter`s defines
        `reset_parameters()`; layers without one are searched for sub-layers that have one.
        """

        def reset(module: nn.Module) -> None:
            for child in module.children():
                if hasattr(child, "reset_parameters"):
                    child.reset_parameters()
                else:
                    reset(child)

        reset(self)


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


def fm_interaction(field_embeddings: torch.Tensor) -> torch.Tensor:
    """FM's second-order term as a vector (Rendle, ICDM 2010): sum over field pairs i<j of e_i * e_j.

    Computed in O(F d) as 0.5 * ((sum_i e_i)^2 - sum_i e_i^2); `(batch, F, d)` -> `(batch, d)`.
    Summing this vector gives FM's pairwise term; a Linear head on it learns a weighted inner product.
    """
    square_of_sum = field_embeddings.sum(dim=1).square()
    sum_of_squares = field_embeddings.square().sum(dim=1)
    return 0.5 * (square_of_sum - sum_of_squares)


class CrossNetworkBackbone(Backbone):
    """A cross network over the flattened embeddings x0, combined with an MLP tower (DCN, DCN-V2).

    `structure="parallel"` returns `[cross(x0) ; mlp(x0)]`; `"stacked"` returns `mlp(cross(x0))`.
    `cross_layer(input_size)` builds one layer whose `forward(x0, x_l)` returns x_{l+1}, residual
    included. `hidden_sizes=()` makes the tower the identity (stacked: the cross network alone).
    """

    def __init__(
        self,
        num_fields: int,
        embedding_size: int,
        cross_layer: Callable[[int], nn.Module],
        num_cross_layers: int,
        structure: str,
        hidden_sizes,
        dropout: float,
    ):
        super().__init__(num_fields, embedding_size)
        if structure not in ("parallel", "stacked"):
            raise ValueError(f"structure must be 'parallel' or 'stacked', got {structure!r}.")
        input_size = num_fields * embedding_size
        self.structure = structure
        self.cross_layers = nn.ModuleList(cross_layer(input_size) for _ in range(num_cross_layers))
        self.mlp = MLP(input_size, hidden_sizes, dropout)
        self.output_size = self.mlp.output_size + (input_size if structure == "parallel" else 0)

    def cross(self, x0: torch.Tensor) -> torch.Tensor:
        x = x0
        for layer in self.cross_layers:
            x = layer(x0, x)
        return x

    def forward(self, field_embeddings: torch.Tensor) -> torch.Tensor:
        x0 = field_embeddings.flatten(start_dim=1)
        if self.structure == "stacked":
            return self.mlp(self.cross(x0))
        return torch.cat([self.cross(x0), self.mlp(x0)], dim=-1)
