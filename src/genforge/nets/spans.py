"""A table's encoded row, span by span: what a family's output layer must produce for each column.

The table modality encodes a row as one float vector and describes it in ``DataSpec.table["spans"]``: each
span is a column's continuous part ("value", and "code" for the binary code of a many-category column: about
[-1, 1], a tanh output) or a group of which exactly one entry is hot ("mode", "category", "missing": a softmax
output). Families turn raw outputs into rows with ``activate`` (or, where a discriminator must backpropagate
through them in training, ``gumbel_activate``) and score rows with ``reconstruction_nll``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from genforge import draws
from genforge.data.spec import SOFTMAX_SPANS, TANH_SPANS, DataSpec, TableSpan
from genforge.errors import ConfigError

HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)
TINY = 1e-20  # keeps -log(-log(u)) finite for a uniform draw of exactly 0


def spans_of(spec: DataSpec) -> list[TableSpan]:
    """The spans of table data, in order, checked to tile the row."""
    spans = spec.table_spans()
    if not spans:
        raise ConfigError(f"{spec.modality} data has no table layout (DataSpec.table); expected table rows")
    position = 0
    for span in spans:
        if span.kind not in TANH_SPANS + SOFTMAX_SPANS or span.start != position or span.width < 1:
            raise ConfigError(f"table layout span {span} is not valid; expected kinds "
                              f"{', '.join(TANH_SPANS + SOFTMAX_SPANS)} tiling the row")
        position = span.stop
    if position != spec.shape[0]:
        raise ConfigError(f"table layout covers {position} of the row's {spec.shape[0]} values")
    return spans


def continuous_mask(spans: list[TableSpan], width: int, device=None) -> torch.Tensor:
    """(width,) bool: which entries of a row are continuous."""
    mask = torch.zeros(width, dtype=torch.bool, device=device)
    for span in spans:
        if span.activation == "tanh":
            mask[span.start:span.stop] = True
    return mask


def activate(out: torch.Tensor, spans: list[TableSpan], generator: torch.Generator | None = None,
             sample: bool = True) -> torch.Tensor:
    """Raw outputs (B, D) -> encoded rows: tanh on continuous spans; each one-hot group a category drawn from
    its softmax with ``generator`` (``sample``) or its most likely one, as a one-hot vector."""
    rows = torch.empty_like(out, dtype=torch.float32)
    for span in spans:
        logits = out[:, span.start:span.stop].float()
        if span.activation == "tanh":
            rows[:, span.start:span.stop] = torch.tanh(logits)
            continue
        if sample:
            choice = torch.multinomial(torch.softmax(logits, dim=1), 1, generator=generator).squeeze(1)
        else:
            choice = logits.argmax(dim=1)
        rows[:, span.start:span.stop] = F.one_hot(choice, span.width).float()
    return rows


def gumbel_noise(u: torch.Tensor) -> torch.Tensor:
    """Standard Gumbel draws from uniforms ``u`` (kept finite for a uniform of exactly 0)."""
    return -torch.log(-torch.log(u.clamp_min(TINY)))


def gumbel_activate(out: torch.Tensor, spans: list[TableSpan], tau: float) -> torch.Tensor:
    """Raw outputs (B, D) -> training rows a discriminator's gradient flows back through: tanh on continuous
    spans, and on each one-hot group a Gumbel-softmax of temperature ``tau`` (Jang et al., 2017): a soft draw
    from the group's softmax, near one-hot for a small ``tau`` (CTGAN's 0.2, hard=False). The Gumbel noise is
    the whole batch's (genforge.draws), so a split batch draws what an unsplit one does."""
    out = out.float()
    u = draws.rand(out.shape[0], out.shape[1], device=out.device)
    gumbel = gumbel_noise(u)
    parts = []
    for span in spans:
        logits = out[:, span.start:span.stop]
        if span.activation == "tanh":
            parts.append(torch.tanh(logits))
        else:
            parts.append(torch.softmax((logits + gumbel[:, span.start:span.stop]) / tau, dim=1))
    return torch.cat(parts, dim=1)


def reconstruction_nll(out: torch.Tensor, x: torch.Tensor, spans: list[TableSpan], sigma: torch.Tensor) -> torch.Tensor:
    """(B,) negative log-likelihood of rows ``x`` under the decoder's ``out``: a Gaussian N(x; tanh(out),
    sigma^2) per continuous entry (``sigma``: (D,), used where continuous) and a categorical per one-hot
    group (cross-entropy against its hot entry)."""
    out = out.float()
    total = torch.zeros(x.shape[0], device=x.device)
    mask = continuous_mask(spans, x.shape[1], x.device)
    if mask.any():
        s = sigma[mask]
        z = (x[:, mask] - torch.tanh(out[:, mask])) / s
        total = total + (0.5 * z * z + s.log() + HALF_LOG_2PI).sum(dim=1)
    for span in spans:
        if span.activation == "softmax":
            target = x[:, span.start:span.stop].argmax(dim=1)
            total = total + F.cross_entropy(out[:, span.start:span.stop], target, reduction="none")
    return total
