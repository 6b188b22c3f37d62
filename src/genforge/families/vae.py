"""The VAE family: a convolutional encoder and decoder around a Gaussian latent, trained on the ELBO.

Encoder q(z|x) = N(mu, diag(exp(logvar))); decoder p(x|z), chosen by ``likelihood``:
  - "bernoulli" (default): the decoder gives one logit per pixel. With ``binarize`` (new runs) each image
    is binarised by thresholding at 0 (pixel > 0 in [-1, 1] is on) and the model is a true discrete
    Bernoulli likelihood of that binary image, the way binarised MNIST is modelled; encoder, decoder and
    ``log_likelihood`` all see the binarised image. Without it (older runs) grey levels enter the binary
    cross-entropy as soft targets, the usual pseudo-likelihood (the continuous Bernoulli's normaliser is
    left out), so its nats are not a likelihood. The image shown is sigmoid(logit / T) mapped to [-1, 1]:
    the mean at ``decoder_temperature`` T = 1 (runs made before the option), sharper below (new runs: 0.5),
    the mode at 0. The temperature is rendering only: the likelihood always uses the logits as they are.
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
p(z|y) = N(m_y, I). With ``prior_components`` = K >= 1 the prior is a learned mixture of K diagonal
Gaussians per class instead (``LearnedPrior``; for K > 1 its KL has no closed form and is estimated from
the posterior sample; the importance weights use its exact density). The encoder and decoder never see
labels, so ``encode``, ``decode`` and ``reconstruct`` need none (``encode`` returns labels None), and
``sample(label=3)`` draws from class 3's region of the latent space (label=None draws the class
uniformly first, i.e. from the mixture prior).
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
from genforge.nets.bernoulli import bernoulli_image
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
LOG_SCALE_LIMIT = 5.0  # a learned prior's log scales stay in [-5, 5]: finite densities in the first steps
DECODER_TEMPERATURE_DEFAULT = 0.5  # new runs (VAE.model_defaults)
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
    # 0: p(z|y) = N(m_y, I), only the mean learned (runs made before the option). K >= 1: a mixture of K
    # diagonal Gaussians per class (one set without labels), means, scales and weights all learned.
    prior_components: int = 0
    # bernoulli only: images shown (decode, sample, reconstruct) are sigmoid(logit / T), the mean of the
    # decoder tempered to p^(1/T); 1 is the plain mean image (runs made before the option), 0 the mode.
    # The likelihood never sees it.
    decoder_temperature: float = 1.0


class VAE(Family):
    name = "vae"
    Config = VAEConfig
    accepts = ("image",)
    # new runs with the bernoulli decoder model binarised images, so their nats are a true likelihood
    # and show the decoder's mean at temperature 0.5: on mnist (2,385 steps, n = 1,000 against the training
    # digits) FD 10.6 -> 4.45 in the classifier's features and 39.0 -> 37.9 in a random network's, the
    # likelihood untouched (lower temperatures help the classifier's view and hurt the random one's). A
    # learned mixture prior (prior_components=4) did not pay at 1,000 steps (FD 38.1 against 24.7 for
    # the plain mean, NLL the same), so it stays opt-in.
    model_defaults: ClassVar[dict[str, Any]] = {"binarize": True, "decoder_temperature": DECODER_TEMPERATURE_DEFAULT}
    capabilities = declare(sample=Labelled, likelihood=Likelihood, encode=Inversion, interpolate=Interpolation,
                           variations=Variations, attribute=Attribute)
    exports = ("onnx",)
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
        fixed_scale = config.prior_components == 0
        self.prior_means = None
        if self.num_classes and fixed_scale:
            self.prior_means = nn.Embedding(self.num_classes, config.latent_dim)
        self.learned_prior = None if fixed_scale else LearnedPrior(self.num_classes or 1, config.prior_components,
                                                                    config.latent_dim)
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

    def kl_per_dim(self, mu: torch.Tensor, logvar: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor | None:
        """KL(q(z|x) || p(z|y)) per latent dimension (B, D) in closed form, or None where the prior is a
        mixture of several Gaussians (no closed form: ``kl_sampled`` estimates it)."""
        if self.learned_prior is None:
            return kl_divergence_per_dim(mu, logvar, self.prior_mean(labels, mu))
        if self.config.prior_components > 1:
            return None
        means, log_scales, _ = self.learned_prior.components(labels, mu.shape[0])
        return gaussian_kl_per_dim(mu, logvar, means[:, 0], log_scales[:, 0])

    def kl_sampled(self, z: torch.Tensor, eps: torch.Tensor, logvar: torch.Tensor,
                   labels: torch.Tensor | None) -> torch.Tensor:
        """The one-sample estimate log q(z|x) - log p(z|y) of the KL per image (B,), for z = mu + eps * std:
        unbiased, and its gradient reaches the prior's means, scales and weights."""
        log_q = (-0.5 * eps**2 - 0.5 * logvar - HALF_LOG_2PI).sum(dim=-1)
        return log_q - self.learned_prior.log_prob(z, labels)

    def log_prior_over_posterior(self, z: torch.Tensor, eps: torch.Tensor, logvar: torch.Tensor,
                                 prior: torch.Tensor | None, labels: torch.Tensor | None) -> torch.Tensor:
        """log p(z|y) - log q(z|x) summed over dimensions, for z = mu + eps * std shaped (n, B, D): the
        importance weight's latent part. With today's unit-scale prior the Gaussians' constants cancel."""
        if self.learned_prior is None:
            return (-0.5 * (z - prior) ** 2 + 0.5 * eps**2 + 0.5 * logvar).sum(dim=-1)
        return -self.kl_sampled(z, eps, logvar, labels)

    def mean_image(self, out: torch.Tensor) -> torch.Tensor:
        """Decoder output -> the image shown, in [-1, 1]: the Gaussian's mean, or the Bernoulli's mean at
        ``decoder_temperature`` T, sigmoid(out / T) (its mode at T = 0).

        Why a temperature: each pixel's mean is a blend over the digits the latent could still be, so the
        plain mean (T = 1) draws soft, blurred strokes; tempering sharpens where the decoder is confident
        and keeps grey where it is not, which real grey digits resemble more than binary modes do."""
        if self.config.likelihood == "gaussian":
            return torch.tanh(out.float())
        return bernoulli_image(out, self.config.decoder_temperature)

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
        eps = draws.randn_like(mu)
        z = mu + eps * (0.5 * logvar).exp()
        recon = self.neg_log_likelihood(self.decoder(z), x)
        kl_dims = self.kl_per_dim(mu, logvar, labels)
        kl = kl_dims.sum(dim=1) if kl_dims is not None else self.kl_sampled(z, eps, logvar, labels)
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
            prior = self.prior_mean(labels, mu) if self.learned_prior is None else None
            std = (0.5 * logvar).exp()
            if k == 1:
                eps = torch.randn(mu.shape, generator=generator, device=mu.device)
                recon = self.neg_log_likelihood(self.decoder(mu + eps * std), x)
                kl_dims = self.kl_per_dim(mu, logvar, labels)
                if kl_dims is None:
                    return recon + self.kl_sampled(mu + eps * std, eps, logvar, labels)
                return recon + kl_dims.sum(dim=1)
            b = x.shape[0]
            chunk = max(1, LIKELIHOOD_CHUNK_VALUES // (b * x[0].numel()))
            log_w = []
            for lo in range(0, k, chunk):
                n = min(chunk, k - lo)
                eps = torch.randn((n, *mu.shape), generator=generator, device=mu.device)
                z = mu + eps * std  # (n, B, D)
                out = self.decoder(z.flatten(0, 1)).view(n, *x.shape)
                log_px = self.log_density(out, x).flatten(2).sum(dim=2)
                log_pz_over_qz = self.log_prior_over_posterior(z, eps, logvar, prior, labels)
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
        labels = None
        if self.num_classes:
            labels = resolve_labels(label, n, self.num_classes, self.spec.class_names, generator, self.device)
        if self.learned_prior is not None:
            return self.learned_prior.sample(z, labels, generator)
        if labels is not None:
            z = z + self.prior_means(labels).detach().float()
        return z

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None, label: Any = None,
               **conditions: Any) -> torch.Tensor:
        self.reject_conditions(self.name, conditions)
        return self.decode(self.sample_latents(n, generator, label))

    def sampling_nets(self) -> list:
        """The decoder as ``decode`` runs it (latents -> the images shown), and, where the prior is more than
        N(0, I), the prior of each class as a mixture a sampler draws latents from (``sample_latents``)."""
        from genforge.families.sampling_nets import EXAMPLE_BATCH, example_labels, sampling_net

        latent, shape = self.config.latent_dim, ", ".join(map(str, self.spec.shape))
        shown = ("tanh of the Gaussian decoder's mean" if self.config.likelihood == "gaussian" else
                 f"2 sigmoid(logits / T) - 1 of the Bernoulli decoder, its mode at T = 0; T = decoder_temperature = "
                 f"{self.config.decoder_temperature}")
        nets = [sampling_net(
            "decoder", lambda z: self.mean_image(self.decoder(z)), self,
            {"z": torch.randn(EXAMPLE_BATCH, latent, device=self.device)}, ["images"],
            f"z (B, {latent}) float32 latents -> images (B, {shape}) float32 in [-1, 1], as genforge shows them "
            f"({shown}); the decoder sees no labels: a class lives in the latent, through the prior.")]
        if self.prior_means is None and self.learned_prior is None:
            return nets  # the prior is N(0, I): the caller draws z itself

        def prior(labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
            if self.learned_prior is not None:
                return self.learned_prior.components(labels, labels.shape[0])
            means = self.prior_means(labels).float()[:, None]  # N(m_y, I): one component of unit scale
            return means, torch.zeros_like(means), torch.zeros_like(means[..., 0])

        groups = self.num_classes or 1
        which = (f"class ids in [0, {groups})" if self.num_classes else "zeros (one prior for a run without classes)")
        nets.append(sampling_net(
            "prior", prior, self, example_labels(groups, self.device), ["means", "log_scales", "log_weights"],
            f"labels (B,) int64 {which} -> the prior p(z | label), a mixture of K diagonal Gaussians: means and "
            f"log_scales (B, K, {latent}), log_weights (B, K) float32; a sampler picks k with probability "
            f"exp(log_weights[k]), draws eps ~ N(0, I) and decodes z = means[k] + exp(log_scales[k]) * eps.",
            facts={"components": max(1, self.config.prior_components)}))
        return nets

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



class LearnedPrior(nn.Module):
    """p(z | y) = sum_k w_yk N(z; m_yk, diag(s_yk^2)): K diagonal Gaussians per class (one set without
    labels), their means, scales and mixture weights trained with the rest of the ELBO.

    Why: the ELBO's optimal prior is the aggregate posterior, and a unit Gaussian around a class mean
    leaves regions that no posterior covers; latents drawn there decode to the blurry in-between digits
    that blur the plain VAE's samples. A learned mixture can move onto the aggregate posterior (the
    mixture-of-Gaussians cousin of Tomczak & Welling's VampPrior, 2018), lowering the KL term and drawing
    latents the decoder has seen. In a few CPU minutes on mnist it did not beat N(m_y, I) (see
    ``VAE.model_defaults``), so it is opt-in. The tables are embeddings, looked up by class, so weight
    decay leaves them alone (``decay_split``)."""

    def __init__(self, groups: int, components: int, dim: int):
        super().__init__()
        self.components_per_group, self.dim = components, dim
        self.means = nn.Embedding(groups, components * dim)  # N(0, 1) start: the components start apart
        self.log_scales = nn.Embedding(groups, components * dim)
        self.logits = nn.Embedding(groups, components)
        nn.init.zeros_(self.log_scales.weight)
        nn.init.zeros_(self.logits.weight)

    def components(self, labels: torch.Tensor | None, n: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(means (n, K, D), log scales (n, K, D), log weights (n, K)) of each row's class, float32;
        ``labels`` None: the one unconditional set, repeated n times."""
        ids = torch.zeros(n, dtype=torch.long, device=self.means.weight.device) if labels is None else labels
        shape = (n, self.components_per_group, self.dim)
        log_scales = self.log_scales(ids).float().view(shape).clamp(-LOG_SCALE_LIMIT, LOG_SCALE_LIMIT)
        return self.means(ids).float().view(shape), log_scales, F.log_softmax(self.logits(ids).float(), dim=-1)

    def log_prob(self, z: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        """log p(z | y) of latents z (..., B, D), summed over dimensions: (..., B)."""
        means, log_scales, log_weights = self.components(labels, z.shape[-2])
        per_dim = -0.5 * ((z.unsqueeze(-2) - means) / log_scales.exp()) ** 2 - log_scales - HALF_LOG_2PI
        return torch.logsumexp(log_weights + per_dim.sum(dim=-1), dim=-1)

    @torch.no_grad()
    def sample(self, noise: torch.Tensor, labels: torch.Tensor | None,
               generator: torch.Generator | None) -> torch.Tensor:
        """Latents (n, D) from standard normal ``noise`` (n, D): each row picks a component of its class by
        weight (one draw from ``generator``), then is shifted and scaled by it."""
        means, log_scales, log_weights = self.components(labels, noise.shape[0])
        picked = torch.multinomial(log_weights.exp(), 1, generator=generator).view(-1, 1, 1).expand(-1, 1, self.dim)
        return means.gather(1, picked)[:, 0] + log_scales.gather(1, picked)[:, 0].exp() * noise


MODEL_CHOICES = {"likelihood": LIKELIHOODS, "gaussian_variance": GAUSSIAN_VARIANCES}
MODEL_RANGES = {"latent_dim": Range(1), "width": Range(1), "gaussian_sigma": Range(MIN_SIGMA), "kl_beta": Range(0),
                "free_bits": Range(0), "kl_warmup_steps": Range(0, hint="0 is off"), "iwae_samples": Range(1),
                "prior_components": Range(0, hint="0 is N(class mean, I); K >= 1 a learned mixture of K Gaussians"),
                "decoder_temperature": Range(0, hint="1 is the mean image, 0 the mode")}


def check_config(config: VAEConfig) -> None:
    """One-line ConfigErrors for values no VAE can use."""
    check_choices(config, MODEL_CHOICES, "vae ")
    check_ranges(config, MODEL_RANGES, "model")
    if config.free_bits > 0 and config.prior_components > 1:
        raise ConfigError("model.free_bits needs the KL per latent dimension, which a mixture prior "
                          "(model.prior_components > 1) does not have; use free_bits=0 or prior_components <= 1")


def kl_divergence_per_dim(mu: torch.Tensor, logvar: torch.Tensor, prior_mean: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, exp(logvar)) || N(prior_mean, I)) in closed form, per latent dimension: (B, D)."""
    return 0.5 * (logvar.exp() + (mu - prior_mean) ** 2 - 1.0 - logvar)


def gaussian_kl_per_dim(mu: torch.Tensor, logvar: torch.Tensor, prior_mean: torch.Tensor,
                        prior_log_scale: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, exp(logvar)) || N(prior_mean, exp(prior_log_scale)^2)) in closed form, per dimension: (B, D)."""
    prior_var = (2 * prior_log_scale).exp()
    return 0.5 * ((logvar.exp() + (mu - prior_mean) ** 2) / prior_var - 1.0 - logvar) + prior_log_scale


def kl_divergence(mu: torch.Tensor, logvar: torch.Tensor, prior_mean: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, exp(logvar)) || N(prior_mean, I)) in closed form, summed over latent dimensions: (B,)."""
    return kl_divergence_per_dim(mu, logvar, prior_mean).sum(dim=1)


def free_bits_kl(kl_dims: torch.Tensor, free_bits: float) -> torch.Tensor:
    """The free-bits KL penalty, a scalar: sum over dimensions d of max(free_bits, mean over the batch of
    KL_d). A dimension below the floor adds the constant free_bits and no gradient."""
    return kl_dims.mean(dim=0).clamp(min=free_bits).sum()
