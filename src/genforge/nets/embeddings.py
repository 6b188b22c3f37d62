"""Embeddings of scalars (diffusion timesteps, noise levels, positions) that networks condition on."""

from __future__ import annotations

import math

import torch
from torch import nn


def sinusoidal_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Transformer-style sin/cos features of ``t`` (shape (B,)), returned as float32 (B, dim).

    ``t`` may be integer timesteps or continuous values (e.g. log-sigma), so samplers that work in
    continuous time can reuse the same network. Frequencies go from 1 down to 1/max_period.
    """
    if dim < 2:
        raise ValueError(f"embedding dim must be at least 2, got {dim}")
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t.float()[:, None] * freqs[None, :]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:  # odd dims: pad one zero column so the output is exactly ``dim`` wide
        emb = torch.nn.functional.pad(emb, (0, 1))
    return emb


class TimestepEmbedding(nn.Module):
    """Sinusoidal features followed by a small MLP, the usual way a UNet sees its timestep."""

    def __init__(self, freq_dim: int, out_dim: int):
        super().__init__()
        self.freq_dim = freq_dim
        self.mlp = nn.Sequential(nn.Linear(freq_dim, out_dim), nn.SiLU(), nn.Linear(out_dim, out_dim))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        emb = sinusoidal_embedding(t, self.freq_dim)
        # under autocast the Linear runs in low precision anyway; keep the input dtype consistent
        return self.mlp(emb.to(self.mlp[0].weight.dtype))
