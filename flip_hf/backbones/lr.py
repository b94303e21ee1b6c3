"""LR: logistic regression, the first-order baseline (e.g. McMahan et al., "Ad Click Prediction:
a View from the Trenches", KDD 2013)."""

import torch

from .base import Backbone, register_backbone


@register_backbone("lr")
class LR(Backbone):
    """`h_id = sum_f e_f`, a parameter-free d-dim vector; output_size = embedding_size.

    The model's Linear head on it gives `b + sum_f <a, e_f>`: every feature value gets its own
    scalar weight `<a, e_v>`, which is exactly LR. It models no interaction between fields.
    """

    def __init__(self, num_fields: int, embedding_size: int):
        super().__init__(num_fields, embedding_size)
        self.output_size = embedding_size

    def forward(self, field_embeddings: torch.Tensor) -> torch.Tensor:
        return field_embeddings.sum(dim=1)
