"""AutoInt: stacked multi-head self-attention over fields (Song et al., "AutoInt: Automatic
Feature Interaction Learning via Self-Attentive Neural Networks", CIKM 2019)."""

import torch
from torch import nn

from .base import MLP, Backbone, register_backbone


class AutoIntAttentionLayer(nn.Module):
    """`ReLU(MultiHeadSelfAttention(e) + W_res e)` over the field axis (paper eqs. 5-8).

    Attention logits are scaled by 1/sqrt(head size), as in FuxiCTR's `use_scale` option.
    """

    def __init__(self, input_size: int, attention_size: int, num_heads: int):
        super().__init__()
        if attention_size % num_heads:
            raise ValueError(f"attention_size ({attention_size}) must be divisible by num_heads ({num_heads}).")
        self.num_heads = num_heads
        self.qkv = nn.Linear(input_size, 3 * attention_size, bias=False)
        self.residual = nn.Linear(input_size, attention_size, bias=False)

    def forward(self, fields: torch.Tensor) -> torch.Tensor:
        batch, num_fields, _ = fields.shape
        # (batch, F, 3 * A) -> three (batch, heads, F, A / heads) tensors.
        query, key, value = self.qkv(fields).view(batch, num_fields, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)
        attended = nn.functional.scaled_dot_product_attention(query, key, value)
        attended = attended.transpose(1, 2).reshape(batch, num_fields, -1)
        return torch.relu(attended + self.residual(fields))


@register_backbone("autoint")
class AutoInt(Backbone):
    """`h_id = flatten(attention output)`, or `[that ; MLP(flatten(e))]` (AutoInt+) when
    `hidden_sizes` is non-empty.

    output_size = num_fields * attention_size (+ hidden_sizes[-1] with the MLP).
    """

    def __init__(
        self,
        num_fields: int,
        embedding_size: int,
        num_layers: int = 3,
        num_heads: int = 2,
        attention_size: int = 64,
        hidden_sizes=(),
        dropout: float = 0.1,
    ):
        super().__init__(num_fields, embedding_size)
        sizes = [embedding_size] + [attention_size] * num_layers
        self.attention_layers = nn.ModuleList(
            AutoIntAttentionLayer(size_in, size_out, num_heads) for size_in, size_out in zip(sizes, sizes[1:])
        )
        self.mlp = MLP(num_fields * embedding_size, hidden_sizes, dropout) if hidden_sizes else None
        self.output_size = num_fields * sizes[-1] + (self.mlp.output_size if self.mlp is not None else 0)

    def forward(self, field_embeddings: torch.Tensor) -> torch.Tensor:
        fields = field_embeddings
        for layer in self.attention_layers:
            fields = layer(fields)
        attention_vector = fields.flatten(start_dim=1)
        if self.mlp is None:
            return attention_vector
        return torch.cat([attention_vector, self.mlp(field_embeddings.flatten(start_dim=1))], dim=-1)
