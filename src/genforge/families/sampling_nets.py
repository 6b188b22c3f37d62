"""The networks a family's sampler runs, described for export: what goes in, what comes out, which axes vary.

The family knows its networks, the exporter knows files: ``Family.sampling_nets()`` lists them as ``SamplingNet``s
and ``genforge.export.onnx_export`` writes one file per net. A net's ``module`` takes its inputs positionally and
returns a tensor or a tuple of tensors, with no Python branch on a size or a value, so that one traced graph serves
every batch size (and, for a transformer, every sequence and cache length). The helpers below are the pieces
several families share: the module that wraps a family's own function, the batch axes, and traceable forms of two
steps whose usual code does not trace (a noise level's diffusion timestep, a table row's spans up to the draws).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

EXAMPLE_BATCH = 2  # the example inputs' batch; every exported net takes any batch size
BATCH_AXIS = {0: "batch"}


@dataclass
class SamplingNet:
    """One network a sampler calls: its file stem, the module, named example inputs (batch first, in the module's
    argument order), output names, the axes that may change size ({name: {axis: axis name}}) and one sentence for
    the model card (what goes in, what comes out, value ranges, how a sampler uses it). ``facts`` are the numbers
    a sampler needs beside the net (a diffusion run's noise levels, a transformer's vocabulary...), as JSON values."""

    name: str
    module: nn.Module
    inputs: dict[str, torch.Tensor]
    outputs: list[str]
    dynamic_axes: dict[str, dict[int, str]]
    summary: str
    facts: dict[str, Any] = field(default_factory=dict)


class Traced(nn.Module):
    """``fn(*inputs)`` as a module to trace. It holds ``owner``, the family whose weights ``fn`` reads, so that
    export modes (eval) reach them; only the weights ``fn`` uses end up in the traced graph."""

    def __init__(self, fn: Callable[..., torch.Tensor | tuple[torch.Tensor, ...]], owner: nn.Module):
        super().__init__()
        self.fn = fn
        self.owner = owner

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, ...]:
        return self.fn(*inputs)


def sampling_net(name: str, fn: Callable[..., torch.Tensor | tuple[torch.Tensor, ...]], owner: nn.Module,
                 inputs: dict[str, torch.Tensor], outputs: Sequence[str], summary: str,
                 axes: dict[str, dict[int, str]] | None = None, facts: dict[str, Any] | None = None) -> SamplingNet:
    """A SamplingNet of ``fn`` whose every input and output has a dynamic batch axis 0, plus ``axes``."""
    dynamic = {key: dict(BATCH_AXIS) for key in [*inputs, *outputs]}
    for key, more in (axes or {}).items():
        dynamic[key].update(more)
    return SamplingNet(name, Traced(fn, owner), dict(inputs), list(outputs), dynamic, summary, dict(facts or {}))


def example_labels(num_classes: int | None, device: torch.device) -> dict[str, torch.Tensor]:
    """{"labels": (EXAMPLE_BATCH,) int64 class ids} for a class-conditional net, else {}."""
    if not num_classes:
        return {}
    return {"labels": torch.arange(EXAMPLE_BATCH, device=device) % num_classes}


def label_note(num_classes: int | None, what: str) -> str:
    """The summary's clause on the labels input ("" without classes)."""
    if not num_classes:
        return ""
    return f" labels (B,) int64 class ids in [0, {num_classes}) {what}."


# ---- diffusion: the timestep of a noise level -------------------------------------------------------------------
def log_sigma_grid(alphas_cumprod: torch.Tensor) -> torch.Tensor:
    """log sigma_t of the training steps, float32, computed as ``sampling.schedules.sigma_to_timestep`` computes
    it for a float32 query (in float64, cast before the log), so both map a noise level to the same timestep."""
    abar = alphas_cumprod.detach().cpu().double()
    return ((1 - abar) / abar).sqrt().float().log()


def grid_timestep(sigma: torch.Tensor, log_grid: torch.Tensor) -> torch.Tensor:
    """``sigma_to_timestep`` in traceable form: the float timestep of each noise level (B,), linear in log sigma
    between neighbouring training steps, clamped to [0, T-1]. ``searchsorted`` (no ONNX operator) becomes a count:
    for an ascending grid, the index of the first entry >= x is the number of entries below x."""
    log_sigma = sigma.log()
    high = (log_grid[None, :] < log_sigma[:, None]).to(torch.int64).sum(dim=1).clamp(1, log_grid.shape[0] - 1)
    low = high - 1
    frac = ((log_sigma - log_grid[low]) / (log_grid[high] - log_grid[low])).clamp(0, 1)
    return low.to(sigma.dtype) + frac


# ---- tables: a row's spans ---------------------------------------------------------------------------------------
def span_probabilities(out: torch.Tensor, spans: Sequence) -> torch.Tensor:
    """Raw outputs (B, D) -> what a row sampler draws from: tanh on continuous spans (the values themselves) and a
    softmax on each one-hot group (its categories' probabilities; ``nets.spans.activate`` draws one from them)."""
    out = out.float()
    parts = []
    for span in spans:
        logits = out[:, span.start:span.stop]
        parts.append(torch.tanh(logits) if span.activation == "tanh" else torch.softmax(logits, dim=1))
    return torch.cat(parts, dim=1)


def span_layout(spans: Sequence) -> list[dict[str, Any]]:
    """The row's spans as onnx.json lists them: column, kind, start and width each."""
    return [{"column": s.column, "kind": s.kind, "start": s.start, "width": s.width} for s in spans]


def spans_note() -> str:
    """How a sampler turns ``span_probabilities`` into an encoded row (the summary's last sentence)."""
    return (" A row sampler keeps the continuous spans and draws one category per one-hot group from its "
            "probabilities (onnx.json lists the spans); genforge's table transform decodes the row.")
