"""Wide & Deep: a linear (wide) model joined with a DNN (Cheng et al., "Wide & Deep Learning for
Recommender Systems", DLRS 2016)."""

import torch

from .base import DEFAULT_HIDDEN_SIZES, MLP, Backbone, register_backbone


@register_backbone("widedeep")
class WideDeep(Backbone):
    """`h_id = [sum_f e_f ; MLP(flatten(e))]`; output_size = embedding_size + hidden_sizes[-1].

    The wide part is the first-order sum (see `lr`); the paper's hand-made cross-product features
    are left to the deep part. The model's Linear head adds the wide and deep logits.
    """

    def __init__(self, num_fields: int, embedding_size: int, hidden_sizes=DEFAULT_HIDDEN_SIZES, dropout: float = 0.1):
        super().__init__(num_fields, embedding_size)
        self.mlp = MLP(num_fields * embedding_size, hidden_sizes, dropout)
        self.output_size = embedding_size + self.mlp.output_size

    def forward(self, field_embeddings: torch.Tensor) -> torch.Tensor:
        wide = field_embeddings.sum(dim=1)
        return torch.cat([wide, self.mlp(field_embeddings.flatten(start_dim=1))], dim=-1)
