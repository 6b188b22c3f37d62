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


def check_steps(steps: int, timesteps: int) -> None:
    if not 1 <= steps <= timesteps:
        raise ConfigError(f"sampling steps must be between 1 and {timesteps} (the model's timesteps), got {steps}")


# How sampling_sigmas places its noise levels; the first is the default.
SPACINGS = ("trailing", "uniform", "karras")


def sampling_sigmas(
    alphas_cumprod: torch.Tensor, steps: int, spacing: str = "trailing", rho: float = 7.0
) -> torch.Tensor:
    """The ``steps + 1`` descending noise levels a sampler walks, ending in exactly 0 (float64).

    spacing:
      "trailing": training steps round(T - i*T/steps) - 1, starting at the noisiest, T-1. The sampler's
        first input is pure noise, which matches what the model saw only at the last training step,
        so this is the one to use for few steps. With steps == T it visits every training step.
      "uniform": the DDIM paper's even skip k = T // steps, i.e. t = 0, k, 2k, ..., (steps-1)k visited
        from the top down ("leading" spacing in diffusers' terms). It starts below T-1 when T/steps is
        not 1, a mismatch that costs quality at few steps; offered to reproduce the DDIM paper's setup.
      "karras": Karras et al. 2022 (EDM): evenly spaced in sigma^(1/rho) between the schedule's
        largest and smallest sigma, not on the training grid (the network takes float timesteps, see
        ``sigma_to_timestep``); rho=7 puts more steps at low noise, where detail is decided.
    """
    if spacing not in SPACINGS:
        raise ConfigError(f"unknown sigma spacing '{spacing}'; expected one of: {', '.join(SPACINGS)}")
    timesteps = alphas_cumprod.shape[0]
    check_steps(steps, timesteps)
    train_sigmas = sigmas_from_alphas_cumprod(alphas_cumprod.detach().to("cpu", torch.float64))
    i = torch.arange(steps, dtype=torch.float64)
    if spacing == "trailing":
        sigmas = train_sigmas[(timesteps - i * timesteps / steps).round().long() - 1]
    elif spacing == "uniform":
        sigmas = train_sigmas[(steps - 1 - i).long() * (timesteps // steps)]
    else:
        if not rho > 0:
            raise ConfigError(f"karras spacing needs rho > 0, got {rho}")
        lo, hi = train_sigmas.min() ** (1 / rho), train_sigmas.max() ** (1 / rho)
        sigmas = (hi + torch.linspace(0, 1, steps, dtype=torch.float64) * (lo - hi)) ** rho
    return torch.cat([sigmas, sigmas.new_zeros(1)])


def sigma_to_timestep(sigma: torch.Tensor, alphas_cumprod: torch.Tensor) -> torch.Tensor:
    """The (float) training timestep whose noise level is ``sigma``, for a network conditioned on t.

    Linear in log-sigma between neighbouring training steps, so it is exact (an integer) on the grid
    and continuous between; clamped to [0, T-1] outside the schedule's range (sigma 0 gives 0).
    Computed in sigma's dtype and device, with the grid cast there first, so that a float32 sigma taken
    from the grid maps to exactly its step too.
    """
    abar = alphas_cumprod.detach()
    if abar.device.type == "mps":  # no float64 there; elsewhere stay on the device (no sync per call)
        abar = abar.cpu()
    # the grid as sampling_sigmas computes it, cast to the query's dtype before the log, which is taken
    # where the query's is: a grid value's log is then bitwise the query's
    log_grid = sigmas_from_alphas_cumprod(abar.double()).to(sigma.dtype).to(sigma.device).log()
    log_sigma = sigma.log()
    high = torch.searchsorted(log_grid, log_sigma.contiguous()).clamp(1, log_grid.shape[0] - 1)
    low = high - 1
    frac = ((log_sigma - log_grid[low]) / (log_grid[high] - log_grid[low])).clamp(0, 1)
    return low.to(sigma.dtype) + frac
