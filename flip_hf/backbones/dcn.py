"""DCN: Deep & Cross Network with rank-one (vector) cross layers (Wang et al., "Deep & Cross
Network for Ad Click Predictions", ADKDD 2017)."""

import torch
from torch import nn

from .base import DEFAULT_HIDDEN_SIZES, CrossNetworkBackbone, register_backbone


class DCNCrossLayer(nn.Module):
    """`x_{l+1} = x0 * (x_l . w) + b + x_l`: one more degree of explicit crossing, O(D) parameters."""

    def __init__(self, input_size: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(input_size))
        self.bias = nn.Parameter(torch.empty(input_size))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.xavier_normal_(self.weight.view(-1, 1))
        nn.init.zeros_(self.bias)

    def forward(self, x0: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return x0 * (x @ self.weight).unsqueeze(-1) + self.bias + x


@register_backbone("dcn")
class DCN(CrossNetworkBackbone):
    """Cross network over D = num_fields * embedding_size inputs with an MLP tower.

    output_size: parallel D + hidden_sizes[-1]; stacked hidden_sizes[-1] (D if hidden_sizes=()).
    """

    def __init__(
        self,
        num_fields: int,
        embedding_size: int,
        num_cross_layers: int = 2,
        structure: str = "parallel",
        hidden_sizes=DEFAULT_HIDDEN_SIZES,
        dropout: float = 0.1,
    ):
        super().__init__(num_fields, embedding_size, DCNCrossLayer, num_cross_layers, structure, hidden_sizes, dropout)
