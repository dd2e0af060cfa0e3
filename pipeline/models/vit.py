"""ViT-B/16 encoder on the 1/16 CNN map of the TransUNet hybrid (Chen et al. 2021).

Patch embedding is a 1×1 convolution on the ResNet features (patch size 1 on the 1/16 map,
i.e. 16×16 pixels), learned absolute position embeddings, pre-norm transformer blocks and a
final LayerNorm, as in the reference code. Position embeddings are built for the grid of
``img_size`` and bicubically interpolated when the input grid differs, so any input whose
sides are multiples of 16 is accepted.
"""

from __future__ import annotations

import logging

import torch
import torch.nn.functional as F
from torch import Tensor, nn

logger = logging.getLogger(__name__)


class PatchEmbedding(nn.Module):
    """1×1 conv to ``hidden`` channels, flatten to tokens, add position embeddings.

    Args:
        in_channels: channels of the CNN map.
        hidden: token width.
        grid: (rows, cols) of the map at the build size; position embeddings have that grid.
        dropout: dropout on the embedded tokens.
    """

    def __init__(self, in_channels: int, hidden: int, grid: tuple[int, int], dropout: float):
        super().__init__()
        self.grid = grid
        self.proj = nn.Conv2d(in_channels, hidden, kernel_size=1)
        self.position = nn.Parameter(torch.zeros(1, grid[0] * grid[1], hidden))
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        """(B, Cin, h, w) -> tokens (B, h·w, hidden)."""
        x = self.proj(x)
        rows, cols = x.shape[-2:]
        tokens = x.flatten(2).transpose(1, 2)  # (B, h·w, hidden)
        return self.dropout(tokens + self._position_for(rows, cols))

    def _position_for(self, rows: int, cols: int) -> Tensor:
        if (rows, cols) == self.grid:
            return self.position
        hidden = self.position.shape[-1]
        grid = self.position.reshape(1, *self.grid, hidden).permute(0, 3, 1, 2)  # (1, D, gh, gw)
        grid = F.interpolate(grid, size=(rows, cols), mode="bicubic", align_corners=False)
        return grid.permute(0, 2, 3, 1).reshape(1, rows * cols, hidden)  # (1, h·w, D)


class Attention(nn.Module):
    """Multi-head self-attention with separate query/key/value/out projections."""

    def __init__(self, hidden: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.heads = heads
        self.query = nn.Linear(hidden, hidden)
        self.key = nn.Linear(hidden, hidden)
        self.value = nn.Linear(hidden, hidden)
        self.out = nn.Linear(hidden, hidden)
        self.dropout = dropout

    def _split(self, x: Tensor) -> Tensor:
        b, n, d = x.shape
        return x.reshape(b, n, self.heads, d // self.heads).transpose(1, 2)  # (B, nh, N, hs)

    def forward(self, x: Tensor) -> Tensor:
        """(B, N, D) -> (B, N, D)."""
        b, n, d = x.shape
        q, k, v = self._split(self.query(x)), self._split(self.key(x)), self._split(self.value(x))
        p = self.dropout if self.training else 0.0
        y = F.scaled_dot_product_attention(q, k, v, dropout_p=p)  # (B, nh, N, hs)
        return self.out(y.transpose(1, 2).reshape(b, n, d))  # (B, N, D)


class Block(nn.Module):
    """Pre-norm transformer block: x + Attn(LN(x)), then x + MLP(LN(x)), GELU MLP."""

    def __init__(self, hidden: int, heads: int, mlp_dim: int, dropout: float, attn_dropout: float):
        super().__init__()
        self.attention_norm = nn.LayerNorm(hidden, eps=1e-6)
        self.attention = Attention(hidden, heads, attn_dropout)
        self.ffn_norm = nn.LayerNorm(hidden, eps=1e-6)
        self.mlp = nn.Sequential(
            nn.Linear(hidden, mlp_dim),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.Linear(mlp_dim, hidden),
            nn.Dropout(dropout),
        )

    def forward(self, x: Tensor) -> Tensor:
        """(B, N, D) -> (B, N, D)."""
        x = x + self.attention(self.attention_norm(x))
        return x + self.mlp(self.ffn_norm(x))


class VisionTransformer(nn.Module):
    """Patch embedding + ``layers`` blocks + final LayerNorm; tokens back to a map.

    Args:
        in_channels: channels of the CNN map fed in.
        grid: the map's (rows, cols) at the build size.
        hidden, layers, heads, mlp_dim: ViT width, depth, heads and MLP width
            (768, 12, 12, 3072 for ViT-B).
        dropout, attn_dropout: dropout rates (0.1 and 0.0 in the reference).
    """

    def __init__(
        self,
        in_channels: int,
        grid: tuple[int, int],
        hidden: int,
        layers: int,
        heads: int,
        mlp_dim: int,
        dropout: float,
        attn_dropout: float,
    ) -> None:
        super().__init__()
        self.embeddings = PatchEmbedding(in_channels, hidden, grid, dropout)
        self.blocks = nn.ModuleList(
            Block(hidden, heads, mlp_dim, dropout, attn_dropout) for _ in range(layers)
        )
        self.norm = nn.LayerNorm(hidden, eps=1e-6)
        self.apply(_init_linear)

    def forward(self, x: Tensor) -> Tensor:
        """CNN map (B, Cin, h, w) -> encoded map (B, hidden, h, w)."""
        b, _, rows, cols = x.shape
        tokens = self.embeddings(x)
        for block in self.blocks:
            tokens = block(tokens)
        tokens = self.norm(tokens)  # (B, h·w, D)
        return tokens.transpose(1, 2).reshape(b, -1, rows, cols)  # (B, D, h, w)


def _init_linear(module: nn.Module) -> None:
    """Xavier-uniform weights, near-zero biases: the reference ViT initialisation."""
    if isinstance(module, nn.Linear) and not module.weight.is_meta:  # meta: counting only
        nn.init.xavier_uniform_(module.weight)
        nn.init.normal_(module.bias, std=1e-6)
