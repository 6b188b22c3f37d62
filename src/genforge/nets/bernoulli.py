"""The image a Bernoulli decoder shows: its per-pixel mean, tempered.

Both the VAE's and the VQ-VAE's Bernoulli decoders output logits; the image in [-1, 1] is 2 p - 1 with
p = sigmoid(logit / T). T = 1 is the plain mean, whose strokes are soft where the decoder hesitates
between shapes; below 1 the mean is sharpened towards the mode (T = 0), where the decoder is confident,
keeping grey where it is not. Only what is shown changes: the likelihood never sees T."""

from __future__ import annotations

import torch


def bernoulli_image(logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Decoder logits -> image in [-1, 1], float32: 2 sigmoid(logits / T) - 1, the mode (+-1) at T = 0."""
    logits = logits.float()
    if temperature == 0:
        return torch.where(logits > 0, 1.0, -1.0)
    return torch.tanh(logits / (2 * temperature))  # 2 * sigmoid(logits / T) - 1
