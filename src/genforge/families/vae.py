"""The VAE family: a convolutional encoder and decoder around a Gaussian latent, trained on the ELBO.

Encoder q(z|x) = N(mu, diag(exp(logvar))); decoder p(x|z), chosen by ``likelihood``:
  - "bernoulli" (default): the decoder gives one logit per pixel. With ``binarize`` (new runs) each image
    is binarised by thresholding at 0 (pixel > 0 in [-1, 1] is on) and the model is a true discrete
    Bernoulli likelihood of that binary image, the way binarised MNIST is modelled; encoder, decoder and
    ``log_likelihood`` all see the binarised image. Without it (older runs) grey levels enter the binary
    cross-entropy as soft targets, the usual pseudo-likelihood (the continuous Bernoulli's normaliser is
    left out), so its nats are not a likelihood. The mean image is sigmoid(logit) mapped to [-1, 1].
  - "gaussian": N(x; tanh(out), sigma^2) per pixel, a density on the continuous [-1, 1] pixel scale.
    ``gaussian_variance="learned"`` learns one global sigma (the "sigma-VAE", which balances
    reconstruction and KL by itself; ``gaussian_sigma`` is its starting value), "fixed" keeps
    sigma = ``gaussian_sigma``. Its nats can go negative and do not compare with discrete likelihoods.

The loss per image is recon + w * kl (averaged over the batch) with w = ``kl_beta`` (a beta-VAE for
beta != 1), ramped linearly from 0 over the first ``kl_warmup_steps`` training steps (the count lives in
the buffer ``kl_step``, so a resumed run continues the ramp). With ``free_bits`` = lambda > 0 the KL
term becomes sum_d max(lambda, mean over the batch of KL_d) (Kingma et al., 2016, "free bits"): a latent
dimension using less than lambda nats costs a constant and is not pushed further toward the prior.
The logs keep "recon", "kl" and "nelbo" (recon + kl, the bound itself) whatever the weighting.

``log_likelihood`` estimates -log p(x) per image by the importance-weighted bound (Burda et al., 2016)
with ``iwae_samples`` posterior samples: an upper bound on the negative log-likelihood that tightens as
k grows; k = 1 is the training objective's one-sample estimate of the negative ELBO (KL in closed form).

Class conditioning (when the data has labels) lives in the prior: each class has a learned prior mean,
p(z|y) = N(m_y, I). The encoder and decoder never see labels, so ``encode``, ``decode`` and
``reconstruct`` need none (``encode`` returns labels None), and ``sample(label=3)`` draws from class 3's
region of the latent space (label=None draws the class uniformly first, i.e. from the mixture prior).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar, Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from genforge import draws
from genforge.data.spec import DataSpec
from genforge.config import Range, check_choices, check_ranges
from genforge.errors import ConfigError
from genforge.families.capabilities import Attribute, Interpolation, Inversion, Labelled, Likelihood, Variations, declare
from genforge.families.base import Family, OptimizerGroup, Phase, eval_mode
from genforge.nets.conv import (
    ConvDecoder,
    ConvEncoder,
    check_image_shape,
    decay_split,
    resolve_labels,
)

LIKELIHOODS = ("bernoulli", "gaussian")
GAUSSIAN_VARIANCES = ("learned", "fixed")
HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)
MIN_SIGMA = 1e-3  # a learned sigma stops here: below it the density of a near-exact pixel runs away
# log_likelihood decodes at most about this many output values at once (k samples x batch x pixels)
LIKELIHOOD_CHUNK_VALUES = 2**20


@dataclass
class VAEConfig:
    # sized for 28x28 MNIST trained ~2 minutes on 2 CPU cores (see train_defaults)
    latent_dim: int = 16
    width: int = 32  # channels next to the image in encoder and decoder; x2 per halving, up to x8
    likelihood: str = "bernoulli"  # "bernoulli" (logits per pixel) or "gaussian"
    # A missing key must mean what it meant before the option existed (a saved config.yaml rebuilds the
    # model it trained); new runs get VAE.model_defaults instead.
    binarize: bool = False  # bernoulli only: threshold each image at 0 and model the binary image exactly
    gaussian_variance: str = "learned"  # gaussian only: "learned" (one global sigma) or "fixed"
    gaussian_sigma: float = 0.1  # gaussian only: the fixed sigma, or the learned sigma's starting value
    kl_beta: float = 1.0  # weight of the KL term in the loss (beta-VAE); 1 trains on the true ELBO
    kl_warmup_steps: int = 0  # the KL weight ramps linearly from 0 to kl_beta over these steps; 0 = off
    free_bits: float = 0.0  # nats per latent dimension below which its batch-mean KL is not penalised; 0 = off
    iwae_samples: int = 1000  # log_likelihood: importance samples per image (k); 1 = the one-sample ELBO
    class_conditional: bool = True  # a learned prior mean per class when the data has labels


class VAE(Family):
    name = "vae"
    Config = VAEConfig
    accepts = ("image",)
    # new runs with the bernoulli decoder model binarised images, so their nats are a true likelihood
    model_defaults: ClassVar[dict[str, Any]] = {"binarize": True}
    capabilities = declare(sample=Labelled, likelihood=Likelihood, encode=Inversion, interpolate=Interpolation,
                           variations=Variations, attribute=Attribute)
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
        check_config(config)
        self.num_classes = spec.num_classes if config.class_conditional and spec.num_classes else None
        self.encoder = ConvEncoder(spec.shape, 2 * config.latent_dim, config.width, norm="batch")
        self.decoder = ConvDecoder(config.latent_dim, spec.shape, config.width, norm="batch")
        # unit-scale random means start the classes apart, so the encoder sorts them from the first step
        self.prior_means = nn.Embedding(self.num_classes, config.latent_dim) if self.num_classes else None
        gaussian = config.likelihood == "gaussian"
        self.log_sigma = None
        if gaussian and config.gaussian_variance == "learned":
            self.log_sigma = nn.Parameter(torch.tensor(math.log(config.gaussian_sigma)))
        self.binarize = config.binarize and not gaussian
        if config.kl_warmup_steps > 0:  # only then: runs without warm-up keep the state dict they always had
            self.register_buffer("kl_step", torch.zeros((), dtype=torch.long))
        else:
            self.kl_step = None

    def optimizer_groups(self) -> dict[str, OptimizerGroup]:
        decay, no_decay = decay_split(self)
        return {"main": OptimizerGroup(params=decay, no_decay=no_decay)}

    # ---- the model ------------------------------------------------------------------------------------------

    def data_view(self, x: torch.Tensor) -> torch.Tensor:
        """The images as the model sees them: binarised to {-1, 1} (pixel > 0 is on) with ``binarize``."""
        return torch.where(x > 0, 1.0, -1.0).to(x.dtype) if self.binarize else x

    def posterior(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """q(z|x)'s (mu, logvar), each (B, latent_dim), for images already in the model's view (data_view)."""
        mu, logvar = self.encoder(x).float().chunk(2, dim=1)
        return mu, logvar.clamp(-20.0, 10.0)  # keeps exp(logvar) finite in the first steps

    def prior_mean(self, labels: torch.Tensor | None, like: torch.Tensor) -> torch.Tensor:
        if self.prior_means is None:
            return torch.zeros_like(like)
        return self.prior_means(labels).float()

    def mean_image(self, out: torch.Tensor) -> torch.Tensor:
        """Decoder output -> the likelihood's mean in [-1, 1]."""
        # bernoulli: 2 * sigmoid(out) - 1 == tanh(out / 2)
        return torch.tanh(out.float()) if self.config.likelihood == "gaussian" else torch.tanh(out.float() / 2)

    def sigma_log(self) -> torch.Tensor:
        """log sigma of the Gaussian decoder (learned or fixed), float32."""
        if self.log_sigma is not None:
            return self.log_sigma.float().clamp(min=math.log(MIN_SIGMA))
        return torch.tensor(math.log(self.config.gaussian_sigma), device=self.device)

    def log_density(self, out: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """log p(x|z) per pixel, shaped like ``out``, in float32: ``out`` the decoder's output for z and ``x``
        in the model's view (``x`` broadcasts against ``out``). Bernoulli: log-probability of the pixel being
        on/off ((x + 1) / 2, soft for grey levels); Gaussian: log N(x; tanh(out), sigma^2), a density on the
        [-1, 1] scale."""
        out, x = out.float(), x.float()
        if self.config.likelihood == "bernoulli":
            return -F.binary_cross_entropy_with_logits(out, ((x + 1) / 2).expand_as(out), reduction="none")
        log_sigma = self.sigma_log()
        return -0.5 * ((x - torch.tanh(out)) / log_sigma.exp()) ** 2 - log_sigma - HALF_LOG_2PI

    def neg_log_likelihood(self, out: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """-log p(x|z) per image (B,), in nats, computed in float32."""
        return -self.log_density(out, x).flatten(1).sum(dim=1)

    def kl_weight(self) -> float | torch.Tensor:
        """The KL term's weight at the current training step: kl_beta, ramped linearly from 0 during the
        warm-up (then a 0-d tensor, so reading the step costs no device sync)."""
        if self.kl_step is None:
            return self.config.kl_beta
        return self.config.kl_beta * (self.kl_step.float() / self.config.kl_warmup_steps).clamp(max=1.0)

    def training_step(self, batch: dict[str, torch.Tensor]) -> Iterator[Phase]:
        x = self.data_view(batch["x"])
        labels = self._labels(batch, "this vae is class-conditional but the batch has no labels 'y'")
        mu, logvar = self.posterior(x)
        z = mu + draws.randn_like(mu) * (0.5 * logvar).exp()
        recon = self.neg_log_likelihood(self.decoder(z), x)
        kl_dims = kl_divergence_per_dim(mu, logvar, self.prior_mean(labels, mu))
        kl = kl_dims.sum(dim=1)
        weight = self.kl_weight()
        if self.kl_step is not None and self.training and torch.is_grad_enabled():
            self.kl_step += 1  # counts optimisation steps only: evaluation passes leave the schedule alone
        penalty = free_bits_kl(kl_dims, self.config.free_bits) if self.config.free_bits > 0 else kl.mean()
        loss = recon.mean() + weight * penalty
        logs = {"recon": recon.mean().detach(), "kl": kl.mean().detach(), "nelbo": (recon + kl).mean().detach()}
        if self.kl_step is not None:
            logs["kl_weight"] = weight
        yield "main", loss, logs

    # ---- capabilities ---------------------------------------------------------------------------------------

    @torch.no_grad()
    def log_likelihood(self, batch: dict[str, torch.Tensor], generator: torch.Generator | None = None,
                       samples: int | None = None) -> torch.Tensor:
        """Per-image estimate of -log p(x) in nats (B,) by the importance-weighted bound with k = ``samples``
        posterior samples (default ``iwae_samples``): -log (1/k) sum_i p(x|z_i) p(z_i) / q(z_i|x), z_i ~ q(z|x).

        In expectation an upper bound on -log p(x) that tightens toward it as k grows (Burda et al.); k = 1 is
        the one-sample negative ELBO the training loss uses (its KL in closed form). Given labels "y" with a
        class-conditional prior it bounds -log p(x | y). What the nats are: with a binarising Bernoulli
        decoder, the discrete likelihood of the binarised image; with a Gaussian one, a density on the
        [-1, 1] pixel scale; a grey-level Bernoulli gives a pseudo-likelihood (see the module docstring).
        Samples are decoded in chunks, so memory stays bounded for any k; the log-mean-exp is in float64.
        """
        k = self.config.iwae_samples if samples is None else samples
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ConfigError(f"the number of importance samples must be an integer >= 1, got {k!r}")
        x = batch["x"].to(self.device)
        self.check_images(x)
        labels = self._labels(batch, "this vae is class-conditional: its likelihood bound needs labels 'y'")
        x = self.data_view(x)
        with eval_mode(self):
            mu, logvar = self.posterior(x)
            prior = self.prior_mean(labels, mu)
            std = (0.5 * logvar).exp()
            if k == 1:
                eps = torch.randn(mu.shape, generator=generator, device=mu.device)
                recon = self.neg_log_likelihood(self.decoder(mu + eps * std), x)
                return recon + kl_divergence(mu, logvar, prior)
            b = x.shape[0]
            chunk = max(1, LIKELIHOOD_CHUNK_VALUES // (b * x[0].numel()))
            log_w = []
            for lo in range(0, k, chunk):
                n = min(chunk, k - lo)
                eps = torch.randn((n, *mu.shape), generator=generator, device=mu.device)
                z = mu + eps * std  # (n, B, D)
                out = self.decoder(z.flatten(0, 1)).view(n, *x.shape)
                log_px = self.log_density(out, x).flatten(2).sum(dim=2)
                # log p(z) - log q(z|x): the Gaussians' normalising constants cancel
                log_pz_over_qz = (-0.5 * (z - prior) ** 2 + 0.5 * eps**2 + 0.5 * logvar).sum(dim=2)
                log_w.append((log_px + log_pz_over_qz).double())
            log_w = torch.cat(log_w)  # (k, B)
            return -(torch.logsumexp(log_w, dim=0) - math.log(k)).float()

    @torch.no_grad()
    def encode(self, images: torch.Tensor, label: Any = None, generator: torch.Generator | None = None,
               **kw: Any) -> tuple[torch.Tensor, None]:
        """Images (B, C, H, W) in [-1, 1] -> (the posterior means (B, latent_dim), labels None).

        Deterministic and amortised: ``label``, ``generator`` and the GAN inversion's options are accepted
        and unused (the encoder and decoder see no labels). ``posterior`` gives the variances too."""
        self.check_images(images)
        with eval_mode(self):
            mu, _ = self.posterior(self.data_view(images.to(self.device)))
        return mu, None

    @torch.no_grad()
    def decode(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """Latents (B, latent_dim) -> the decoder's mean images in [-1, 1]; ``labels`` is unused (the class
        lives in the latent, through the prior)."""
        if z.dim() != 2 or z.shape[1] != self.config.latent_dim:
            raise ConfigError(f"decode expects latents shaped (B, {self.config.latent_dim}), got {tuple(z.shape)}")
        with eval_mode(self):
            return self.mean_image(self.decoder(z.to(self.device)))

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Encode then decode through the posterior mean: deterministic, so ``generator`` is unused."""
        mu, _ = self.encode(x)
        return self.decode(mu)

    def sample_latents(self, n: int, generator: torch.Generator | None = None, label: Any = None) -> torch.Tensor:
        """The (n, latent_dim) latents ``sample`` decodes, drawn from the prior as it draws them: the noise
        first, then (class-conditional) the classes, uniformly unless ``label`` is given."""
        if self.num_classes is None:
            self.reject_conditions(self.name, {"label": label})
        z = torch.randn(n, self.config.latent_dim, generator=generator, device=self.device)
        if self.num_classes:
            labels = resolve_labels(label, n, self.num_classes, self.spec.class_names, generator, self.device)
            z = z + self.prior_means(labels).detach().float()
        return z

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None, label: Any = None,
               **conditions: Any) -> torch.Tensor:
        self.reject_conditions(self.name, conditions)
        return self.decode(self.sample_latents(n, generator, label))

    @torch.no_grad()
    def attribute_vector(self, images: torch.Tensor, labels: torch.Tensor | Sequence[Any], source_label: Any,
                         target_label: Any) -> torch.Tensor:
        """(latent_dim,): the mean posterior mean of the images labelled ``target_label`` minus that of the
        images labelled ``source_label``. ``decode(z + alpha * vector)`` moves an image's latent z toward the
        target attribute. Labels are any per-image ids (classes or the user's own attribute); a class name
        of this model's data stands for its id."""
        labels = torch.as_tensor([self._label_id(v) for v in (labels.tolist() if torch.is_tensor(labels) else labels)])
        if labels.dim() != 1 or len(labels) != images.shape[0]:
            raise ConfigError(f"attribute_vector needs one label per image, got {len(labels)} for {images.shape[0]} images")
        source, target = self._label_id(source_label), self._label_id(target_label)
        means = []
        for value in (target, source):
            chosen = images[(labels == value).to(images.device)]
            if len(chosen) == 0:
                raise ConfigError(f"attribute_vector: no image is labelled {value!r}")
            means.append(torch.cat([self.encode(part)[0] for part in chosen.split(256)]).mean(dim=0))
        return means[0] - means[1]

    def _label_id(self, value: Any) -> Any:
        if torch.is_tensor(value):
            value = value.item()
        if isinstance(value, str) and value in (self.spec.class_names or ()):
            return list(self.spec.class_names).index(value)
        if isinstance(value, str) and value.strip().lstrip("-").isdigit():
            return int(value)
        if isinstance(value, float) and value.is_integer():  # 0/1 attributes read as floats
            return int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"attribute labels must be integer ids or class names, got {value!r}")
        return value

    def _labels(self, batch: dict[str, torch.Tensor], missing: str) -> torch.Tensor | None:
        if not self.num_classes:
            return None
        if "y" not in batch:
            raise ConfigError(missing)
        return batch["y"].to(self.device)



MODEL_CHOICES = {"likelihood": LIKELIHOODS, "gaussian_variance": GAUSSIAN_VARIANCES}
MODEL_RANGES = {"latent_dim": Range(1), "width": Range(1), "gaussian_sigma": Range(MIN_SIGMA), "kl_beta": Range(0),
                "free_bits": Range(0), "kl_warmup_steps": Range(0, hint="0 is off"), "iwae_samples": Range(1)}


def check_config(config: VAEConfig) -> None:
    """One-line ConfigErrors for values no VAE can use."""
    check_choices(config, MODEL_CHOICES, "vae ")
    check_ranges(config, MODEL_RANGES, "model")


def kl_divergence_per_dim(mu: torch.Tensor, logvar: torch.Tensor, prior_mean: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, exp(logvar)) || N(prior_mean, I)) in closed form, per latent dimension: (B, D)."""
    return 0.5 * (logvar.exp() + (mu - prior_mean) ** 2 - 1.0 - logvar)


def kl_divergence(mu: torch.Tensor, logvar: torch.Tensor, prior_mean: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, exp(logvar)) || N(prior_mean, I)) in closed form, summed over latent dimensions: (B,)."""
    return kl_divergence_per_dim(mu, logvar, prior_mean).sum(dim=1)


def free_bits_kl(kl_dims: torch.Tensor, free_bits: float) -> torch.Tensor:
    """The free-bits KL penalty, a scalar: sum over dimensions d of max(free_bits, mean over the batch of
    KL_d). A dimension below the floor adds the constant free_bits and no gradient."""
    return kl_dims.mean(dim=0).clamp(min=free_bits).sum()
