"""FM: factorization machine (Rendle, "Factorization Machines", ICDM 2010)."""

import torch

from .base import Backbone, fm_interaction, register_backbone


@register_backbone("fm")
class FM(Backbone):
    """`h_id = [sum_f e_f ; sum_{i<j} e_i * e_j]`, parameter-free; output_size = 2 * embedding_size.

    The model's Linear head turns the first half into FM's first-order term (as in `lr`) and the
    second into its pairwise term, with a learned weight per embedding dimension.
    """

    def __init__(self, num_fields: int, embedding_size: int):
        super().__init__(num_fields, embedding_size)
        self.output_size = 2 * embedding_size

    def forward(self, field_embeddings: torch.Tensor) -> torch.Tensor:
        return torch.cat([field_embeddings.sum(dim=1), fm_interaction(field_embeddings)], dim=-1)
