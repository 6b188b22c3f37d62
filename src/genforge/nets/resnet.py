"""ResNet generator and discriminator for GANs, SNGAN-style (Miyato et al., 2018), beside the DCGAN nets.

Layout, top-down:
  ResNetGenerator      z -> linear -> (4w or 2w) x s x s -> k GeneratorBlocks, each doubling the size
                       -> BN -> ReLU -> conv3x3 -> C channels (no tanh: the family applies it)
  GeneratorBlock       BN -> ReLU -> nearest x2 -> conv3x3 -> BN -> ReLU -> conv3x3, + 1x1 conv of x upsampled
  ClassBatchNorm2d     BatchNorm whose gain and bias are looked up per class (conditional BN), or plain BN
  ResNetDiscriminator  optimized first block -> k-1 down-blocks -> one block at s x s [+ minibatch spread
                       map before it] -> ReLU -> sum over pixels -> linear -> 1 logit
                       [+ projection <embed(y), h> (Miyato & Koyama, 2018)]
  DiscriminatorBlock   (ReLU) -> conv3x3 -> ReLU -> conv3x3 -> (avgpool), + shortcut (avgpool, 1x1 conv)

Sizes: square images H = W = s * 2**k with 4 <= s <= 7 and k >= 1; the generator starts at s x s and
doubles k times, the discriminator halves k times. 32 and 64 start at 4 x 4 (k = 3, 4), 28 at 7 x 7
(k = 2), 8 and 16 at 4 x 4. Other sizes raise ConfigError: a residual stack has no transposed-conv
surplus to crop, and the fix (resize the data) is one config value.

Channels: ``width`` times a multiplier per level, level l being the feature map of H / 2**l pixels:
1 at the image and at l = 1, then 2, then 4 from l = 3 on. At 64 x 64, G runs 4w, 4w, 2w, w, w from
4 to 64 pixels and D w, 2w, 4w, 4w from 32 to 4 pixels, plus its last block at 4 x 4. The cap is 4
rather than DCGAN's 8 because each level here holds two 3x3 convolutions where DCGAN has one layer.

Parameter counts, measured (G with latent_dim 128, without classes / with 10; D with spectral norm,
without classes / with 10, its u and v vectors being buffers; the generator's first linear layer holds
(latent_dim + 1) x s * s x its start channels of these, e.g. 404k of 454k at 28 x 28):
  28 x 28 x 1, width 32:  G   454,497 /   457,377   D   141,089 /   141,729
  32 x 32 x 3, width 64:  G 1,203,907 / 1,216,579   D 2,367,425 / 2,369,985
  64 x 64 x 3, width 64:  G 2,450,627 / 2,472,515   D 3,547,585 / 3,550,145

Conditioning: the generator's blocks use class-conditional BatchNorm (gain 1 and bias 0 for every class
at the start, so an untrained conditional G behaves as an unconditional one); the discriminator adds
a projection term. With ``spectral_norm`` every conv, linear and the class embedding of D are spectrally
normalised; the embedding then starts from a random draw, since spectral norm divides by the largest
singular value and cannot start at zero (without spectral norm it starts at zero: D begins
unconditional, as the DCGAN discriminator does).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm as add_spectral_norm

from genforge.errors import ConfigError
from genforge.nets.conv import batch_spread

MIN_START, MAX_START = 4, 7  # the generator starts from s x s, 4 <= s <= 7: one octave, so s and k are unique
MAX_WIDTH_MULT = 4


def resnet_plan(shape: Sequence[int], family: str = "resnet") -> tuple[int, int, int]:
    """(channels, k, s) for an image ``shape`` (C, H, W) = (C, s * 2**k, s * 2**k), or a ConfigError
    listing the sizes the ResNet backbone handles."""
    if len(shape) != 3:
        raise ConfigError(f"{family} needs image data shaped (channels, height, width), got {tuple(shape)}")
    c, h, w = (int(v) for v in shape)
    k = 1
    while c >= 1 and h == w and h % 2**k == 0 and h // 2**k >= MIN_START:
        if h // 2**k <= MAX_START:
            return c, k, h // 2**k
        k += 1
    examples = sorted({s * 2**k for s in range(MIN_START, MAX_START + 1) for k in range(1, 6) if s * 2**k <= 128})
    raise ConfigError(
        f"{family} handles square images of side s * 2**k with {MIN_START} <= s <= {MAX_START} and k >= 1 "
        f"({', '.join(map(str, examples))}, ...) and at least one channel, got {c}x{h}x{w}; "
        f"set data.image_size to one of these sizes (28, 32 and 64 are the usual ones)"
    )


def width_mult(level: int) -> int:
    """Channel multiplier of the feature map ``level`` halvings below the image."""
    return min(2 ** max(level - 1, 0), MAX_WIDTH_MULT)


def init_weights(module: nn.Module) -> None:
    # Xavier-uniform as in SNGAN: gain sqrt(2) on the 3x3 convs that ReLUs follow, 1 on 1x1 shortcuts
    # and linear layers; zero biases
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            is_3x3 = isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3)
            nn.init.xavier_uniform_(m.weight, gain=math.sqrt(2) if is_3x3 else 1.0)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


def upsample(x: torch.Tensor) -> torch.Tensor:
    return F.interpolate(x, scale_factor=2, mode="nearest")


# ---- generator ----------------------------------------------------------------------------------------------


class ClassBatchNorm2d(nn.Module):
    """BatchNorm; with ``num_classes``, conditional: the normalisation has no affine part of its own and
    the gain and bias come from per-class embeddings, starting at 1 and 0 for every class."""

    def __init__(self, channels: int, num_classes: int | None = None):
        super().__init__()
        self.norm = nn.BatchNorm2d(channels, affine=not num_classes)
        self.gain = self.bias = None
        if num_classes:
            self.gain = nn.Embedding(num_classes, channels)
            self.bias = nn.Embedding(num_classes, channels)
            nn.init.ones_(self.gain.weight)
            nn.init.zeros_(self.bias.weight)

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        h = self.norm(x)
        if self.gain is None:
            return h
        gain = self.gain(labels).to(h.dtype)[:, :, None, None]
        bias = self.bias(labels).to(h.dtype)[:, :, None, None]
        return h * gain + bias


class GeneratorBlock(nn.Module):
    """Doubles the size: BN -> ReLU -> nearest x2 -> conv3x3 -> BN -> ReLU -> conv3x3, + shortcut."""

    def __init__(self, in_ch: int, out_ch: int, num_classes: int | None = None):
        super().__init__()
        self.norm1 = ClassBatchNorm2d(in_ch, num_classes)
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, padding=1, bias=False)  # norm2 follows: no bias needed
        self.norm2 = ClassBatchNorm2d(out_ch, num_classes)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, padding=1)
        self.shortcut = nn.Conv2d(in_ch, out_ch, 1)

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        h = self.conv1(upsample(F.relu(self.norm1(x, labels))))
        h = self.conv2(F.relu(self.norm2(h, labels)))
        # a 1x1 conv commutes with nearest upsampling; convolving first is 4x cheaper
        return h + upsample(self.shortcut(x))


class ResNetGenerator(nn.Module):
    """Latent (B, latent_dim) -> image-shaped output (B, C, H, W), before any output activation.

    With ``num_classes``, forward also takes labels (B,) that select each block's BatchNorm gain and bias.
    """

    def __init__(self, latent_dim: int, shape: Sequence[int], width: int, num_classes: int | None = None):
        super().__init__()
        channels, k, s = resnet_plan(shape, "ResNet generator")
        self.num_classes = num_classes or None
        self.start = (width * width_mult(k), s, s)
        self.project = nn.Linear(latent_dim, math.prod(self.start))
        self.blocks = nn.ModuleList(
            GeneratorBlock(width * width_mult(level), width * width_mult(level - 1), self.num_classes)
            for level in range(k, 0, -1)
        )
        self.out_norm = nn.BatchNorm2d(width)  # unconditional, as in SNGAN
        self.out_conv = nn.Conv2d(width, channels, 3, padding=1)
        init_weights(self)

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        if self.num_classes and labels is None:
            raise ValueError("this generator is class-conditional: pass labels")
        h = self.project(z).view(-1, *self.start)
        for block in self.blocks:
            h = block(h, labels if self.num_classes else None)
        return self.out_conv(F.relu(self.out_norm(h)))


# ---- discriminator ------------------------------------------------------------------------------------------


class DiscriminatorBlock(nn.Module):
    """(ReLU) -> conv3x3 -> ReLU -> conv3x3 -> (avgpool), + shortcut: avgpool where the block downsamples,
    then a learned 1x1 conv where the channels change.

    ``first``: SNGAN's optimized block on the raw image, which gets no ReLU before its first conv."""

    def __init__(self, in_ch: int, out_ch: int, downsample: bool, first: bool = False):
        super().__init__()
        self.first, self.downsample = first, downsample
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, padding=1)
        self.shortcut = nn.Conv2d(in_ch, out_ch, 1) if in_ch != out_ch else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(x if self.first else F.relu(x))
        h = self.conv2(F.relu(h))
        skip = x
        if self.downsample:
            h, skip = F.avg_pool2d(h, 2), F.avg_pool2d(skip, 2)
        # average pooling commutes with a 1x1 conv; pooling first is 4x cheaper
        return h + self.shortcut(skip)


class ResNetDiscriminator(nn.Module):
    """Image (B, C, H, W) -> one logit per image (B,); with ``num_classes``, a projection discriminator.

    ``minibatch_std`` appends one feature map holding the batch's spread (``genforge.nets.conv.batch_spread``,
    measured within each class when conditional) before the last block, so D can see a batch of
    near-identical fakes as such.
    """

    def __init__(self, shape: Sequence[int], width: int, num_classes: int | None = None,
                 spectral_norm: bool = True, minibatch_std: bool = False):
        super().__init__()
        channels, k, _ = resnet_plan(shape, "ResNet discriminator")
        self.num_classes = num_classes or None
        self.minibatch_std = minibatch_std
        self.blocks = nn.Sequential(
            DiscriminatorBlock(channels, width * width_mult(1), downsample=True, first=True),
            *(DiscriminatorBlock(width * width_mult(level - 1), width * width_mult(level), downsample=True)
              for level in range(2, k + 1)),
        )
        feature_dim = width * width_mult(k)
        self.last_block = DiscriminatorBlock(feature_dim + int(minibatch_std), feature_dim, downsample=False)
        self.head = nn.Linear(feature_dim, 1)
        self.class_embedding = nn.Embedding(self.num_classes, feature_dim) if self.num_classes else None
        init_weights(self)
        if self.class_embedding is not None:
            if spectral_norm:
                nn.init.xavier_uniform_(self.class_embedding.weight)
            else:
                nn.init.zeros_(self.class_embedding.weight)
        if spectral_norm:
            for m in list(self.modules()):
                if isinstance(m, (nn.Conv2d, nn.Linear, nn.Embedding)):
                    add_spectral_norm(m)

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        if self.num_classes and labels is None:
            raise ValueError("this discriminator is class-conditional: pass labels")
        h = self.blocks(x)
        if self.minibatch_std:
            spread = batch_spread(h, labels if self.num_classes else None).to(h.dtype)
            h = torch.cat([h, spread.expand(h.shape[0], 1, *h.shape[2:])], dim=1)
        h = F.relu(self.last_block(h)).sum(dim=(2, 3))  # sum pooling, as in SNGAN
        logits = self.head(h).squeeze(1)
        if self.class_embedding is not None:
            logits = logits + (self.class_embedding(labels).to(h.dtype) * h).sum(dim=1)
        return logits
