"""Diffusion samplers as short pure functions of (denoise, x, sigmas), in the variance-exploding view.

A VP diffusion (DDPM) noises data as x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps. Dividing by
sqrt(abar_t) gives the variance-exploding (VE) form x = x0 + sigma * eps with sigma^2 = (1 - abar)/abar,
i.e. abar = 1/(1 + sigma^2) and x_ve = x_vp * sqrt(1 + sigma^2) (Song et al. 2021, "Score-based
generative modeling through SDEs"; Karras et al. 2022, "Elucidating the design space", EDM). In this
view every sampler needs only a denoiser D(x, sigma), the estimate of E[x0 | x], and a descending list
of noise levels; the probability-flow ODE is simply dx/dsigma = (x - D(x, sigma)) / sigma.

A network trained to predict eps at integer timesteps becomes a denoiser with
D(x, sigma) = x - sigma * eps_hat(x / sqrt(1 + sigma^2), sigma_to_timestep(sigma)); the schedule,
the spacing of the levels (``genforge.sampling.schedules.sampling_sigmas``) and the sampler are then
independent choices. Samplers here:

- ``sample_ddim``: DDIM (Song, Meng & Ermon 2021). In VE coordinates a DDIM step keeps the predicted
  x0 and rescales the predicted noise to the next level; eta=1 injects the DDPM posterior's noise.
- ``sample_ddpm``: ancestral sampling from the DDPM posterior (Ho et al. 2020), i.e. DDIM with eta=1.
- ``sample_euler``: Euler on the probability-flow ODE; algebraically the same map as DDIM with eta=0.
- ``sample_heun``: Heun's second-order method, EDM Algorithm 1 without churn.
- ``sample_dpmpp_2m``: DPM-Solver++(2M) (Lu et al. 2022), multistep second order in lambda = -log sigma.
- ``invert_ddim``: DDIM run upward, from a clean sample to the noise that DDIM maps back onto it.

Every sampler takes ``x`` already at noise level ``sigmas[0]`` and returns it at sigma 0; ``sigmas``
must end in 0. Randomness comes only from ``generator``.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from itertools import pairwise

import torch

from genforge import progress
from genforge.errors import ConfigError

# denoise(x, sigma) -> estimate of x0 for x = x0 + sigma * eps; sigma has shape (B,), all entries equal
Denoiser = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
# denoise_pair(x, sigma) -> (conditional, unconditional) estimates of x0, see ``guided``
DenoisePair = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


def _sigma_batch(x: torch.Tensor, sigma: float) -> torch.Tensor:
    # at least float32: a bf16 sigma would move the network's timestep by several training steps
    return torch.full((x.shape[0],), sigma, device=x.device, dtype=torch.promote_types(x.dtype, torch.float32))


def _noise(x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    return torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)


def ancestral_split(sigma: float, sigma_next: float, eta: float) -> tuple[float, float]:
    """Split a step from ``sigma`` to ``sigma_next`` into a deterministic move to ``sigma_down`` and
    fresh noise of std ``sigma_up``, with sigma_down^2 + sigma_up^2 = sigma_next^2.

    sigma_up = eta * sigma_next * sqrt(1 - sigma_next^2 / sigma^2) is DDIM's sigma_t(eta) divided by
    sqrt(abar_next), i.e. moved into VE coordinates; with eta=1 it is the std of the DDPM posterior
    q(x_next | x, x0).
    """
    if sigma_next == 0:
        return 0.0, 0.0
    ratio2 = (sigma_next / sigma) ** 2
    sigma_up = eta * sigma_next * math.sqrt(1 - ratio2)
    sigma_down = sigma_next * math.sqrt(1 - eta**2 * (1 - ratio2))  # stays > 0 for eta <= 1
    return sigma_down, sigma_up


@torch.no_grad()
def sample_ddim(
    denoise: Denoiser,
    x: torch.Tensor,
    sigmas: torch.Tensor,
    eta: float = 0.0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """DDIM: keep the predicted x0, move the predicted noise to the next level, add eta-scaled fresh noise.

    eta=0 is a deterministic map from noise to data; eta=1 samples the DDPM posterior at every step.
    """
    if not 0 <= eta <= 1:
        raise ConfigError(f"eta must be in [0, 1], got {eta}")
    levels = sigmas.tolist()
    for sigma, sigma_next in pairwise(levels):
        denoised = denoise(x, _sigma_batch(x, sigma))
        sigma_down, sigma_up = ancestral_split(sigma, sigma_next, eta)
        x = denoised + (sigma_down / sigma) * (x - denoised)
        if sigma_up > 0:
            x = x + sigma_up * _noise(x, generator)
    return x


def sample_ddpm(
    denoise: Denoiser, x: torch.Tensor, sigmas: torch.Tensor, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Ancestral sampling: draw each level from the DDPM posterior given the current x0 estimate.

    Between any two levels of the same forward process that posterior is DDIM's eta=1 step.
    """
    return sample_ddim(denoise, x, sigmas, eta=1.0, generator=generator)


@torch.no_grad()
def sample_euler(denoise: Denoiser, x: torch.Tensor, sigmas: torch.Tensor) -> torch.Tensor:
    """Euler's method on the probability-flow ODE dx/dsigma = (x - D(x, sigma)) / sigma."""
    levels = sigmas.tolist()
    for sigma, sigma_next in pairwise(levels):
        slope = (x - denoise(x, _sigma_batch(x, sigma))) / sigma
        x = x + (sigma_next - sigma) * slope
    return x


@torch.no_grad()
def sample_heun(denoise: Denoiser, x: torch.Tensor, sigmas: torch.Tensor) -> torch.Tensor:
    """Heun's method (EDM's deterministic sampler, Algorithm 1): an Euler step, corrected by the mean of
    the slopes at both ends. The step to sigma 0 stays Euler, since the slope there is 0/0."""
    levels = sigmas.tolist()
    for sigma, sigma_next in pairwise(levels):
        slope = (x - denoise(x, _sigma_batch(x, sigma))) / sigma
        x_euler = x + (sigma_next - sigma) * slope
        if sigma_next == 0:
            x = x_euler
        else:
            slope_next = (x_euler - denoise(x_euler, _sigma_batch(x, sigma_next))) / sigma_next
            x = x + (sigma_next - sigma) * (slope + slope_next) / 2
    return x


@torch.no_grad()
def sample_dpmpp_2m(denoise: Denoiser, x: torch.Tensor, sigmas: torch.Tensor) -> torch.Tensor:
    """DPM-Solver++(2M): the exact solution of the ODE for a denoiser output linear in lambda = -log sigma,
    fitted through this step's and the previous step's x0 estimates (Lu et al. 2022).

    The first step has no history and the step to sigma 0 has infinite h, so both are first order
    (DDIM steps); no extra network calls over DDIM.
    """
    levels = sigmas.tolist()
    previous, h_previous = None, 0.0
    for sigma, sigma_next in pairwise(levels):
        denoised = denoise(x, _sigma_batch(x, sigma))
        if sigma_next == 0:
            x = denoised
            continue
        h = math.log(sigma / sigma_next)  # the step in lambda
        estimate = denoised
        if previous is not None:
            r = h_previous / h
            estimate = (1 + 1 / (2 * r)) * denoised - (1 / (2 * r)) * previous
        x = (sigma_next / sigma) * x - math.expm1(-h) * estimate
        previous, h_previous = denoised, h
    return x


@torch.no_grad()
def invert_ddim(denoise: Denoiser, x0: torch.Tensor, sigmas: torch.Tensor) -> torch.Tensor:
    """The latent at noise level ``sigmas[0]`` that ``sample_ddim(..., eta=0)`` maps back to ``x0``.

    ``sigmas`` is the descending tensor a sampler gets; it is walked upward, each DDIM step taking its x0
    and noise estimates at the lower level (the ODE run backwards with explicit steps). The first step,
    from 0 to the smallest nonzero level, would need the 0/0 slope at sigma 0: x0 is taken as already
    at that level, an error of order sigma^2 there. Round-trip error shrinks with the number of steps.
    """
    levels = sigmas.flip(0).tolist()[1:]
    denoise = progress.counted(denoise, len(levels) - 1)
    x = x0
    for sigma, sigma_next in pairwise(levels):
        denoised = denoise(x, _sigma_batch(x, sigma))
        x = denoised + (sigma_next / sigma) * (x - denoised)
    return x


def guided(denoise_pair: DenoisePair, scale: float) -> Denoiser:
    """Classifier-free guidance (Ho & Salimans 2022) on x0 estimates: uncond + scale * (cond - uncond).

    scale 0 gives exactly the unconditional estimate, 1 exactly the conditional one, > 1 pushes past it.
    ``denoise_pair`` returns both estimates so a network can compute them in one batched call, e.g.
    ``lambda x, s: net_denoise(torch.cat([x, x]), torch.cat([s, s]), torch.cat([labels, null])).chunk(2)``.
    """

    def denoise(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        cond, uncond = denoise_pair(x, sigma)
        if scale == 0:
            return uncond
        if scale == 1:
            return cond
        return uncond + scale * (cond - uncond)

    return denoise


SAMPLERS: dict[str, Callable[..., torch.Tensor]] = {
    "ddpm": sample_ddpm,
    "ddim": sample_ddim,
    "euler": sample_euler,
    "heun": sample_heun,
    "dpmpp_2m": sample_dpmpp_2m,
}


def _sampler(name: str) -> Callable[..., torch.Tensor]:
    if name not in SAMPLERS:
        raise ConfigError(f"unknown sampler '{name}'; expected one of: {', '.join(SAMPLERS)}")
    return SAMPLERS[name]


def sample(
    name: str,
    denoise: Denoiser,
    x: torch.Tensor,
    sigmas: torch.Tensor,
    *,
    eta: float | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Run the sampler called ``name``. eta is only for samplers that take it (ddim); the generator is
    passed to those that draw noise and ignored by the deterministic ones. Each call of ``denoise`` ticks
    ``genforge.progress`` (k, calls in all)."""
    sampler = _sampler(name)
    accepts = inspect.signature(sampler).parameters
    options: dict[str, object] = {}
    if eta is not None:
        if "eta" not in accepts:
            takers = [n for n, s in SAMPLERS.items() if "eta" in inspect.signature(s).parameters]
            raise ConfigError(f"sampler '{name}' takes no eta; only {', '.join(takers)} does")
        options["eta"] = eta
    if "generator" in accepts:
        options["generator"] = generator
    # one tick per network call; Heun calls twice on every step but one that ends at sigma 0
    calls = len(sigmas) - 1 + (int((sigmas[1:] > 0).sum()) if name == "heun" else 0)
    return sampler(progress.counted(denoise, calls), x, sigmas, **options)


def denoiser_calls(name: str, steps: int) -> int:
    """Network evaluations ``name`` makes over ``steps`` steps ending at sigma 0 (Heun: 2 a step, 1 on the last)."""
    _sampler(name)
    if steps < 1:
        raise ConfigError(f"sampling steps must be at least 1, got {steps}")
    return 2 * steps - 1 if name == "heun" else steps
