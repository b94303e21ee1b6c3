"""xDeepFM: a compressed interaction network (CIN), a linear part and a DNN (Lian et al.,
"xDeepFM: Combining Explicit and Implicit Feature Interactions for Recommender Systems", KDD 2018)."""

import torch
from torch import nn

from .base import DEFAULT_HIDDEN_SIZES, MLP, Backbone, register_backbone


class CompressedInteractionNetwork(nn.Module):
    """Vector-wise explicit interactions of growing degree (paper eqs. 6-7).

    Layer k takes the outer (Hadamard, per embedding dimension) products of the H_{k-1} maps and
    the F input fields and compresses the H_{k-1} * F products to H_k maps with a 1x1 convolution
    (no activation, as in the paper). Each layer's maps are sum-pooled over the embedding
    dimension. With `split_half`, every layer but the last sends half its maps to the output and
    the other half to the next layer.
    """

    def __init__(self, num_fields: int, layer_sizes, split_half: bool = True):
        super().__init__()
        if split_half and any(size % 2 for size in layer_sizes[:-1]):
            raise ValueError(f"split_half needs even CIN layer sizes except the last, got {tuple(layer_sizes)}.")
        self.split_half = split_half
        self.compressions = nn.ModuleList()  # 1x1 convolutions, as Linear over channels-last maps
        self.output_size = 0
        maps = num_fields
        for index, size in enumerate(layer_sizes):
            self.compressions.append(nn.Linear(maps * num_fields, size))
            is_last = index == len(layer_sizes) - 1
            maps = size // 2 if split_half and not is_last else size
            self.output_size += maps

    def forward(self, field_embeddings: torch.Tensor) -> torch.Tensor:
        fields = field_embeddings.transpose(1, 2)  # (batch, d, F): maps on the last axis
        hidden, pooled = fields, []
        for index, compress in enumerate(self.compressions):
            products = torch.einsum("bdh,bdf->bdhf", hidden, fields).flatten(start_dim=2)
            maps = compress(products)
            if self.split_half and index < len(self.compressions) - 1:
                hidden, maps = maps.chunk(2, dim=-1)
            else:
                hidden = maps
            pooled.append(maps.sum(dim=1))
        return torch.cat(pooled, dim=-1)


@register_backbone("xdeepfm")
class XDeepFM(Backbone):
    """`h_id = [sum_f e_f ; CIN(e) ; MLP(flatten(e))]`; the paper's linear part is the first-order
    sum (see `lr`), and the model's Linear head adds the three logits.

    output_size = embedding_size + CIN size + hidden_sizes[-1], where CIN size is
    sum(cin_layer_sizes[:-1]) / 2 + cin_layer_sizes[-1] with split_half, else sum(cin_layer_sizes).
    """

    def __init__(
        self,
        num_fields: int,
        embedding_size: int,
        cin_layer_sizes=(128, 128),
        split_half: bool = True,
        hidden_sizes=DEFAULT_HIDDEN_SIZES,
        dropout: float = 0.1,
    ):
        super().__init__(num_fields, embedding_size)
        self.cin = CompressedInteractionNetwork(num_fields, cin_layer_sizes, split_half)
        self.mlp = MLP(num_fields * embedding_size, hidden_sizes, dropout)
        self.output_size = embedding_size + self.cin.output_size + self.mlp.output_size

    def forward(self, field_embeddings: torch.Tensor) -> torch.Tensor:
        first_order = field_embeddings.sum(dim=1)
        deep = self.mlp(field_embeddings.flatten(start_dim=1))
        return torch.cat([first_order, self.cin(field_embeddings), deep], dim=-1)
