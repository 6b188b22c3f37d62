"""Fully connected backbones for rows of a table (and any flat vector): a plain MLP, as TVAE's encoder and
decoder are, CTGAN's residual generator block, and TabDDPM's denoiser, an MLP told the diffusion timestep."""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from genforge.config import Range
from genforge.nets.embeddings import TimestepEmbedding

WIDTH = Range(1, 65536)  # a hidden layer's width


def check_widths(name: str, widths: Sequence[int]) -> None:
    """A one-line ConfigError naming ``name`` (e.g. "model.hidden") when a hidden width is not an integer in range."""
    for width in widths:
        WIDTH.check(name, width, integer=True)


class MLP(nn.Sequential):
    """in_dim -> hidden[0] -> ... -> out_dim, ReLU between the layers (none after the last)."""

    def __init__(self, in_dim: int, hidden: Sequence[int], out_dim: int):
        layers: list[nn.Module] = []
        width = in_dim
        for h in hidden:
            layers += [nn.Linear(width, h), nn.ReLU()]
            width = h
        layers.append(nn.Linear(width, out_dim))
        super().__init__(*layers)


class Residual(nn.Module):
    """CTGAN's generator block: Linear -> BatchNorm -> ReLU, concatenated to its input, so every block sees
    the latent and everything computed before it."""

    def __init__(self, in_dim: int, out_dim: int):
        super().__init__()
        self.fc = nn.Linear(in_dim, out_dim)
        self.bn = nn.BatchNorm1d(out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([torch.relu(self.bn(self.fc(x))), x], dim=1)


class TimestepMLP(nn.Module):
    """TabDDPM's denoiser (MLPDiffusion, Kotelnikov et al. 2023): the input projected to ``time_dim`` plus the
    timestep's embedding (sinusoidal features through a small MLP), then an ``MLP`` to ``out_dim``. The timestep
    enters once, added to the projected input; the MLP has no dropout, as TabDDPM's tuned runs have none."""

    def __init__(self, in_dim: int, hidden: Sequence[int], out_dim: int, time_dim: int = 128):
        super().__init__()
        self.proj = nn.Linear(in_dim, time_dim)
        self.time = TimestepEmbedding(time_dim, time_dim)
        self.mlp = MLP(time_dim, hidden, out_dim)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """``x`` (B, in_dim) at timesteps ``t`` (B,) -> (B, out_dim)."""
        return self.mlp(self.proj(x) + self.time(t))
