"""DNN: an MLP over the concatenated field embeddings, the plain deep CTR baseline
(e.g. Covington et al., "Deep Neural Networks for YouTube Recommendations", RecSys 2016)."""

import torch

from .base import DEFAULT_HIDDEN_SIZES, MLP, Backbone, register_backbone


@register_backbone("dnn")
class DNN(Backbone):
    """`h_id = MLP(flatten(e))`; output_size = hidden_sizes[-1]."""

    def __init__(self, num_fields: int, embedding_size: int, hidden_sizes=DEFAULT_HIDDEN_SIZES, dropout: float = 0.1):
        super().__init__(num_fields, embedding_size)
        self.mlp = MLP(num_fields * embedding_size, hidden_sizes, dropout)
        self.output_size = self.mlp.output_size

    def forward(self, field_embeddings: torch.Tensor) -> torch.Tensor:
        return self.mlp(field_embeddings.flatten(start_dim=1))
