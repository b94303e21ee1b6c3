"""DeepFM: an FM and a DNN sharing the embeddings (Guo et al., "DeepFM: A Factorization-Machine
based Neural Network for CTR Prediction", IJCAI 2017)."""

import torch

from .base import DEFAULT_HIDDEN_SIZES, MLP, Backbone, fm_interaction, register_backbone


@register_backbone("deepfm")
class DeepFM(Backbone):
    """`h_id = [sum_f e_f ; sum_{i<j} e_i * e_j ; MLP(flatten(e))]`.

    output_size = 2 * embedding_size + hidden_sizes[-1]. The paper adds the FM and DNN logits;
    here the model's Linear head does that sum over the concatenated vector.
    """

    def __init__(self, num_fields: int, embedding_size: int, hidden_sizes=DEFAULT_HIDDEN_SIZES, dropout: float = 0.1):
        super().__init__(num_fields, embedding_size)
        self.mlp = MLP(num_fields * embedding_size, hidden_sizes, dropout)
        self.output_size = 2 * embedding_size + self.mlp.output_size

    def forward(self, field_embeddings: torch.Tensor) -> torch.Tensor:
        first_order = field_embeddings.sum(dim=1)
        deep = self.mlp(field_embeddings.flatten(start_dim=1))
        return torch.cat([first_order, fm_interaction(field_embeddings), deep], dim=-1)
