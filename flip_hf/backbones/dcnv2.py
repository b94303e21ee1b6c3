"""DCN-V2: Deep & Cross Network with full-matrix or low-rank mixture-of-experts cross layers
(Wang et al., "DCN V2: Improved Deep & Cross Network and Practical Lessons for Web-scale
Learning to Rank Systems", WWW 2021). The FLIP reference ID backbone."""

import torch
from torch import nn

from .base import DEFAULT_HIDDEN_SIZES, CrossNetworkBackbone, register_backbone


class DCNv2MatrixCrossLayer(nn.Module):
    """`x_{l+1} = x0 * (W x_l + b) + x_l` with a full D x D matrix W (paper eq. 1)."""

    def __init__(self, input_size: int):
        super().__init__()
        self.linear = nn.Linear(input_size, input_size)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.xavier_uniform_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)

    def forward(self, x0: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return x0 * self.linear(x) + x


class DCNv2MixtureCrossLayer(nn.Module):
    """Mixture of low-rank experts (paper eq. 4), all experts computed at once:

    `x_{l+1} = sum_i G_i(x_l) * x0 * (U_i g(C_i g(V_i^T x_l)) + b) + x_l`,
    with U_i, V_i of shape D x r, C_i of shape r x r, g = tanh (or identity when
    `activation=None`), and G = softmax over experts of a linear gate on x_l.
    """

    def __init__(self, input_size: int, low_rank: int = 32, num_experts: int = 4, activation: str | None = "tanh"):
        super().__init__()
        if activation not in ("tanh", None):
            raise ValueError(f"activation must be 'tanh' or None, got {activation!r}.")
        self.activation = nn.Tanh() if activation == "tanh" else nn.Identity()
        self.U = nn.Parameter(torch.empty(num_experts, input_size, low_rank))
        self.V = nn.Parameter(torch.empty(num_experts, input_size, low_rank))
        self.C = nn.Parameter(torch.empty(num_experts, low_rank, low_rank))
        self.bias = nn.Parameter(torch.empty(input_size))
        self.gate = nn.Linear(input_size, num_experts, bias=False)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for weights in (self.U, self.V, self.C):
            for expert in weights.data:  # Xavier per expert matrix, not over the stacked tensor's fans.
                nn.init.xavier_normal_(expert)
        nn.init.zeros_(self.bias)
        self.gate.reset_parameters()

    def forward(self, x0: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        low = self.activation(torch.einsum("bd,edr->ber", x, self.V))
        low = self.activation(torch.einsum("ers,bes->ber", self.C, low))
        gates = self.gate(x).softmax(dim=-1)
        # The gates sum to one, so sum_i G_i * x0 * (U_i z_i + b) = x0 * (sum_i G_i U_i z_i + b):
        # gating the low-rank codes first makes the expert mixture one (E * r) x D matmul.
        mixed = torch.einsum("ber,edr->bd", gates.unsqueeze(-1) * low, self.U)
        return x0 * (mixed + self.bias) + x


@register_backbone("dcnv2")
class DCNv2(CrossNetworkBackbone):
    """Cross network over D = num_fields * embedding_size inputs with an MLP tower.

    Defaults are the FLIP reference: parallel, 2 cross layers, 4 experts of rank 32, MLP
    300-300-128, so `h_id = [cross output ; MLP output]`. `low_rank=None` gives full-matrix
    layers (`num_experts` and `expert_activation` then unused).
    output_size: parallel D + hidden_sizes[-1]; stacked hidden_sizes[-1] (D if hidden_sizes=()).
    """

    def __init__(
        self,
        num_fields: int,
        embedding_size: int,
        num_cross_layers: int = 2,
        structure: str = "parallel",
        low_rank: int | None = 32,
        num_experts: int = 4,
        expert_activation: str | None = "tanh",
        hidden_sizes=DEFAULT_HIDDEN_SIZES,
        dropout: float = 0.1,
    ):
        cross_layer = (
            DCNv2MatrixCrossLayer
            if low_rank is None
            else lambda input_size: DCNv2MixtureCrossLayer(input_size, low_rank, num_experts, expert_activation)
        )
        super().__init__(num_fields, embedding_size, cross_layer, num_cross_layers, structure, hidden_sizes, dropout)
