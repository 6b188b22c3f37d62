"""Denoising diffusion: a UNet learns to predict the noise added to images (DDPM, Ho et al. 2020),
and DDIM (Song et al. 2021) turns that predictor into a sampler with few steps.

Training: pick t uniformly, noise the batch to x_t = sqrt(abar_t) x + sqrt(1 - abar_t) eps, regress eps
with MSE (in float32). Sampling: start from N(0, I) and walk ``steps`` DDIM steps down to t=0, clamping
the predicted clean image to [-1, 1] on the way. The schedule lives in genforge.sampling.schedules,
the sampler in genforge.sampling.ddim, the network in genforge.nets.unet; this file wires them up.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch

from genforge.data.spec import DataSpec
from genforge.errors import ConfigError
from genforge.families.base import Family, Phase, eval_mode
from genforge.nets.unet import UNet
from genforge.sampling.ddim import sample_ddim
from genforge.sampling.schedules import make_alphas_cumprod, spaced_timesteps


@dataclass
class DiffusionConfig:
    # UNet size; the defaults suit 28x28 MNIST trained for a few minutes on a laptop CPU
    base_channels: int = 16
    channel_mults: list[int] = field(default_factory=lambda: [1, 2, 2])
    blocks_per_level: int = 1
    attention_resolutions: list[int] = field(default_factory=lambda: [7])
    dropout: float = 0.0
    # noise schedule
    timesteps: int = 1000
    schedule: str = "linear"  # linear | cosine
    beta_start: float = 1e-4  # linear schedule only, for 1000 timesteps (rescaled for other counts)
    beta_end: float = 0.02
    # sampling defaults, overridable per call with the `steps` and `eta` conditions. eta=1 (fresh noise
    # each step) hides much of a briefly trained model's error: after a few CPU minutes on MNIST, eta=0
    # gives speckled, blotchy digits where eta=1 gives clean strokes. Well-trained models can use eta=0.
    sample_steps: int = 50
    eta: float = 1.0


class Diffusion(Family):
    name = "diffusion"
    Config = DiffusionConfig
    modalities = ("image",)
    train_defaults: ClassVar[dict[str, Any]] = {"lr": 2e-3, "batch_size": 16, "ema_decay": 0.995, "warmup_steps": 100}

    def __init__(self, config: DiffusionConfig, spec: DataSpec):
        super().__init__(config, spec)
        c, h, w = spec.shape
        if not 0 <= config.eta <= 1:
            raise ConfigError(f"eta must be in [0, 1], got {config.eta}")
        self.unet = UNet(
            in_channels=c,
            image_size=(h, w),
            base_channels=config.base_channels,
            channel_mults=tuple(config.channel_mults),
            blocks_per_level=config.blocks_per_level,
            attention_resolutions=tuple(config.attention_resolutions),
            dropout=config.dropout,
        )
        abar = make_alphas_cumprod(config.schedule, config.timesteps, config.beta_start, config.beta_end)
        spaced_timesteps(config.timesteps, config.sample_steps)  # validates sample_steps early
        # derived from the config, so not saved with the weights; float32 because MPS has no float64
        self.register_buffer("alphas_cumprod", abar.float(), persistent=False)

    def predict_eps(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        if x_t.is_cuda:  # cuDNN convolutions are faster in NHWC, and the layout propagates through the net
            x_t = x_t.contiguous(memory_format=torch.channels_last)
        return self.unet(x_t, t)

    def training_step(self, batch: dict[str, torch.Tensor]) -> Iterator[Phase]:
        x0 = batch["x"]
        t = torch.randint(0, self.config.timesteps, (x0.shape[0],), device=x0.device)
        noise = torch.randn_like(x0)
        abar = self.alphas_cumprod[t].view(-1, 1, 1, 1)
        x_t = abar.sqrt() * x0 + (1 - abar).sqrt() * noise
        loss = (self.predict_eps(x_t, t).float() - noise.float()).pow(2).mean()
        yield "main", loss, {}

    @torch.no_grad()
    def sample(
        self,
        n: int,
        generator: torch.Generator | None = None,
        steps: int | None = None,
        eta: float | None = None,
        label: Any = None,
        **conditions: Any,
    ) -> torch.Tensor:
        """``n`` images in [-1, 1] from ``steps`` DDIM steps; the generator alone decides them, for any eta."""
        self.reject_conditions(self.name, {"label": label, **conditions})
        steps = self.config.sample_steps if steps is None else int(steps)
        eta = self.config.eta if eta is None else float(eta)
        if not 0 <= eta <= 1:
            raise ConfigError(f"eta must be in [0, 1], got {eta}")
        timesteps = spaced_timesteps(self.config.timesteps, steps)

        with eval_mode(self):
            x = torch.randn((n, *self.spec.shape), generator=generator, device=self.device)
            x = sample_ddim(self.predict_eps, x, timesteps, self.alphas_cumprod, eta, generator, clip_x0=1.0)
        return x.clamp(-1, 1).contiguous()
