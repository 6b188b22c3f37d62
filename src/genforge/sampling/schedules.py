"""Noise schedules for diffusion, as plain functions of tensors.

Everything is expressed through ``alphas_cumprod`` (abar_t, the signal fraction left at step t):
x_t = sqrt(abar_t) * x_0 + sqrt(1 - abar_t) * eps. A beta schedule is one way to produce abar;
``sigmas_from_alphas_cumprod`` gives the continuous-noise-level view (x_t / sqrt(abar_t) = x_0 + sigma * eps)
that k-diffusion-style samplers work in, so such samplers can be added without touching training.

Schedules are computed in float64 (cumulative products of 1000 factors lose precision in float32)
and cast by the caller; MPS has no float64, so models keep float32 copies as buffers.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from genforge.errors import ConfigError


def linear_betas(timesteps: int, beta_start: float = 1e-4, beta_end: float = 0.02) -> torch.Tensor:
    """The DDPM schedule (Ho et al. 2020): betas evenly spaced from beta_start to beta_end.

    The defaults were chosen for 1000 steps; they are rescaled by 1000/timesteps so that a shorter
    chain still ends near pure noise.
    """
    scale = 1000.0 / timesteps
    return torch.linspace(beta_start * scale, beta_end * scale, timesteps, dtype=torch.float64).clamp(max=0.999)


def cosine_betas(timesteps: int, s: float = 0.008, max_beta: float = 0.999) -> torch.Tensor:
    """The improved-DDPM schedule (Nichol & Dhariwal 2021): abar follows cos^2, destroying less early on."""
    steps = torch.arange(timesteps + 1, dtype=torch.float64) / timesteps
    f = torch.cos((steps + s) / (1 + s) * math.pi / 2) ** 2
    abar = f / f[0]
    return (1 - abar[1:] / abar[:-1]).clamp(max=max_beta)


BETA_SCHEDULES: dict[str, Callable[..., torch.Tensor]] = {"linear": linear_betas, "cosine": cosine_betas}


def make_alphas_cumprod(
    schedule: str, timesteps: int, beta_start: float = 1e-4, beta_end: float = 0.02
) -> torch.Tensor:
    """abar_t for t = 0..timesteps-1 (float64), from a named beta schedule."""
    if schedule not in BETA_SCHEDULES:
        raise ConfigError(f"unknown noise schedule '{schedule}'; expected one of: {', '.join(BETA_SCHEDULES)}")
    if timesteps < 2:
        raise ConfigError(f"timesteps must be at least 2, got {timesteps}")
    if schedule == "linear":
        if not 0 < beta_start < beta_end < 1:
            raise ConfigError(f"linear schedule needs 0 < beta_start < beta_end < 1, got {beta_start}, {beta_end}")
        betas = linear_betas(timesteps, beta_start, beta_end)
    else:
        betas = BETA_SCHEDULES[schedule](timesteps)
    return torch.cumprod(1 - betas, dim=0)


def sigmas_from_alphas_cumprod(alphas_cumprod: torch.Tensor) -> torch.Tensor:
    """Noise level of each step in the variance-exploding view: sigma_t = sqrt((1 - abar_t) / abar_t)."""
    return ((1 - alphas_cumprod) / alphas_cumprod).sqrt()


def alphas_cumprod_from_sigmas(sigmas: torch.Tensor) -> torch.Tensor:
    """Inverse of ``sigmas_from_alphas_cumprod``: abar = 1 / (1 + sigma^2)."""
    return 1 / (1 + sigmas**2)


def spaced_timesteps(timesteps: int, steps: int) -> torch.Tensor:
    """``steps`` training timesteps to visit when sampling, descending from the noisiest (T-1) to 0.

    Starting at T-1 ("trailing" spacing) rather than at T - T/steps matters for few-step sampling:
    the sampler's first input is pure noise, which only matches the model's view at the last step.
    """
    if not 1 <= steps <= timesteps:
        raise ConfigError(f"sampling steps must be between 1 and {timesteps} (the model's timesteps), got {steps}")
    return torch.linspace(timesteps - 1, 0, steps, dtype=torch.float64).round().long()
