"""DDIM sampling (Song et al. 2021) as one short pure function, k-diffusion style.

The sampler knows nothing about networks or families: it gets an epsilon predictor, the starting
noise, the timesteps to visit and the schedule's abar. eta interpolates between the deterministic
DDIM ODE path (eta=0) and DDPM-like ancestral sampling (eta=1).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

# eps_fn(x_t, t) -> predicted noise, with t an int64 tensor of shape (B,)
EpsFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@torch.no_grad()
def sample_ddim(
    eps_fn: EpsFn,
    x: torch.Tensor,
    timesteps: torch.Tensor,
    alphas_cumprod: torch.Tensor,
    eta: float = 0.0,
    generator: torch.Generator | None = None,
    clip_x0: float | None = None,
) -> torch.Tensor:
    """Run DDIM from ``x`` (noise at ``timesteps[0]``) down to a clean sample.

    timesteps: descending int timesteps to visit; after the last one the sampler jumps to abar=1.
    alphas_cumprod: abar for every training timestep (float32 or float64, any device).
    eta: 0 gives a deterministic map from noise to sample; 1 adds the DDPM posterior's noise.
    generator: the only source of randomness (used when eta > 0).
    clip_x0: clamp the predicted clean sample to [-clip_x0, clip_x0] each step (images live in [-1, 1]);
      None leaves it free, as data with unbounded range needs.
    """
    abar = alphas_cumprod.to(device=x.device, dtype=torch.float32)
    ts = [int(t) for t in timesteps]
    for i, t in enumerate(ts):
        a_t = abar[t]
        a_prev = abar[ts[i + 1]] if i + 1 < len(ts) else abar.new_tensor(1.0)
        t_batch = torch.full((x.shape[0],), t, dtype=torch.long, device=x.device)
        eps = eps_fn(x, t_batch).float()

        x0 = (x - (1 - a_t).sqrt() * eps) / a_t.sqrt()
        if clip_x0 is not None:
            x0 = x0.clamp(-clip_x0, clip_x0)
            # keep eps consistent with the clipped x0, so the step stays on the line through both
            eps = (x - a_t.sqrt() * x0) / (1 - a_t).sqrt()

        # std of the fresh noise: eta times the DDPM posterior std between these two steps
        sigma = eta * ((1 - a_prev) / (1 - a_t) * (1 - a_t / a_prev)).clamp(min=0).sqrt()
        x = a_prev.sqrt() * x0 + (1 - a_prev - sigma**2).clamp(min=0).sqrt() * eps
        if eta > 0 and i + 1 < len(ts):
            x = x + sigma * torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    return x
