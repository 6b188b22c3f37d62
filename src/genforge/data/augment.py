"""DiffAugment: differentiable augmentation for training GANs on small data.

Zhao et al. (2020), "Differentiable Augmentation for Data-Efficient GAN Training": with few images, the
discriminator memorises the training set and stops teaching the generator. Augmenting only the reals
would teach the generator to draw augmented images; DiffAugment instead applies the same random kind
of transformation to reals and fakes alike, in every discriminator and generator pass, and makes it
differentiable so the generator's gradient flows through it. The transformations here:

- ``"color"``: per sample, a brightness shift, then (3-channel images only) a saturation change, then a
  contrast change. Images are in [-1, 1], twice the width of the [0, 1] range these operations are
  often stated in. Saturation (scaling each pixel's distance to its grey value by U(0, 2)) and contrast
  (scaling each pixel's distance to the image mean by U(0.5, 1.5)) are scalings about a mean, the same
  in any range. Brightness is a shift: U(-0.5, 0.5) here, up to a quarter of the range, which moves a
  mid-grey image halfway to black or white at most.
- ``"translation"``: per sample, an integer shift of up to 1/8 of the height and of the width (rounded
  half up) in each direction, the uncovered border filled with 0 (mid-grey in [-1, 1]). Done by
  gathering pixels, so every output pixel is an input pixel (or 0) and the gradient is exact.
- ``"cutout"``: per sample, a rectangle of half the height by half the width (a square on square
  images), centred at a uniformly random pixel and clipped at the border, set to 0.

Random draws come from ``generator`` when given (on the generator's device, then moved to the images'
device), else from the global RNG. Works on any device, in float32 and bfloat16.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

from genforge import draws
from genforge.errors import ConfigError

POLICIES = ("color", "translation", "cutout")
TRANSLATION_RATIO = 1 / 8  # the largest shift, as a share of the size
CUTOUT_RATIO = 1 / 2  # the cut rectangle's side, as a share of the size


def parse_policy(policy: str | Sequence[str]) -> tuple[str, ...]:
    """``"color,translation,cutout"`` (or a sequence of names) -> a tuple of names, applied in that order.

    The empty string (or an empty sequence) means no augmentation; unknown names raise ConfigError.
    """
    names = policy.split(",") if isinstance(policy, str) else list(policy)
    names = [str(n).strip() for n in names]
    names = [n for n in names if n]
    unknown = [n for n in names if n not in POLICIES]
    if unknown:
        raise ConfigError(f"unknown DiffAugment policy {', '.join(repr(n) for n in unknown)}; expected a "
                          f"comma-separated list of: {', '.join(POLICIES)} (or '' for none)")
    return tuple(names)


def diff_augment(x: torch.Tensor, policy: str | Sequence[str],
                 generator: torch.Generator | None = None) -> torch.Tensor:
    """Images (B, C, H, W) in [-1, 1] -> the same shape and dtype, each transformation of ``policy`` applied."""
    names = parse_policy(policy)
    if names and x.dim() != 4:
        raise ValueError(f"diff_augment needs images shaped (batch, channels, height, width), got {tuple(x.shape)}")
    for name in names:
        x = AUGMENTATIONS[name](x, generator)
    return x


def _uniform(x: torch.Tensor, generator: torch.Generator | None, low: float, high: float) -> torch.Tensor:
    """One U(low, high) value per sample, shaped (B, 1, 1, 1) to broadcast over x, in x's dtype."""
    if generator is None:  # training: this part's rows of the whole batch's draw (genforge.draws)
        u = draws.rand(x.shape[0], 1, 1, 1, device=x.device)
    else:
        u = torch.rand(x.shape[0], 1, 1, 1, generator=generator, device=generator.device)
    return (low + (high - low) * u).to(x.device, x.dtype)


def _share(size: int, ratio: float) -> int:
    """size * ratio rounded half up (Python's round would take 4 * 1/8 down to 0)."""
    return int(size * ratio + 0.5)


def _randint(x: torch.Tensor, generator: torch.Generator | None, low: int, high: int) -> torch.Tensor:
    """One integer in [low, high] (inclusive) per sample, shaped (B,), on x's device."""
    if generator is None:  # training: this part's rows of the whole batch's draw (genforge.draws)
        return draws.randint(low, high + 1, x.shape[0], device=x.device)
    return torch.randint(low, high + 1, (x.shape[0],), generator=generator, device=generator.device).to(x.device)


def color(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    x = x + _uniform(x, generator, -0.5, 0.5)
    if x.shape[1] == 3:
        grey = x.mean(dim=1, keepdim=True)
        x = grey + (x - grey) * _uniform(x, generator, 0.0, 2.0)
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return mean + (x - mean) * _uniform(x, generator, 0.5, 1.5)


def translation(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    b, c, h, w = x.shape
    max_dy, max_dx = _share(h, TRANSLATION_RATIO), _share(w, TRANSLATION_RATIO)
    if max_dy == 0 and max_dx == 0:
        return x
    dy = _randint(x, generator, -max_dy, max_dy)
    dx = _randint(x, generator, -max_dx, max_dx)
    padded = F.pad(x, (max_dx, max_dx, max_dy, max_dy))
    # output pixel (i, j) is input pixel (i - dy, j - dx), at (i - dy + max_dy, j - dx + max_dx) once padded
    rows = torch.arange(h, device=x.device)[None, :] - dy[:, None] + max_dy  # (B, H)
    cols = torch.arange(w, device=x.device)[None, :] - dx[:, None] + max_dx  # (B, W)
    padded = padded.gather(2, rows[:, None, :, None].expand(b, c, h, padded.shape[3]))
    return padded.gather(3, cols[:, None, None, :].expand(b, c, h, w))


def cutout(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    h, w = x.shape[-2:]
    cut_h, cut_w = max(1, _share(h, CUTOUT_RATIO)), max(1, _share(w, CUTOUT_RATIO))
    top = _randint(x, generator, 0, h - 1) - cut_h // 2  # centred on a random pixel, may hang over the edge
    left = _randint(x, generator, 0, w - 1) - cut_w // 2
    rows = torch.arange(h, device=x.device)[None, :] - top[:, None]  # (B, H): row offset inside the cut
    cols = torch.arange(w, device=x.device)[None, :] - left[:, None]
    inside = ((rows >= 0) & (rows < cut_h))[:, :, None] & ((cols >= 0) & (cols < cut_w))[:, None, :]
    return x * (~inside).to(x.dtype)[:, None]


AUGMENTATIONS = {"color": color, "translation": translation, "cutout": cutout}
