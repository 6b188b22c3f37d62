"""The GAN family: a generator and a discriminator trained against each other (Goodfellow et al. 2014).

Backbones (config.backbone): ``dcgan`` (genforge.nets.conv: transposed convolutions with BatchNorm, a
plain strided-conv discriminator) and ``resnet`` (genforge.nets.resnet, SNGAN-style residual blocks).
Class-conditional runs give the generator the label (an embedding, or conditional BatchNorm in the
ResNet) and the discriminator a projection term <embed(y), features> (Miyato & Koyama 2018).
The discriminator can also see each batch's feature spread (minibatch standard deviation), which on
small data keeps a conditional generator from drawing one image per class.

The objective and its regularisers (genforge.families.gan_objectives, genforge.data.augment) are config
choices: the loss (non-saturating, hinge, WGAN with gradient penalty, least squares), spectral
normalisation of the discriminator, the R1 penalty on reals applied lazily every ``r1_every``
discriminator updates, DiffAugment on everything the discriminator sees, the number of discriminator
updates per generator update and a learning rate per player. The defaults (non-saturating loss,
minibatch spread, EMA of the weights for sampling) train ``--data mnist`` stably without tuning.

One training step yields ``d_steps`` phases ("disc", d_loss) on reals and detached fakes, then, after
the trainer has stepped the discriminator, ("gen", g_loss) from the updated discriminator's view of the
last fakes. During the generator phase the discriminator's parameters are frozen, so its gradients stay
untouched. Each phase logs what training health needs: the discriminator's accuracy on reals and
fakes, and the spread of the fakes next to that of the reals; ``health_warnings`` turns those into a
warning when the generator collapses or the discriminator wins outright.

Latent tools: ``truncation`` (psi) scales the latent toward its mean at sampling; ``sample_latents`` and
``decode`` let callers walk the latent space (interpolation); ``encode`` inverts the generator by
optimising a latent to reproduce an image, so a user's own image can be varied and edited.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Any, Iterator

import torch
from torch import nn

from genforge import draws, progress
from genforge.data.augment import diff_augment, parse_policy
from genforge.data.spec import DataSpec
from genforge.config import Range, check_choices, check_ranges
from genforge.errors import ConfigError
from genforge.families.capabilities import GanSampling, Interpolation, Inversion, Variations, declare
from genforge.families.base import Family, OptimizerGroup, Phase, eval_mode
from genforge.families.gan_objectives import (
    LOSSES,
    accuracy,
    apply_spectral_norm,
    discriminator_loss,
    diversity,
    generator_loss,
    gradient_penalty,
    r1_penalty,
)
from genforge.nets.conv import (ConvDecoder, ConvEncoder, check_image_shape, decay_split, frozen,
                                resolve_labels)
from genforge.sampling.latent import truncate

DCGAN_BETAS = (0.5, 0.999)  # a low beta1 keeps Adam's momentum from overshooting the moving GAN game
BACKBONES = ("dcgan", "resnet")
# training health: how many consecutive logged steps a symptom must last before it is reported
HEALTH_PATIENCE = 4
# ... and from which step on: the generator starts narrow and D wins at first, then training finds its footing
# (the default mnist run: fakes spread 0.13-0.22 against 0.6 for reals, D ~1.0 on both, until step ~275;
# within 0.1 of the reals from step 375 on, D 0.5-0.97): symptoms before this step are its start, not a failure
HEALTH_WARMUP_STEPS = 300
COLLAPSE_RATIO = 0.25  # fakes spread less than this share of the reals' spread: collapse
WIN_ACCURACY = 0.99  # D tells both reals and fakes apart at least this well: the generator gets no signal


@dataclass
class GANConfig:
    # sized for 28x28 MNIST trained ~2 minutes on 2 CPU cores (see train_defaults)
    latent_dim: int = 64
    width: int = 32  # channels next to the image in G and D (DCGAN's ngf/ndf); x2 per halving, up to x8
    backbone: str = "dcgan"  # dcgan | resnet (SNGAN-style residual blocks)
    class_conditional: bool = True  # condition on labels when the data has them (sample(label=...))
    minibatch_std: bool = True  # D sees each batch's feature spread, against mode collapse
    loss: str = "ns"  # ns (non-saturating) | hinge | wgan (with gradient penalty) | lsgan (least squares)
    gp_weight: float = 10.0  # loss wgan: weight of the gradient penalty (WGAN-GP's lambda)
    spectral_norm: bool = False  # spectral normalisation of every discriminator layer
    r1_gamma: float = 0.0  # R1 penalty on reals, gamma/2 * |grad D(x)|^2 (0: off)
    r1_every: int = 16  # lazy R1: applied every k discriminator updates, scaled by k
    augment: str = ""  # DiffAugment policy for D's inputs, e.g. "color,translation,cutout" ("": off)
    d_steps: int = 1  # discriminator updates per generator update
    lr_gen: float | None = None  # per-player learning rates (None: train.lr)
    lr_disc: float | None = None


class Discriminator(nn.Module):
    """DCGAN discriminator: image -> one logit per image; with ``num_classes``, a projection discriminator."""

    def __init__(self, shape: tuple[int, ...], width: int, num_classes: int | None, minibatch_std: bool):
        super().__init__()
        self.encoder = ConvEncoder(shape, 1, width, norm="none", minibatch_std=minibatch_std)
        self.class_embedding = None
        if num_classes:
            # zero start: the discriminator begins unconditional and learns what each class looks like
            self.class_embedding = nn.Embedding(num_classes, self.encoder.feature_dim)
            nn.init.zeros_(self.class_embedding.weight)

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        h = self.encoder.features(x, labels)
        logits = self.encoder.head(h).squeeze(1)
        if self.class_embedding is not None:
            logits = logits + (self.class_embedding(labels) * h).sum(dim=1)
        return logits


class GAN(Family):
    name = "gan"
    Config = GANConfig
    accepts = ("image",)
    capabilities = declare(sample=GanSampling, encode=Inversion, interpolate=Interpolation, variations=Variations)
    exports = ("onnx",)
    # measured on 28x28 MNIST in a ~2 minute CPU budget (~3,000 steps): DCGAN's 2e-4 at batch 64 gives
    # blotchy digits there; small batches at 5e-4 reach clean ones (the cosine decay brings lr down late)
    train_defaults = {
        "lr": 5e-4,
        "batch_size": 32,
        "warmup_steps": 0,  # Adam with beta1=0.5 needs no warm-up; the DCGAN recipe has none
        "grad_clip": 0.0,  # the softplus losses have bounded slopes; clipping only slows the game
        "ema_decay": 0.995,  # a ~200-step horizon: smooths the game's oscillation, yet follows a short run
    }

    def __init__(self, config: GANConfig, spec: DataSpec):
        super().__init__(config, spec)
        check_image_shape(spec.shape, self.name)
        check_config(config)
        self.num_classes = spec.num_classes if config.class_conditional and spec.num_classes else None
        self.augment = parse_policy(config.augment)
        if config.backbone == "resnet":
            from genforge.nets.resnet import ResNetDiscriminator, ResNetGenerator

            self.generator = ResNetGenerator(config.latent_dim, spec.shape, config.width, num_classes=self.num_classes)
            self.discriminator = ResNetDiscriminator(spec.shape, config.width, num_classes=self.num_classes,
                                                     spectral_norm=config.spectral_norm,
                                                     minibatch_std=config.minibatch_std)
        else:
            self.generator = ConvDecoder(config.latent_dim, spec.shape, config.width, norm="batch",
                                         num_classes=self.num_classes)
            self.discriminator = Discriminator(spec.shape, config.width, self.num_classes, config.minibatch_std)
            if config.spectral_norm:
                apply_spectral_norm(self.discriminator)
        # discriminator updates so far, for lazy R1; a buffer, so a resumed run keeps the same rhythm
        self.register_buffer("d_updates", torch.zeros((), dtype=torch.long))
        self._symptoms: dict[str, deque] = {}

    def optimizer_groups(self) -> dict[str, OptimizerGroup]:
        groups = {}
        for name, net, lr in (("disc", self.discriminator, self.config.lr_disc),
                              ("gen", self.generator, self.config.lr_gen)):
            decay, no_decay = decay_split(net)
            groups[name] = OptimizerGroup(params=decay, no_decay=no_decay, betas=DCGAN_BETAS, lr=lr)
        return groups

    def generate(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """Latents (B, latent_dim) -> images in [-1, 1], in whatever mode the module is in."""
        return torch.tanh(self.generator(z, labels).float())

    def _see(self, x: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        """The discriminator's logits for images as it sees them (after DiffAugment, when on)."""
        if self.augment:
            x = diff_augment(x, self.augment)
        return self.discriminator(x, labels).float()

    def training_step(self, batch: dict[str, torch.Tensor]) -> Iterator[Phase]:
        real = batch["x"]
        labels = None
        if self.num_classes:
            if "y" not in batch:
                raise ConfigError("this gan is class-conditional but the batch has no labels 'y'")
            labels = batch["y"]
        kind, config = self.config.loss, self.config
        real_spread = spread(real, labels)
        for _ in range(config.d_steps):
            z = draws.randn(real.shape[0], config.latent_dim, device=real.device)
            fake = self.generate(z, labels)
            if draws.first_micro_batch():  # one discriminator update, however many micro-batches it adds up
                self.d_updates += 1
            lazy_r1 = config.r1_gamma > 0 and int(self.d_updates) % config.r1_every == 0
            seen_real = real.detach().requires_grad_(True) if lazy_r1 else real
            # reals and fakes go through D separately: its spread feature must measure each batch on its own
            real_logits = self._see(seen_real, labels)
            fake_logits = self._see(fake.detach(), labels)
            d_loss = discriminator_loss(kind, real_logits, fake_logits)
            logs: dict[str, Any] = {}
            if kind == "wgan":
                penalty = gradient_penalty(self.discriminator, real, fake.detach(), labels)
                d_loss = d_loss + config.gp_weight * penalty
                logs["gp"] = penalty.detach()
            if lazy_r1:
                penalty = r1_penalty(real_logits, seen_real)
                d_loss = d_loss + config.r1_gamma * config.r1_every * penalty
                logs["r1"] = penalty.detach()
            real_acc, fake_acc = accuracy(real_logits.detach(), fake_logits.detach(), kind)
            yield "disc", d_loss, {**logs, "real_acc": real_acc, "fake_acc": fake_acc, "real_spread": real_spread}

        # resumed after the trainer stepped D: the last fakes, judged by the updated D
        with frozen(self.discriminator):
            g_loss = generator_loss(kind, self._see(fake, labels))
        yield "gen", g_loss, {"spread": spread(fake.detach(), labels)}

    def health_warnings(self, record: dict[str, float]) -> list[str]:
        """Warnings from one logged training record, once a symptom has lasted HEALTH_PATIENCE logs after the
        first HEALTH_WARMUP_STEPS steps: the generator collapsing (its fakes spread far less than the reals) or
        the discriminator winning outright (it tells reals and fakes apart almost perfectly, so the generator
        learns nothing)."""
        if record.get("step", HEALTH_WARMUP_STEPS) < HEALTH_WARMUP_STEPS:
            return []
        checks = {
            "collapse": record.get("gen/spread", 1.0) < COLLAPSE_RATIO * record.get("disc/real_spread", 0.0),
            "disc_wins": min(record.get("disc/real_acc", 0.0), record.get("disc/fake_acc", 0.0)) >= WIN_ACCURACY,
        }
        warnings = []
        for name, bad in checks.items():
            history = self._symptoms.setdefault(name, deque(maxlen=HEALTH_PATIENCE))
            history.append(bool(bad))
            if len(history) == HEALTH_PATIENCE and all(history):
                history.clear()  # report once per stretch, not at every log
                if name == "collapse":
                    warnings.append(
                        f"the generator may be collapsing: its samples spread {record['gen/spread']:.3f} against "
                        f"{record['disc/real_spread']:.3f} for real images; try --set model.augment=color,translation "
                        "or model.loss=hinge with model.spectral_norm=true")
                else:
                    warnings.append(
                        f"the discriminator wins outright (accuracy {record['disc/real_acc']:.2f} on reals, "
                        f"{record['disc/fake_acc']:.2f} on fakes), so the generator gets little signal; try "
                        "--set model.r1_gamma=1 or model.augment=color,translation,cutout, or a lower model.lr_disc")
        return warnings

    # ---- sampling and latent tools ------------------------------------------------------------
    def sample_latents(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """The (n, latent_dim) latents ``sample`` draws first from the same generator."""
        return torch.randn(n, self.config.latent_dim, generator=generator, device=self.device)

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None, label: Any = None,
               truncation: float | None = None, **conditions: Any) -> torch.Tensor:
        """``n`` images in [-1, 1]. ``truncation`` psi in [0, 1] scales each latent toward the mean
        (psi z): less variety, more typical images; 1 (or None) is the model as trained."""
        self.reject_conditions(self.name, conditions)
        z = self.sample_latents(n, generator)  # z first, so the same seed gives the same latents whatever the labels
        labels = self.labels_for(n, label, generator)
        return self.decode(truncate(z, truncation), labels)

    @torch.no_grad()
    def decode(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """Latents (B, latent_dim) -> images in [-1, 1] from the generator in eval mode."""
        if z.dim() != 2 or z.shape[1] != self.config.latent_dim:
            raise ConfigError(f"decode expects latents shaped (B, {self.config.latent_dim}), got {tuple(z.shape)}")
        if self.num_classes and labels is None:
            raise ConfigError("this gan is class-conditional: decode needs labels")
        with eval_mode(self):
            return self.generate(z.to(self.device), labels)

    def sampling_nets(self) -> list:
        """The generator as ``decode`` runs it: latents (and labels) -> images in [-1, 1]."""
        from genforge.families.sampling_nets import EXAMPLE_BATCH, example_labels, label_note, sampling_net

        latent = self.config.latent_dim
        inputs = {"z": torch.randn(EXAMPLE_BATCH, latent, device=self.device),
                  **example_labels(self.num_classes, self.device)}
        shape = ", ".join(map(str, self.spec.shape))
        summary = (f"z (B, {latent}) float32 latents drawn from N(0, I) -> images (B, {shape}) float32 in [-1, 1] "
                   f"(tanh); truncation is the caller's: pass psi * z (psi in [0, 1]) for less variety, more typical "
                   f"images." + label_note(self.num_classes, "pick each image's class"))
        return [sampling_net("generator", self.generate, self, inputs, ["images"], summary)]

    def encode(self, images: torch.Tensor, label: Any = None, generator: torch.Generator | None = None,
               steps: int = 300, restarts: int = 4, lr: float = 0.05) -> tuple[torch.Tensor, torch.Tensor | None]:
        """GAN inversion: latents (B, latent_dim) whose images reproduce ``images`` (B, C, H, W) in [-1, 1].

        Adam optimises ``restarts`` random starts per image on the pixel MSE plus a weak pull toward the
        latent prior, and keeps the best. A class-conditional GAN without ``label`` also searches over
        classes (each class gets the restarts) and returns the labels it chose; else labels is None.
        """
        self.check_images(images)
        self.settings("encode", {"steps": steps, "restarts": restarts, "label": label})
        target = images.to(self.device, torch.float32)
        b = target.shape[0]
        if self.num_classes and label is None:
            candidates = torch.arange(self.num_classes, device=self.device).repeat_interleave(restarts)
        elif self.num_classes:
            candidates = resolve_labels(label, 1, self.num_classes, self.spec.class_names, None, self.device).repeat(restarts)
        else:
            candidates = None
        k = restarts if candidates is None else len(candidates)  # tries per image
        z = torch.randn(b * k, self.config.latent_dim, generator=generator, device=self.device).requires_grad_(True)
        labels = None if candidates is None else candidates.repeat(b)
        goal = target.repeat_interleave(k, dim=0)
        opt = torch.optim.Adam([z], lr=lr)
        with eval_mode(self), frozen(self.generator), torch.enable_grad():
            for step in range(steps):  # every restart and candidate class at once: one tick a step
                err = (self.generate(z, labels) - goal).pow(2).flatten(1).mean(1)
                loss = err.sum() + 1e-3 * z.pow(2).mean(1).sum()  # keeps z near the prior's typical set
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                progress.tick(step + 1, steps)
            with torch.no_grad():
                err = (self.generate(z, labels) - goal).pow(2).flatten(1).mean(1)
        best = err.view(b, k).argmin(dim=1) + torch.arange(b, device=self.device) * k
        return z.detach()[best], (None if labels is None else labels[best])


@torch.no_grad()
def spread(images: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
    """The sample-diversity statistic training health watches: ``diversity`` of the batch, or with labels
    its mean within each class, so a conditional generator drawing one image per class shows as collapsed."""
    if labels is None:
        return diversity(images)
    groups = [diversity(images[labels == c]) for c in labels.unique() if int((labels == c).sum()) >= 2]
    return torch.stack(groups).mean() if groups else diversity(images)


MODEL_CHOICES = {"backbone": BACKBONES, "loss": LOSSES}
MODEL_RANGES = {"latent_dim": Range(1), "width": Range(1), "gp_weight": Range(0), "r1_gamma": Range(0),
                "r1_every": Range(1), "d_steps": Range(1),
                "lr_gen": Range(0, open_low=True, hint="or unset to use train.lr"),
                "lr_disc": Range(0, open_low=True, hint="or unset to use train.lr")}


def check_config(config: GANConfig) -> None:
    check_choices(config, MODEL_CHOICES, "gan ")
    check_ranges(config, MODEL_RANGES, "model")
