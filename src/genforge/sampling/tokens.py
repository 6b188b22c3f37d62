"""Token decoding as small pure functions of next-token logits (..., vocab).

``next_token`` is what a generation loop calls once per step: temperature, then top-k, then a draw
from the given ``torch.Generator`` (or the argmax when the temperature is 0).
"""

from __future__ import annotations

import math

import torch

from genforge.errors import ConfigError


def next_token(
    logits: torch.Tensor,
    generator: torch.Generator | None = None,
    temperature: float = 1.0,
    top_k: int | None = None,
) -> torch.Tensor:
    """Pick one token id per row of ``logits`` (n, vocab); returns (n,) int64.

    ``temperature == 0`` is greedy decoding (argmax); ties go to the lowest id.
    """
    check_decoding(temperature, top_k)
    logits = logits.float()  # softmax of bf16 logits is too coarse to sample from
    if temperature == 0:
        return logits.argmax(dim=-1)
    logits = scale_temperature(logits, temperature)
    if top_k is not None:
        logits = top_k_filter(logits, top_k)
    probs = torch.softmax(logits, dim=-1)
    return torch.multinomial(probs, num_samples=1, generator=generator).squeeze(-1)


def scale_temperature(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """Divide by ``temperature`` > 0: below 1 sharpens the distribution, above 1 flattens it."""
    if temperature <= 0:
        raise ConfigError(f"temperature must be > 0 to scale logits, got {temperature}; use 0 only for greedy decoding")
    return logits / temperature


def top_k_filter(logits: torch.Tensor, k: int) -> torch.Tensor:
    """Keep exactly the ``k`` largest logits of each row and set the rest to -inf.

    Exactly ``k`` even when values tie at the cut (a threshold test would keep every tied one);
    ``k`` larger than the vocabulary keeps everything.
    """
    if k < 1:
        raise ConfigError(f"top_k must be a positive integer, got {k}")
    if k >= logits.shape[-1]:
        return logits
    values, indices = torch.topk(logits, k, dim=-1)
    return torch.full_like(logits, float("-inf")).scatter(-1, indices, values)


def check_decoding(temperature: float, top_k: int | None) -> None:
    """One-line errors for decoding settings a user typed."""
    number = isinstance(temperature, (int, float)) and not isinstance(temperature, bool)
    if not number or not math.isfinite(temperature) or temperature < 0:
        raise ConfigError(f"temperature must be a number >= 0 (0 means greedy), got {temperature!r}")
    if top_k is not None and (not isinstance(top_k, int) or isinstance(top_k, bool) or top_k < 1):
        raise ConfigError(f"top_k must be a positive integer or None, got {top_k!r}")
