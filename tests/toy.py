"""A tiny two-optimizer family and an in-memory dataset, for trainer tests that need no real model."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from genforge.data.spec import DataSpec
from genforge.families.base import Family, OptimizerGroup


@dataclass
class ToyConfig:
    hidden: int = 8
    nan_from_step: int = -1  # make the loss NaN from this many training_step calls on (-1: never)
    nan_count: int = 10**9  # ... for this many calls


class Toy(Family):
    """Fits images with a small MLP ("a") and a learned offset ("b"); noise and dropout exercise the seeding."""

    name = "toy"
    Config = ToyConfig
    train_defaults = {"lr": 1e-2, "warmup_steps": 2}

    def __init__(self, config: ToyConfig, spec: DataSpec):
        super().__init__(config, spec)
        d = int(torch.tensor(spec.shape).prod())
        self.net = nn.Sequential(nn.Linear(d, config.hidden), nn.Dropout(0.1), nn.Tanh(), nn.Linear(config.hidden, d))
        self.offset = nn.Parameter(torch.zeros(d))
        self.register_buffer("calls", torch.zeros((), dtype=torch.long))

    def optimizer_groups(self):
        return {"a": OptimizerGroup(list(self.net.parameters())), "b": OptimizerGroup([self.offset], lr=5e-2)}

    def training_step(self, batch):
        x = batch["x"].flatten(1)
        self.calls += 1
        c = self.config
        poison = c.nan_from_step >= 0 and c.nan_from_step < int(self.calls) <= c.nan_from_step + c.nan_count
        noisy = x + 0.1 * torch.randn_like(x)
        loss_a = (self.net(noisy) - x).pow(2).mean()
        if poison:
            loss_a = loss_a * float("nan")
        yield "a", loss_a, {"noise": noisy.std()}
        loss_b = (self.offset - x.mean(0)).pow(2).mean() + 0.0 * self.net[0].weight.sum()
        yield "b", loss_b, {}

    @torch.no_grad()
    def sample(self, n, generator=None, **conditions):
        self.reject_conditions(self.name, conditions)
        z = torch.randn(n, self.offset.numel(), generator=generator, device=self.device)
        return (self.net(z) + self.offset).clamp(-1, 1).view(n, *self.spec.shape)


class ToyImages:
    def __init__(self, n: int = 64, shape=(1, 4, 4), seed: int = 0):
        g = torch.Generator().manual_seed(seed)
        self.x = torch.rand(n, *shape, generator=g) * 2 - 1

    def __len__(self):
        return len(self.x)

    def batch(self, batch_size, generator):
        idx = torch.randint(len(self.x), (batch_size,), generator=generator)
        return {"x": self.x[idx]}


class ToyPrepared:
    def __init__(self, shape=(1, 4, 4)):
        self.spec = DataSpec(modality="image", shape=shape)
        self.train = ToyImages(shape=shape)
        self.val = ToyImages(n=16, shape=shape, seed=1)
        self.tokenizer = None
