"""GAN objectives and regularisers as small pure functions of logits, critics and images.

Losses (``LOSSES``), each a discriminator loss and a generator loss over raw discriminator outputs:

- ``"ns"``: the non-saturating loss of Goodfellow et al. (2014), "Generative Adversarial Nets", in
  softplus form: -log sigmoid(l) = softplus(-l) and -log(1 - sigmoid(l)) = softplus(l). The generator
  maximises log D(G(z)) instead of minimising log(1 - D(G(z))), whose gradient vanishes early on.
- ``"hinge"``: Lim & Ye (2017), "Geometric GAN", as used by SNGAN (Miyato et al., 2018) and SAGAN (Zhang
  et al., 2019): D minimises relu(1 - l_real) + relu(1 + l_fake), G minimises -l_fake.
- ``"wgan"``: the Wasserstein critic loss of Arjovsky et al. (2017), E[l_fake] - E[l_real], G minimises
  -E[l_fake]. Only meaningful with a Lipschitz constraint: pair it with ``gradient_penalty`` (WGAN-GP).
- ``"lsgan"``: least squares, Mao et al. (2017), "Least Squares Generative Adversarial Networks", with
  targets b = 1 for reals, a = 0 for fakes and c = 1 for the generator, and the paper's factor 1/2:
  D minimises 1/2 E[(l_real - 1)^2] + 1/2 E[l_fake^2], G minimises 1/2 E[(l_fake - 1)^2].

Regularisers:

- ``gradient_penalty``: WGAN-GP, Gulrajani et al. (2017), "Improved Training of Wasserstein GANs":
  E[(||grad_x D(x_hat)||_2 - 1)^2] at random points x_hat between reals and fakes; the caller scales it
  (the paper's lambda is 10).
- ``r1_penalty``: R1, Mescheder et al. (2018), "Which Training Methods for GANs do actually Converge?":
  1/2 E[||grad_x D(x)||^2] on reals. The caller multiplies by gamma. Lazy regularisation (Karras et al.,
  2020, "Analyzing and Improving the Image Quality of StyleGAN", StyleGAN2) adds it only every k-th
  discriminator step, multiplied by k so its average strength is unchanged.
- ``apply_spectral_norm``: spectral normalisation, Miyato et al. (2018), "Spectral Normalization for
  Generative Adversarial Networks": each conv and linear weight is divided by a power-iteration
  estimate of its largest singular value, so each layer is (about) 1-Lipschitz.

Training-health statistics: ``accuracy`` (how often D tells reals and fakes apart) and ``diversity``
(how spread a batch of samples is; 0 when the generator has collapsed to one output).

Every loss is computed in float32 whatever the autocast precision: the logits are cast first, because
softplus and squares of bf16 logits lose the small differences the game is made of.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize
from torch.nn.utils.parametrizations import spectral_norm

from genforge import draws
from genforge.errors import ConfigError

LOSSES = ("ns", "hinge", "wgan", "lsgan")

# A discriminator output above this counts as "real" in ``accuracy``: logits for ns/hinge/wgan, while
# lsgan's outputs are regressed onto the targets 1 (real) and 0 (fake), so the midpoint is 0.5.
DECISION_THRESHOLD = {"ns": 0.0, "hinge": 0.0, "wgan": 0.0, "lsgan": 0.5}

# Layers whose weights spectral normalisation constrains; embeddings are lookups, not linear maps of
# the input, and normalising them would only shrink a projection discriminator's class term.
SPECTRAL_NORM_LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d,
                        nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)

# Keeps the gradient norm differentiable where the gradient is exactly zero (sqrt'(0) is infinite);
# against norms of order 1 it shifts the penalty by about 1e-12.
NORM_EPS = 1e-12


def check_loss(kind: str) -> str:
    if kind not in LOSSES:
        raise ConfigError(f"unknown GAN loss '{kind}'; expected one of: {', '.join(LOSSES)}")
    return kind


def discriminator_loss(kind: str, real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """The discriminator's (critic's) loss for loss ``kind``: a scalar to minimise."""
    check_loss(kind)
    real, fake = real_logits.float(), fake_logits.float()
    if kind == "ns":
        return F.softplus(-real).mean() + F.softplus(fake).mean()
    if kind == "hinge":
        return F.relu(1 - real).mean() + F.relu(1 + fake).mean()
    if kind == "wgan":
        return fake.mean() - real.mean()
    return 0.5 * (real - 1).square().mean() + 0.5 * fake.square().mean()


def generator_loss(kind: str, fake_logits: torch.Tensor) -> torch.Tensor:
    """The generator's loss for loss ``kind``, from the discriminator's outputs on fakes: a scalar to minimise."""
    check_loss(kind)
    fake = fake_logits.float()
    if kind == "ns":
        return F.softplus(-fake).mean()
    if kind in ("hinge", "wgan"):
        return -fake.mean()
    return 0.5 * (fake - 1).square().mean()


def _call(critic: Callable[..., torch.Tensor], x: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
    # plain critics (an nn.Sequential, a lambda) take one argument; conditional ones take labels too
    return critic(x) if labels is None else critic(x, labels)


def gradient_penalty(critic: Callable[..., torch.Tensor], real: torch.Tensor, fake: torch.Tensor,
                     labels: torch.Tensor | None = None,
                     generator: torch.Generator | None = None) -> torch.Tensor:
    """WGAN-GP: mean over the batch of (||grad_x critic(x_hat)||_2 - 1)^2, a scalar.

    x_hat = real + u * (fake - real) with one u ~ U(0, 1) per sample (drawn from ``generator`` when
    given, on the generator's device). Reals and fakes are detached: the penalty constrains the critic
    only. The gradient is taken with ``create_graph=True`` so the penalty itself trains the critic.
    ``critic`` is called as ``critic(x_hat)``, or ``critic(x_hat, labels)`` when labels are given; it
    returns one output per sample (any shape whose sum is the sum of per-sample outputs).
    """
    if real.shape != fake.shape:
        raise ValueError(f"gradient_penalty needs reals and fakes of one shape, got {tuple(real.shape)} "
                         f"and {tuple(fake.shape)}")
    real, fake = real.detach(), fake.detach()
    device = generator.device if generator is not None else real.device
    if generator is None:  # training: this part's rows of the whole batch's draw (genforge.draws)
        u = draws.rand(real.shape[0], device=device).to(real.device, real.dtype)
    else:
        u = torch.rand(real.shape[0], generator=generator, device=device).to(real.device, real.dtype)
    u = u.view(-1, *([1] * (real.dim() - 1)))
    x_hat = (real + u * (fake - real)).requires_grad_(True)
    out = _call(critic, x_hat, labels)
    # samples are independent, so d(sum of outputs)/dx_hat holds each sample's own gradient
    (grad,) = torch.autograd.grad(out.float().sum(), x_hat, create_graph=True)
    norm = (grad.float().flatten(1).square().sum(dim=1) + NORM_EPS).sqrt()
    return (norm - 1).square().mean()


def r1_input(real: torch.Tensor) -> torch.Tensor:
    """Real images as a fresh leaf that records gradients: pass this to D, then its logits to ``r1_penalty``."""
    return real.detach().requires_grad_(True)


def r1_penalty(real_logits: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    """R1: 1/2 * mean over the batch of ||d D(x) / dx||^2 at the reals, a scalar.

    ``real`` must be the tensor D was called on, with ``requires_grad`` set before the call (see
    ``r1_input``); ``real_logits`` are D's outputs on it, one per sample. The caller adds
    ``gamma * r1_penalty(...)`` to the discriminator loss, or, lazily every k steps, ``k * gamma * ...``.
    """
    if not real.requires_grad:
        raise ValueError("r1_penalty needs the reals D saw to require gradients: call D on r1_input(real)")
    (grad,) = torch.autograd.grad(real_logits.float().sum(), real, create_graph=True)
    return 0.5 * grad.float().flatten(1).square().sum(dim=1).mean()


def apply_spectral_norm(module: nn.Module, n_power_iterations: int = 1) -> nn.Module:
    """Spectrally normalise every conv and linear weight in ``module`` (in place) and return it.

    Uses ``torch.nn.utils.parametrizations.spectral_norm``: in train mode each forward pass runs
    ``n_power_iterations`` steps of power iteration on the persistent singular-vector estimates; in eval
    mode the estimates are frozen. Layers already parametrised are left alone, so calling it twice is
    harmless. Embeddings and normalisation layers are not touched.
    """
    layers = [m for m in module.modules()
              if isinstance(m, SPECTRAL_NORM_LAYERS) and not parametrize.is_parametrized(m, "weight")]
    for layer in layers:  # collected first: parametrising adds submodules while modules() would walk them
        spectral_norm(layer, n_power_iterations=n_power_iterations)
    return module


def accuracy(real_logits: torch.Tensor, fake_logits: torch.Tensor, kind: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(share of reals D calls real, share of fakes D calls fake), each a float32 scalar in [0, 1].

    The decision threshold depends on the loss (``DECISION_THRESHOLD``). Both near 1 for long: D has won
    and the generator gets little signal; both near 0.5: D cannot tell (or the game is balanced).
    """
    threshold = DECISION_THRESHOLD[check_loss(kind)]
    real_right = (real_logits.detach().float() > threshold).float().mean()
    fake_right = (fake_logits.detach().float() <= threshold).float().mean()
    return real_right, fake_right


def diversity(samples: torch.Tensor) -> torch.Tensor:
    """Mean pairwise L2 distance between the batch's items divided by sqrt(item size): a float32 scalar.

    The division makes it a per-dimension (RMS) distance, comparable across image sizes: two independent
    images uniform in [-1, 1] are about sqrt(2/3) ~ 0.82 apart per dimension. 0 means every item is the
    same (mode collapse); a batch of fewer than two items gives 0.
    """
    flat = samples.detach().float().flatten(1)
    if flat.shape[0] < 2:
        return torch.zeros((), device=samples.device)
    return torch.pdist(flat).mean() / flat.shape[1] ** 0.5
