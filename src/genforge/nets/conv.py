"""Convolutional backbones shared by the GAN and the VAE.

``ConvDecoder`` maps a vector to an image the DCGAN way: a linear layer to a small h0 x w0 feature map,
then k stride-2 transposed convolutions, each doubling the size and halving the channels, the last one
producing the image. ``ConvEncoder`` mirrors it: k stride-2 convolutions with LeakyReLU, then a linear
head on the flattened features.

Sizes: k is the smallest number of doublings (at least one) that brings the start down to 7 x 7 or less,
and the start is ceil(size / 2**k). The decoder's canvas, h0 * 2**k, is therefore the data's size or at
most 2**k - 1 pixels larger, and the surplus is centre-cropped away. Cropping (rather than
interpolating) keeps every output pixel a plain function of the transposed convolutions, with no blur;
28 x 28 (MNIST) starts at 7 x 7 and 8 x 8 at 4 x 4, 64 x 64 at 4 x 4, all without any crop.

Also here: small helpers both families use around these nets (label conditioning, freezing a
network for one phase, the weight-decay split). Eval mode for sampling is ``families.base.eval_mode``.
"""

from __future__ import annotations

import contextlib
import math
from typing import Any, Iterator, Sequence

import torch
from torch import nn

from genforge.errors import ConfigError

MIN_SIZE = 4  # below this there is nothing to convolve
MAX_SIZE = 1024  # beyond this the DCGAN stack gets too deep to train from scratch
MAX_START = 7  # the decoder starts from at most 7 x 7
MAX_WIDTH_MULT = 8  # channels double per level of downsampling, up to 8x the base width (DCGAN's 512 at 64 px)


def check_image_shape(shape: Sequence[int], family: str) -> tuple[int, int, int]:
    """(C, H, W) of ``shape``, or a ConfigError saying what sizes the conv backbones handle."""
    if len(shape) != 3:
        raise ConfigError(f"family '{family}' needs image data shaped (channels, height, width), got {tuple(shape)}")
    c, h, w = (int(s) for s in shape)
    if c < 1 or min(h, w) < MIN_SIZE or max(h, w) > MAX_SIZE:
        raise ConfigError(
            f"family '{family}' handles images from {MIN_SIZE}x{MIN_SIZE} to {MAX_SIZE}x{MAX_SIZE} with at least "
            f"one channel, got {c}x{h}x{w}; set data.image_size to a size in that range"
        )
    return c, h, w


def upsampling_plan(height: int, width: int) -> tuple[int, int, int]:
    """(k, h0, w0): the decoder starts at h0 x w0 and doubles k times to reach at least height x width."""
    k = 1
    while math.ceil(max(height, width) / 2**k) > MAX_START:
        k += 1
    return k, math.ceil(height / 2**k), math.ceil(width / 2**k)


def level_width(width: int, level: int) -> int:
    """Channels of the feature map ``level`` halvings below the image (level >= 1)."""
    return width * min(2 ** (level - 1), MAX_WIDTH_MULT)


def make_norm(norm: str, channels: int) -> nn.Module:
    if norm == "batch":
        return nn.BatchNorm2d(channels)
    if norm == "none":
        return nn.Identity()
    raise ConfigError(f"unknown norm '{norm}'; expected 'batch' or 'none'")


def center_crop(x: torch.Tensor, height: int, width: int) -> torch.Tensor:
    top = (x.shape[-2] - height) // 2
    left = (x.shape[-1] - width) // 2
    return x[..., top : top + height, left : left + width]


class ConvDecoder(nn.Module):
    """Vector (B, in_dim) -> image-shaped output (B, C, H, W), before any output activation.

    With ``num_classes``, forward also takes labels (B,) whose learned embedding is concatenated to the
    input vector, so one decoder serves conditional and unconditional models.
    """

    def __init__(self, in_dim: int, shape: Sequence[int], width: int, norm: str = "batch",
                 num_classes: int | None = None):
        super().__init__()
        channels, self.out_height, self.out_width = check_image_shape(shape, "conv decoder")
        k, h0, w0 = upsampling_plan(self.out_height, self.out_width)
        self.start = (level_width(width, k), h0, w0)
        self.label_embedding = nn.Embedding(num_classes, in_dim) if num_classes else None
        vector_dim = in_dim * (2 if num_classes else 1)
        has_norm = norm != "none"  # a norm right after supplies the bias
        self.project = nn.Linear(vector_dim, math.prod(self.start), bias=not has_norm)
        self.project_act = nn.Sequential(make_norm(norm, self.start[0]), nn.ReLU())
        layers: list[nn.Module] = []
        for level in range(k, 1, -1):
            layers += [
                nn.ConvTranspose2d(level_width(width, level), level_width(width, level - 1), 4, 2, 1,
                                   bias=not has_norm),
                make_norm(norm, level_width(width, level - 1)),
                nn.ReLU(),
            ]
        layers.append(nn.ConvTranspose2d(level_width(width, 1), channels, 4, 2, 1))
        self.upsample = nn.Sequential(*layers)

    def forward(self, v: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        if self.label_embedding is not None:
            if labels is None:
                raise ValueError("this decoder is class-conditional: pass labels")
            v = torch.cat([v, self.label_embedding(labels).to(v.dtype)], dim=1)
        h = self.project_act(self.project(v).view(-1, *self.start))
        return center_crop(self.upsample(h), self.out_height, self.out_width)


class ConvEncoder(nn.Module):
    """Image (B, C, H, W) -> (B, out_dim). ``features`` gives the flattened conv features (B, feature_dim)
    that the head reads, for heads that need more than a linear layer (a projection discriminator).

    ``minibatch_std`` appends one feature map holding the batch's spread, the root mean squared deviation
    of its features from their mean (Karras et al., 2018): a discriminator then sees a batch of
    near-identical fakes as such, which pushes the generator away from mode collapse. Given ``groups``
    (class labels), deviations are taken from each group's own mean, so a generator that draws one
    image per class is caught too. Only for discriminators: it ties the items of a batch together.
    """

    def __init__(self, shape: Sequence[int], out_dim: int, width: int, norm: str = "none",
                 minibatch_std: bool = False):
        super().__init__()
        channels, height, width_px = check_image_shape(shape, "conv encoder")
        k, _, _ = upsampling_plan(height, width_px)  # as many halvings as the decoder has doublings
        layers: list[nn.Module] = []
        in_ch = channels
        for level in range(1, k + 1):
            out_ch = level_width(width, level)
            # DCGAN: no norm on the first layer, which sees the raw image
            level_norm = "none" if level == 1 else norm
            layers += [
                nn.Conv2d(in_ch, out_ch, 4, 2, 1, bias=level_norm == "none"),
                make_norm(level_norm, out_ch),
                nn.LeakyReLU(0.2),
            ]
            in_ch = out_ch
            height, width_px = height // 2, width_px // 2  # what Conv2d(4, 2, 1) does to any size
        self.convs = nn.Sequential(*layers)
        self.minibatch_std = minibatch_std
        self.feature_dim = (in_ch + int(minibatch_std)) * height * width_px
        self.head = nn.Linear(self.feature_dim, out_dim)

    def features(self, x: torch.Tensor, groups: torch.Tensor | None = None) -> torch.Tensor:
        h = self.convs(x)
        if self.minibatch_std:
            spread = batch_spread(h, groups).to(h.dtype)
            h = torch.cat([h, spread.expand(h.shape[0], 1, *h.shape[2:])], dim=1)
        return h.flatten(1)

    def forward(self, x: torch.Tensor, groups: torch.Tensor | None = None) -> torch.Tensor:
        return self.head(self.features(x, groups))


def batch_spread(h: torch.Tensor, groups: torch.Tensor | None = None) -> torch.Tensor:
    """Root mean squared deviation of each item's features from its group's mean (the batch's mean
    without groups): one float32 scalar, 0 for a batch of identical items."""
    h = h.float().flatten(1)
    if groups is None:
        means = h.mean(dim=0, keepdim=True)
    else:
        onehot = nn.functional.one_hot(groups).to(h.dtype)  # (B, K)
        means = (onehot.T @ h / onehot.sum(dim=0).clamp(min=1)[:, None])[groups]
    return ((h - means).pow(2).mean() + 1e-8).sqrt()


# ---- helpers both families use around these nets ---------------------------------------------------------


def resolve_labels(label: Any, n: int, num_classes: int, class_names: Sequence[str],
                   generator: torch.Generator | None, device: torch.device) -> torch.Tensor:
    """(n,) int64 labels for sampling: ``label`` may be None (uniformly random, drawn from ``generator``),
    one id or class name for all n, or a sequence/tensor of n of them."""
    if label is None:
        return torch.randint(num_classes, (n,), generator=generator, device=device)

    def to_id(item: Any) -> int:
        if isinstance(item, str):
            if item in class_names:
                return list(class_names).index(item)
            if item.strip().lstrip("-").isdigit():
                item = int(item)
            else:
                raise ConfigError(f"unknown label '{item}'; expected a class id or one of: {', '.join(class_names)}")
        value = int(item)
        if not 0 <= value < num_classes:
            raise ConfigError(f"label {value} is out of range; expected 0 to {num_classes - 1}")
        return value

    if torch.is_tensor(label):
        label = label.reshape(-1).tolist()
    items = list(label) if isinstance(label, (list, tuple)) else [label]
    if len(items) == 1:
        items = items * n
    if len(items) != n:
        raise ConfigError(f"got {len(items)} labels for {n} samples; pass one label or one per sample")
    return torch.tensor([to_id(item) for item in items], dtype=torch.long, device=device)


@contextlib.contextmanager
def frozen(module: nn.Module) -> Iterator[None]:
    """Build a graph through ``module`` without its parameters: the loss backpropagates through it to
    its inputs, and its own .grad stays untouched."""
    flags = [p.requires_grad for p in module.parameters()]
    module.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in zip(module.parameters(), flags):
            p.requires_grad_(flag)


def decay_split(module: nn.Module) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """(weights to decay, parameters exempt): conv/linear weights decay; biases, norm gains and label
    embeddings do not (shrinking them toward zero regularises nothing)."""
    exempt_ids = {id(embedding_weight(m)) for m in module.modules() if isinstance(m, nn.Embedding)}
    decay, no_decay = [], []
    for p in module.parameters():
        if p.requires_grad:
            (no_decay if p.dim() < 2 or id(p) in exempt_ids else decay).append(p)
    return decay, no_decay


def embedding_weight(embedding: nn.Embedding) -> nn.Parameter:
    """The embedding's trained table: under a parametrization (spectral norm), the original parameter."""
    if nn.utils.parametrize.is_parametrized(embedding, "weight"):
        return embedding.parametrizations.weight.original
    return embedding.weight
