"""The VAE family: a convolutional encoder and decoder around a Gaussian latent, trained on the ELBO.

Encoder q(z|x) = N(mu, diag(exp(logvar))); decoder p(x|z) on pixels scaled to [0, 1]:
  - "bernoulli" (default): binary cross-entropy on (x + 1) / 2. Sharp and quick on digit-like data;
    for grey levels it is the usual pseudo-likelihood (the continuous Bernoulli's normaliser is left out).
  - "gaussian": N(x; mean, sigma^2) in [-1, 1] with one learned sigma (the "sigma-VAE"), a true density
    that balances reconstruction and KL by itself; better suited to photographs.
The loss is the negative ELBO per image in nats, recon + kl_beta * kl, with "recon", "kl" and "nelbo"
(recon + kl, the bound itself) in the logs.

Class conditioning (when the data has labels) lives in the prior: each class has a learned prior mean,
p(z|y) = N(m_y, I). The encoder and decoder never see labels, so ``encode``, ``decode`` and
``reconstruct`` need none, and ``sample(label=3)`` draws from class 3's region of the latent space
(label=None draws the class uniformly first, i.e. from the mixture prior).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Iterator

import torch
import torch.nn.functional as F
from torch import nn

from genforge.data.spec import DataSpec
from genforge.errors import ConfigError
from genforge.families.base import Family, OptimizerGroup, Phase, eval_mode
from genforge.nets.conv import ConvDecoder, ConvEncoder, check_image_shape, decay_split, resolve_labels

LIKELIHOODS = ("bernoulli", "gaussian")
HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)


@dataclass
class VAEConfig:
    # sized for 28x28 MNIST trained ~2 minutes on 2 CPU cores (see train_defaults)
    latent_dim: int = 16
    width: int = 32  # channels next to the image in encoder and decoder; x2 per halving, up to x8
    likelihood: str = "bernoulli"  # "bernoulli" (BCE on (x+1)/2) or "gaussian" (learned sigma)
    kl_beta: float = 1.0  # weight of the KL term in the loss; 1 trains on the true ELBO
    class_conditional: bool = True  # a learned prior mean per class when the data has labels


class VAE(Family):
    name = "vae"
    Config = VAEConfig
    modalities = ("image",)
    train_defaults = {
        "lr": 2e-3,
        "batch_size": 64,
        "warmup_steps": 50,
        # the loss is summed over pixels (hundreds of nats), so its gradient norm is large by design
        "grad_clip": 0.0,
        "ema_decay": 0.0,  # the ELBO is not a moving game: the last weights are the best ones
    }

    def __init__(self, config: VAEConfig, spec: DataSpec):
        super().__init__(config, spec)
        check_image_shape(spec.shape, self.name)
        if config.latent_dim < 1 or config.width < 1:
            raise ConfigError(
                f"vae latent_dim and width must be positive integers, got {config.latent_dim} and {config.width}"
            )
        if config.likelihood not in LIKELIHOODS:
            raise ConfigError(
                f"unknown vae likelihood '{config.likelihood}'; expected one of: {', '.join(LIKELIHOODS)}"
            )
        if not config.kl_beta >= 0:
            raise ConfigError(f"vae kl_beta must be >= 0, got {config.kl_beta}")
        self.num_classes = spec.num_classes if config.class_conditional and spec.num_classes else None
        self.encoder = ConvEncoder(spec.shape, 2 * config.latent_dim, config.width, norm="batch")
        self.decoder = ConvDecoder(config.latent_dim, spec.shape, config.width, norm="batch")
        # unit-scale random means start the classes apart, so the encoder sorts them from the first step
        self.prior_means = nn.Embedding(self.num_classes, config.latent_dim) if self.num_classes else None
        self.log_sigma = nn.Parameter(torch.tensor(math.log(0.1))) if config.likelihood == "gaussian" else None

    def optimizer_groups(self) -> dict[str, OptimizerGroup]:
        decay, no_decay = decay_split(self)
        return {"main": OptimizerGroup(params=decay, no_decay=no_decay)}

    # ---- the model ------------------------------------------------------------------------------------------

    def posterior(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mu, logvar = self.encoder(x).float().chunk(2, dim=1)
        return mu, logvar.clamp(-20.0, 10.0)  # keeps exp(logvar) finite in the first steps

    def prior_mean(self, labels: torch.Tensor | None, like: torch.Tensor) -> torch.Tensor:
        if self.prior_means is None:
            return torch.zeros_like(like)
        return self.prior_means(labels).float()

    def mean_image(self, out: torch.Tensor) -> torch.Tensor:
        """Decoder output -> the likelihood's mean in [-1, 1]."""
        # bernoulli: 2 * sigmoid(out) - 1 == tanh(out / 2)
        return torch.tanh(out.float() / 2) if self.log_sigma is None else torch.tanh(out.float())

    def neg_log_likelihood(self, out: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """-log p(x|z) per image (B,), in nats, computed in float32."""
        out, x = out.float(), x.float()
        if self.log_sigma is None:
            nll = F.binary_cross_entropy_with_logits(out, (x + 1) / 2, reduction="none")
        else:
            log_sigma = self.log_sigma.float().clamp(min=math.log(1e-3))
            nll = 0.5 * ((x - torch.tanh(out)) / log_sigma.exp()) ** 2 + log_sigma + HALF_LOG_2PI
        return nll.flatten(1).sum(dim=1)

    def training_step(self, batch: dict[str, torch.Tensor]) -> Iterator[Phase]:
        x = batch["x"]
        labels = None
        if self.num_classes:
            if "y" not in batch:
                raise ConfigError("this vae is class-conditional but the batch has no labels 'y'")
            labels = batch["y"]
        mu, logvar = self.posterior(x)
        z = mu + torch.randn_like(mu) * (0.5 * logvar).exp()
        recon = self.neg_log_likelihood(self.decoder(z), x)
        kl = kl_divergence(mu, logvar, self.prior_mean(labels, mu))
        loss = (recon + self.config.kl_beta * kl).mean()
        yield "main", loss, {
            "recon": recon.mean().detach(),
            "kl": kl.mean().detach(),
            "nelbo": (recon + kl).mean().detach(),
        }

    # ---- capabilities ---------------------------------------------------------------------------------------

    @torch.no_grad()
    def log_likelihood(self, batch: dict[str, torch.Tensor], generator: torch.Generator | None = None) -> torch.Tensor:
        """Per-image negative ELBO in nats (B,): an upper bound on -log p(x), one posterior sample each
        (given labels "y" with a class-conditional prior, a bound on -log p(x | y))."""
        x = batch["x"].to(self.device)
        self._check_images(x)
        with eval_mode(self):
            mu, logvar = self.posterior(x)
            eps = torch.randn(mu.shape, generator=generator, device=mu.device)
            recon = self.neg_log_likelihood(self.decoder(mu + eps * (0.5 * logvar).exp()), x)
            labels = batch.get("y") if self.num_classes else None
            if self.num_classes and labels is None:
                raise ConfigError("this vae is class-conditional: its likelihood bound needs labels 'y'")
            m = self.prior_mean(None if labels is None else labels.to(self.device), mu)
        return recon + kl_divergence(mu, logvar, m)

    @torch.no_grad()
    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Images (B, C, H, W) in [-1, 1] -> the posterior's (mu, logvar), each (B, latent_dim)."""
        self._check_images(x)
        with eval_mode(self):
            return self.posterior(x.to(self.device))

    @torch.no_grad()
    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Latents (B, latent_dim) -> the decoder's mean images in [-1, 1]."""
        if z.dim() != 2 or z.shape[1] != self.config.latent_dim:
            raise ConfigError(f"decode expects latents shaped (B, {self.config.latent_dim}), got {tuple(z.shape)}")
        with eval_mode(self):
            return self.mean_image(self.decoder(z.to(self.device)))

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Encode then decode through the posterior mean: deterministic, so ``generator`` is unused."""
        mu, _ = self.encode(x)
        return self.decode(mu)

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None, label: Any = None,
               **conditions: Any) -> torch.Tensor:
        self.reject_conditions(self.name, conditions)
        if self.num_classes is None:
            self.reject_conditions(self.name, {"label": label})
        eps = torch.randn(n, self.config.latent_dim, generator=generator, device=self.device)
        z = eps
        if self.num_classes:
            labels = resolve_labels(label, n, self.num_classes, self.spec.class_names, generator, self.device)
            z = eps + self.prior_means(labels).float()
        return self.decode(z)

    def _check_images(self, x: torch.Tensor) -> None:
        if x.dim() != 4 or tuple(x.shape[1:]) != tuple(self.spec.shape):
            expected = ", ".join(map(str, self.spec.shape))
            raise ConfigError(f"expected images shaped (B, {expected}), got {tuple(x.shape)}")


def kl_divergence(mu: torch.Tensor, logvar: torch.Tensor, prior_mean: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, exp(logvar)) || N(prior_mean, I)) in closed form, summed over latent dimensions: (B,)."""
    return 0.5 * (logvar.exp() + (mu - prior_mean) ** 2 - 1.0 - logvar).sum(dim=1)
