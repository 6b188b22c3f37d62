"""Walking a generator's latent space: spherical interpolation and blends, as small pure functions.

Latents drawn from N(0, I) in d dimensions live near a sphere of radius sqrt(d); a straight line between
two of them passes closer to the origin, where a generator has seen few latents, so its midpoint images
look washed out. Spherical interpolation (slerp, Shoemake 1985; White 2016 for GANs) keeps the path
on the shell.
"""

from __future__ import annotations

import torch

from genforge.errors import ConfigError


def slerp(a: torch.Tensor, b: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Points along the great circle from ``a`` to ``b`` (each (d,)) at fractions ``t`` (k,): (k, d).

    The norm is interpolated linearly; nearly parallel endpoints fall back to a straight line.
    """
    a64, b64, t64 = a.double(), b.double(), t.double()[:, None]
    na, nb = a64.norm(), b64.norm()
    if na == 0 or nb == 0:
        return ((1 - t64) * a64 + t64 * b64).to(a.dtype)
    cos = torch.clamp((a64 / na) @ (b64 / nb), -1.0, 1.0)
    omega = torch.arccos(cos)
    if omega < 1e-4:
        return ((1 - t64) * a64 + t64 * b64).to(a.dtype)
    direction = (torch.sin((1 - t64) * omega) * a64 / na + torch.sin(t64 * omega) * b64 / nb) / torch.sin(omega)
    return (direction * ((1 - t64) * na + t64 * nb)).to(a.dtype)


def interpolation(latents: torch.Tensor, n: int) -> torch.Tensor:
    """2 latents (2, d) -> a strip of n (n, d) from the first to the second; 4 latents (4, d) -> an n x n grid
    (n*n, d), row by row: the top row runs from latents[0] to latents[1], the bottom row from latents[2]
    to latents[3], and each column runs from top to bottom."""
    if not isinstance(n, int) or isinstance(n, bool) or n < 2:
        raise ConfigError(f"an interpolation needs at least 2 points per side, got {n!r}")
    t = torch.linspace(0, 1, n, device=latents.device)
    if latents.shape[0] == 2:
        return slerp(latents[0], latents[1], t)
    if latents.shape[0] == 4:
        top, bottom = slerp(latents[0], latents[1], t), slerp(latents[2], latents[3], t)
        columns = [slerp(top[j], bottom[j], t) for j in range(n)]  # each (n rows, d)
        return torch.stack(columns, dim=1).reshape(n * n, -1)
    raise ConfigError(f"interpolate between 2 seeds (a strip) or 4 (a grid), got {latents.shape[0]}")


def blend(z: torch.Tensor, noise: torch.Tensor, strength: float) -> torch.Tensor:
    """sqrt(1 - s^2) z + s noise: variations of a latent that stay on the prior's shell when z and noise
    are independent prior draws. Strength 0 returns z, 1 returns the noise (an unrelated sample)."""
    if not isinstance(strength, (int, float)) or isinstance(strength, bool) or not 0 <= strength <= 1:
        raise ConfigError(f"strength must be in [0, 1], got {strength!r}")
    return (1 - strength**2) ** 0.5 * z + strength * noise


def truncate(z: torch.Tensor, psi: float | None) -> torch.Tensor:
    """The truncation trick in its psi form: z -> psi * z, the latent pulled toward the prior's mean (0)."""
    if psi is None:
        return z
    if not isinstance(psi, (int, float)) or isinstance(psi, bool) or not 0 <= psi <= 1:
        raise ConfigError(f"truncation must be a number in [0, 1] (1: off, 0: the mean latent), got {psi!r}")
    return z * float(psi)
