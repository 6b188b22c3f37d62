"""Exponential moving average of a model's weights, used for sampling."""

from __future__ import annotations

import copy

import torch
from torch import nn


class EMA:
    """Keeps ``shadow``, a frozen copy of ``model`` whose floating weights trail the live ones.

    The effective decay warms up as min(decay, (1 + n) / (10 + n)) so early samples are not dominated
    by the random initialisation.
    """

    def __init__(self, model: nn.Module, decay: float):
        self.decay = decay
        self.updates = 0
        self.shadow = copy.deepcopy(model).eval().requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.updates += 1
        decay = min(self.decay, (1 + self.updates) / (10 + self.updates))
        # parameters()/buffers() skip tied duplicates, so a shared tensor is averaged once
        shadow = list(self.shadow.parameters())
        live = list(model.parameters())
        torch._foreach_lerp_(shadow, live, 1.0 - decay)
        for s, b in zip(self.shadow.buffers(), model.buffers()):
            s.copy_(b)  # running statistics (BatchNorm) follow the live model
