"""Exponential moving average of a model's weights, used for sampling."""

from __future__ import annotations

import copy

import torch
from torch import nn


class EMA:
    """Keeps ``shadow``, a frozen copy of ``model`` whose floating weights trail the live ones.

    The decay of the n-th update is ``decay_at(n)``: without ``gamma`` it warms up as
    min(decay, (1 + n) / (10 + n)) so early samples are not dominated by the random initialisation; with
    ``gamma`` > 0 it is the power-function EMA of Karras et al. 2024, (1 - 1/n)^(gamma + 1) (capped at
    ``decay``), which averages over a fixed share of the run so far rather than a fixed number of steps:
    a run's length need not be known when choosing it, and short runs are not dominated by their start.
    """

    def __init__(self, model: nn.Module, decay: float, gamma: float = 0.0):
        self.decay = decay
        self.gamma = gamma
        self.updates = 0
        self.shadow = copy.deepcopy(model).eval().requires_grad_(False)

    def decay_at(self, n: int) -> float:
        """The decay of update ``n`` (1-based)."""
        if self.gamma > 0:
            return min(self.decay, (1 - 1 / n) ** (self.gamma + 1))
        return min(self.decay, (1 + n) / (10 + n))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.updates += 1
        decay = self.decay_at(self.updates)
        # parameters()/buffers() skip tied duplicates, so a shared tensor is averaged once
        shadow = list(self.shadow.parameters())
        live = list(model.parameters())
        torch._foreach_lerp_(shadow, live, 1.0 - decay)
        for s, b in zip(self.shadow.buffers(), model.buffers()):
            s.copy_(b)  # running statistics (BatchNorm) follow the live model
