"""A DiffWave-style denoiser (Kong et al. 2021): a stack of dilated 1-D convolutions over raw waveforms.

Layout, top-down:
  DiffWave       1x1 input conv + ReLU -> `layers` ResidualBlocks -> sum of skips / sqrt(layers)
                 -> 1x1 conv, ReLU -> 1x1 output conv (zero-initialised: the untrained net predicts 0)
  ResidualBlock  x + per-layer projection of the step embedding (broadcast over time) -> dilated conv
                 (kernel 3, C -> 2C) -> tanh(filter) * sigmoid(gate) -> dropout -> 1x1 conv (C -> 2C),
                 split into a residual half, returned as (x + residual) / sqrt(2), and a skip half

Block i has dilation 2 ** (i % dilation_cycle), so the dilations run 1, 2, 4, ... 2 ** (dilation_cycle - 1)
and start again. Nothing down-samples: any length L works, and the output has the input's shape.
Zero padding keeps the length; near the ends the net sees zeros where there is no signal.

Receptive field (``DiffWave.receptive_field``): every kernel-3 convolution of dilation d widens it by 2d,
so it is 1 + 2 * sum of the dilations samples, centred on the output sample (non-causal):
  layers 12, cycle 6 (the defaults):     1 + 2 * 2 * 63    = 253 samples (16 ms at 16 kHz)
  layers 30, cycle 10 (DiffWave's base): 1 + 2 * 3 * 1023 = 6139 samples (0.38 s at 16 kHz)

Cost: each block does 8 * C^2 multiply-adds per sample (C -> 2C kernel-3 conv, C -> 2C 1x1 conv), so a
forward pass over 16 clips of 16000 samples is about 50 GFLOP at C 32, 12 layers (the defaults) and 340
GFLOP at C 64, 20 layers; backward costs about twice that. Training at 16 kHz is GPU work: on a 2-core CPU
the defaults take seconds per such batch (forward + backward).

Conditioning matches ``genforge.nets.unet.UNet``, so the diffusion family can drive either net:
``forward(x, t, cond)`` takes (B,) integer or float timesteps and an optional (B, emb_dim) embedding
(e.g. of a class label) that is added to the timestep embedding. ``emb_dim`` is 4 * residual_channels,
the UNet's convention (4 * base_channels); the timestep is first turned into 128 sinusoidal features,
DiffWave's count, which resolve 1000 integer steps better than residual_channels features would.
"""

from __future__ import annotations

import math
import numbers

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from genforge.errors import ConfigError
from genforge.nets.embeddings import TimestepEmbedding

FREQ_DIM = 128  # sinusoidal timestep features (DiffWave's choice)


def conv1d(in_ch: int, out_ch: int, kernel: int = 1, dilation: int = 1) -> nn.Conv1d:
    """A length-preserving Conv1d with DiffWave's Kaiming-normal initialisation."""
    conv = nn.Conv1d(in_ch, out_ch, kernel, padding=dilation * (kernel - 1) // 2, dilation=dilation)
    nn.init.kaiming_normal_(conv.weight)
    return conv


class ResidualBlock(nn.Module):
    def __init__(self, channels: int, emb_dim: int, dilation: int, dropout: float):
        super().__init__()
        self.dilation = dilation
        self.emb_proj = nn.Linear(emb_dim, channels)
        self.dilated = conv1d(channels, 2 * channels, 3, dilation)
        self.dropout = nn.Dropout(dropout)
        self.out_proj = conv1d(channels, 2 * channels, 1)

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(residual output, skip output), each (B, C, L), from x (B, C, L) and the embedding (B, emb_dim)."""
        h = self.dilated(x + self.emb_proj(F.silu(emb))[:, :, None])
        filt, gate = h.chunk(2, dim=1)
        h = self.out_proj(self.dropout(torch.tanh(filt) * torch.sigmoid(gate)))
        residual, skip = h.chunk(2, dim=1)
        return (x + residual) * (1 / math.sqrt(2)), skip


class DiffWave(nn.Module):
    """Noise predictor for waveforms of shape (in_channels, L), for any L.

    length: the clip length the model is meant for, in samples (None: unspecified). It is recorded, not
      enforced (the net works at every length); compare it with ``receptive_field``.
    residual_channels: width C of every residual block (DiffWave: 64). emb_dim = 4 * C.
    layers, dilation_cycle: block i has dilation 2 ** (i % dilation_cycle) (DiffWave: 30 and 10).
    dropout: on the gated activations, before each block's 1x1 output conv (DiffWave has none).
    forward(x, t, cond): x (B, in_channels, L); t (B,) timesteps (int or float); cond, if given, a
      (B, emb_dim) embedding added to the timestep embedding. Returns (B, in_channels, L).
    """

    checkpointing = False  # activation checkpointing: each block's activations are recomputed in backward

    def __init__(
        self,
        in_channels: int = 1,
        length: int | None = None,
        residual_channels: int = 32,
        layers: int = 12,
        dilation_cycle: int = 6,
        dropout: float = 0.0,
    ):
        super().__init__()
        check_diffwave_config(in_channels, length, residual_channels, layers, dilation_cycle, dropout)
        self.length = length
        self.emb_dim = 4 * residual_channels
        self.time_embed = TimestepEmbedding(FREQ_DIM, self.emb_dim)
        self.input_proj = conv1d(in_channels, residual_channels, 1)
        self.blocks = nn.ModuleList(
            ResidualBlock(residual_channels, self.emb_dim, 2 ** (i % dilation_cycle), dropout) for i in range(layers)
        )
        self.skip_proj = conv1d(residual_channels, residual_channels, 1)
        self.output_proj = nn.Conv1d(residual_channels, in_channels, 1)
        nn.init.zeros_(self.output_proj.weight)
        nn.init.zeros_(self.output_proj.bias)

    @property
    def receptive_field(self) -> int:
        """How many input samples, centred on it, one output sample depends on: 1 + 2 * sum of the dilations."""
        return 1 + 2 * sum(block.dilation for block in self.blocks)

    def _run(self, block: ResidualBlock, h: torch.Tensor, emb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.checkpointing and torch.is_grad_enabled():
            return checkpoint(block, h, emb, use_reentrant=False)
        return block(h, emb)

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        emb = self.time_embed(t)
        if cond is not None:
            emb = emb + cond
        h = F.relu(self.input_proj(x))
        skips = None
        for block in self.blocks:
            h, skip = self._run(block, h, emb)
            skips = skip if skips is None else skips + skip
        h = skips * (1 / math.sqrt(len(self.blocks)))
        return self.output_proj(F.relu(self.skip_proj(h)))


def check_diffwave_config(
    in_channels: int, length: int | None, residual_channels: int, layers: int, dilation_cycle: int, dropout: float
) -> None:
    """Raise ConfigError, naming the value and what is expected, for a DiffWave that cannot be built."""
    for name, value in [("in_channels", in_channels), ("residual_channels", residual_channels),
                        ("layers", layers), ("dilation_cycle", dilation_cycle)]:
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
            raise ConfigError(f"{name} must be a positive integer, got {value!r}")
    if length is not None and (isinstance(length, bool) or not isinstance(length, numbers.Integral) or length < 1):
        raise ConfigError(f"length must be a positive integer (samples) or None, got {length!r}")
    if isinstance(dropout, bool) or not isinstance(dropout, numbers.Real) or not 0 <= dropout < 1:
        raise ConfigError(f"dropout must be in [0, 1), got {dropout}")
