"""Fill-in-the-middle (FIM) training windows: teach a left-to-right model to write the middle of a file.

Bavarian et al. (2022), "Efficient Training of Language Models to Fill in the Middle": with probability
``rate`` a training window is cut at two random points into (prefix, middle, suffix) and rearranged
in prefix-suffix-middle (PSM) order,

    <|fim_prefix|> prefix <|fim_suffix|> suffix <|fim_middle|> middle <|endoftext|>

so that predicting the middle is ordinary next-token prediction conditioned on both sides, and the
end-of-text token after it teaches the model where a middle ends. A training window rearranges a
random-length piece at its start and continues with ordinary text, so windows keep their length. At inference the prompt is the same
layout up to ``<|fim_middle|>``, and the model writes the middle until it emits end-of-text.
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

import torch

from genforge.errors import ConfigError


class FimIds(NamedTuple):
    prefix: int
    middle: int
    suffix: int
    end: int  # end-of-text: closes the middle


def check_rate(rate: float) -> float:
    if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0 <= rate <= 1:
        raise ConfigError(f"data.fim_rate (--fim-rate) must be a number in [0, 1], got {rate!r}")
    return float(rate)


def psm(prefix: Sequence[int], middle: Sequence[int], suffix: Sequence[int], ids: FimIds) -> list[int]:
    """The prefix-suffix-middle layout of one example (the middle may be empty: an inference prompt)."""
    return [ids.prefix, *prefix, ids.suffix, *suffix, ids.middle, *middle]


def split_psm(tokens: Sequence[int], ids: FimIds) -> tuple[list[int], list[int], list[int]]:
    """Inverse of ``psm``: (prefix, middle, suffix) of a PSM sequence."""
    tokens = list(tokens)
    try:
        p, s, m = tokens.index(ids.prefix), tokens.index(ids.suffix), tokens.index(ids.middle)
    except ValueError:
        raise ConfigError("not a fill-in-the-middle sequence: a <|fim_*|> marker is missing") from None
    if not p == 0 < s < m:
        raise ConfigError("not a fill-in-the-middle sequence: markers out of prefix-suffix-middle order")
    return tokens[p + 1:s], tokens[m + 1:], tokens[s + 1:m]


def apply_fim(windows: torch.Tensor, rate: float, ids: FimIds, generator: torch.Generator) -> torch.Tensor:
    """Rearrange each row of ``windows`` (B, L) int64 with probability ``rate``: a random-length piece
    at the start of the row is cut at two random points and laid out in PSM order, closed by
    end-of-text, and ordinary text follows, so rows keep their length L. The piece's length varies so
    that the end-of-text lands anywhere: the model must learn where a middle meets its suffix, not a
    fixed position. Windows shorter than 5 tokens are left alone.

    Lengths and cut points are drawn from ``generator`` (the trainer's per-step generator), so a
    resumed run sees the same windows.
    """
    b, length = windows.shape
    if rate <= 0 or length < 5:
        return windows
    chosen = torch.rand(b, generator=generator) < rate
    span = torch.randint(0, length - 3, (b,), generator=generator)  # tokens rearranged, 0 .. L - 4
    cuts = (torch.rand(b, 2, generator=generator) * (span[:, None] + 1)).long().sort(dim=1).values
    out = windows.clone()
    for row in torch.nonzero(chosen).flatten().tolist():
        n, (i, j) = int(span[row]), cuts[row].tolist()
        tokens = windows[row].tolist()
        piece = psm(tokens[:i], tokens[i:j], tokens[j:n], ids) + [ids.end]
        out[row] = torch.tensor(piece + tokens[n:length - 4], dtype=windows.dtype)
    return out
