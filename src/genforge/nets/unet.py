"""A compact DDPM/ADM-style UNet: predicts a tensor the size of its input from (x, t).

Layout, top-down:
  UNet            stem conv -> down levels -> middle (res, attention, res) -> up levels -> out conv
  ResBlock        GroupNorm, SiLU, conv, + timestep embedding, GroupNorm, SiLU, dropout, conv, + skip
  SelfAttention   multi-head attention over pixels via scaled_dot_product_attention
  Downsample      stride-2 conv; Upsample: nearest x2 then conv

Each level halves the resolution, so an image of H x W with L channel multipliers needs H and W
divisible by 2^(L-1): 28x28 works with 3 levels (28 -> 14 -> 7), 8x8 with up to 4, 64x64 with up to 7.
Other sizes raise ConfigError instead of padding internally: padding would silently spend
capacity on pixels that do not exist, and the fix (fewer levels or another image size) is one config value.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from genforge.errors import ConfigError
from genforge.nets.embeddings import TimestepEmbedding


def group_norm(channels: int, groups: int = 0) -> nn.GroupNorm:
    """GroupNorm over ``channels`` with ``groups`` groups; 0 picks them for the width: up to 32 groups but at
    least 4 channels per group (1-channel groups, instance norm, hurt small nets)."""
    return nn.GroupNorm(groups or width_groups(channels), channels)


def width_groups(channels: int) -> int:
    groups = math.gcd(channels, 32)
    while groups > 1 and channels // groups < 4:
        groups //= 2
    return groups


def shared_groups(norm_groups: int, base_channels: int) -> int:
    """The group count every norm of a UNet uses: ``norm_groups`` when positive, the narrowest width's
    choice (which divides every wider one) for -1, and 0 (each width its own choice) for 0."""
    return width_groups(base_channels) if norm_groups == -1 else norm_groups


def zero_init(module: nn.Module) -> nn.Module:
    # residual branches start as the identity, which keeps early training stable
    for p in module.parameters():
        nn.init.zeros_(p)
    return module


class ResBlock(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, emb_dim: int, dropout: float, groups: int = 0):
        super().__init__()
        self.norm1 = group_norm(in_ch, groups)
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.emb_proj = nn.Linear(emb_dim, out_ch)
        self.norm2 = group_norm(out_ch, groups)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = zero_init(nn.Conv2d(out_ch, out_ch, 3, padding=1))
        self.skip = nn.Conv2d(in_ch, out_ch, 1) if in_ch != out_ch else nn.Identity()

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.emb_proj(F.silu(emb))[:, :, None, None]
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        return self.skip(x) + h


class SelfAttention(nn.Module):
    def __init__(self, channels: int, head_channels: int = 32, groups: int = 0):
        super().__init__()
        self.heads = channels // head_channels if channels % head_channels == 0 else 1
        self.norm = group_norm(channels, groups)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.proj = zero_init(nn.Conv2d(channels, channels, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # The 1x1 convolutions run as matmuls over pixel tokens (same weights, same maths): that leaves
        # q, k and v with contiguous head dims, which the fused SDPA kernels need (otherwise PyTorch
        # falls back to its unfused math path), and a matmul beats a 1x1 convolution on CPU: this
        # block's forward and backward run 1.5-3x faster on CPU than in the convolution form.
        b, c, h, w = x.shape
        tokens = self.norm(x).flatten(2).transpose(1, 2)  # (b, h*w, c); a view for channels-last input
        qkv = F.linear(tokens, self.qkv.weight.view(3 * c, c), self.qkv.bias)
        q, k, v = qkv.view(b, h * w, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4).unbind(0)
        out = F.scaled_dot_product_attention(q, k, v)  # each (b, heads, h*w, head_dim)
        out = F.linear(out.transpose(1, 2).reshape(b, h * w, c), self.proj.weight.view(c, c), self.proj.bias)
        return x + out.transpose(1, 2).view(b, c, h, w)  # channels-last strides, NCHW shape


class Downsample(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class Upsample(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class EmbedSequential(nn.Sequential):
    """A Sequential whose ResBlocks also receive the timestep embedding."""

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        for layer in self:
            x = layer(x, emb) if isinstance(layer, ResBlock) else layer(x)
        return x


class UNet(nn.Module):
    """Noise predictor for images of shape (in_channels, *image_size).

    channel_mults: one entry per resolution level; level i has base_channels * channel_mults[i] channels.
    attention_resolutions: feature-map sizes (the smaller side, in pixels) that get self-attention;
      the middle of the network always has it.
    norm_groups: 0 lets each GroupNorm pick its groups for its width; N > 0 gives every norm N groups, and -1
      the narrowest width's choice (diffusers' UNet2DModel takes one count for the whole net, so a UNet
      exports to it exactly only with one count).
    forward(x, t, cond): t is (B,) timesteps (int or float); cond, if given, is a (B, emb_dim) embedding
      (e.g. of a class label) added to the timestep embedding.
    """

    def __init__(
        self,
        in_channels: int,
        image_size: tuple[int, int],
        base_channels: int = 32,
        channel_mults: tuple[int, ...] = (1, 2, 2),
        blocks_per_level: int = 1,
        attention_resolutions: tuple[int, ...] = (7,),
        dropout: float = 0.0,
        out_channels: int | None = None,
        norm_groups: int = 0,
    ):
        super().__init__()
        check_unet_config(image_size, base_channels, channel_mults, blocks_per_level, dropout, norm_groups)
        g = self.norm_groups = shared_groups(norm_groups, base_channels)
        self.emb_dim = 4 * base_channels
        self.time_embed = TimestepEmbedding(base_channels, self.emb_dim)
        self.stem = nn.Conv2d(in_channels, base_channels, 3, padding=1)

        # down path; remember each output's channels, the up path concatenates them back in reverse
        self.down = nn.ModuleList()
        skip_channels = [base_channels]
        ch, res = base_channels, min(image_size)
        for level, mult in enumerate(channel_mults):
            for _ in range(blocks_per_level):
                layers: list[nn.Module] = [ResBlock(ch, base_channels * mult, self.emb_dim, dropout, g)]
                ch = base_channels * mult
                if res in attention_resolutions:
                    layers.append(SelfAttention(ch, groups=g))
                self.down.append(EmbedSequential(*layers))
                skip_channels.append(ch)
            if level != len(channel_mults) - 1:
                self.down.append(EmbedSequential(Downsample(ch)))
                skip_channels.append(ch)
                res //= 2

        self.middle = EmbedSequential(
            ResBlock(ch, ch, self.emb_dim, dropout, g), SelfAttention(ch, groups=g),
            ResBlock(ch, ch, self.emb_dim, dropout, g)
        )

        self.up = nn.ModuleList()
        for level, mult in reversed(list(enumerate(channel_mults))):
            for i in range(blocks_per_level + 1):
                layers = [ResBlock(ch + skip_channels.pop(), base_channels * mult, self.emb_dim, dropout, g)]
                ch = base_channels * mult
                if res in attention_resolutions:
                    layers.append(SelfAttention(ch, groups=g))
                if level != 0 and i == blocks_per_level:
                    layers.append(Upsample(ch))
                    res *= 2
                self.up.append(EmbedSequential(*layers))

        self.out = nn.Sequential(
            group_norm(ch, g), nn.SiLU(), zero_init(nn.Conv2d(ch, out_channels or in_channels, 3, padding=1))
        )

    checkpointing = False  # activation checkpointing: each level's activations are recomputed in backward

    def _run(self, block: nn.Module, h: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        if self.checkpointing and torch.is_grad_enabled():
            return checkpoint(block, h, emb, use_reentrant=False)
        return block(h, emb)

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        emb = self.time_embed(t)
        if cond is not None:
            emb = emb + cond
        h = self.stem(x)
        if h.device.type == "cpu":
            # oneDNN's CPU convolutions run NHWC natively (NCHW costs a reorder each call), and the layout
            # propagates through the net: 5-20% faster at 16-64 channels, about even at 128-256 (measured
            # against diffusers in benchmarks/diffusion_speed.py). The output comes back in the input's layout.
            h = h.contiguous(memory_format=torch.channels_last)
        skips = [h]
        run = self._run
        for block in self.down:
            h = run(block, h, emb)
            skips.append(h)
        h = run(self.middle, h, emb)
        for block in self.up:
            h = run(block, torch.cat([h, skips.pop()], dim=1), emb)
        out = self.out(h)
        if x.is_contiguous() and not out.is_contiguous():
            out = out.contiguous()
        return out


def check_unet_config(
    image_size: tuple[int, int],
    base_channels: int,
    channel_mults: tuple[int, ...],
    blocks_per_level: int,
    dropout: float,
    norm_groups: int = 0,
) -> None:
    """Raise ConfigError, naming the value and what is expected, for a UNet that cannot be built."""
    if base_channels < 1:
        raise ConfigError(f"base_channels must be a positive integer, got {base_channels}")
    if not channel_mults or any(int(m) != m or m < 1 for m in channel_mults):
        raise ConfigError(f"channel_mults must be a non-empty list of positive integers, got {list(channel_mults)}")
    if blocks_per_level < 1:
        raise ConfigError(f"blocks_per_level must be at least 1, got {blocks_per_level}")
    if not 0 <= dropout < 1:
        raise ConfigError(f"dropout must be in [0, 1), got {dropout}")
    if norm_groups < -1 or (norm_groups > 0 and base_channels % norm_groups):
        raise ConfigError(f"norm_groups must be 0 (each width its own), -1 (one count, the narrowest width's) or a "
                          f"divisor of base_channels {base_channels}, got {norm_groups}")
    factor = 2 ** (len(channel_mults) - 1)
    h, w = image_size
    if h % factor or w % factor:
        most = 1
        while h % (2**most) == 0 and w % (2**most) == 0:
            most += 1
        raise ConfigError(
            f"image size {h}x{w} cannot be halved {len(channel_mults) - 1} times for {len(channel_mults)} "
            f"channel_mults; use at most {most} entries in channel_mults, or an image size divisible by {factor}"
        )
