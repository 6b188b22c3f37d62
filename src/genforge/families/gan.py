"""The GAN family: a DCGAN generator and discriminator trained with the non-saturating loss.

Generator: latent z ~ N(0, I) (plus a label embedding when class-conditional) -> linear -> small feature
map -> stride-2 transposed convolutions with BatchNorm and ReLU -> tanh, centre-cropped to the data's size
(see ``genforge.nets.conv`` for how any size from 4 to 1024 pixels is reached).
Discriminator: stride-2 convolutions with LeakyReLU and no normalisation, plus a minibatch-spread
feature map -> one logit; when class-conditional, a projection term <embed(y), features> is added
(Miyato & Koyama, 2018) and the spread is measured within each class. Without that spread feature a
conditional generator on MNIST learns to ignore z and draws one image per class.

One training step yields two phases: ("disc", d_loss) on real images and detached fakes, then, after the
trainer has stepped the discriminator, ("gen", g_loss) from the updated discriminator's view of the same
fakes. During the generator phase the discriminator's parameters are frozen, so its gradients stay
untouched (the trainer zeroes only the optimizer it steps). Sampling runs the generator in eval mode:
BatchNorm uses running statistics, so samples do not depend on the batch and n=1 works.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterator

import torch
import torch.nn.functional as F
from torch import nn

from genforge.data.spec import DataSpec
from genforge.errors import ConfigError
from genforge.families.base import Family, OptimizerGroup, Phase, eval_mode
from genforge.nets.conv import (ConvDecoder, ConvEncoder, check_image_shape, decay_split, frozen,
                                resolve_labels)

DCGAN_BETAS = (0.5, 0.999)  # a low beta1 keeps Adam's momentum from overshooting the moving GAN game


@dataclass
class GANConfig:
    # sized for 28x28 MNIST trained ~2 minutes on 2 CPU cores (see train_defaults)
    latent_dim: int = 64
    width: int = 32  # channels next to the image in G and D (DCGAN's ngf/ndf); x2 per halving, up to x8
    class_conditional: bool = True  # condition on labels when the data has them (sample(label=...))
    minibatch_std: bool = True  # D sees each batch's feature spread, against mode collapse


class Discriminator(nn.Module):
    """Image -> one logit per image; with ``num_classes``, a projection discriminator."""

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
    modalities = ("image",)
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
        if config.latent_dim < 1 or config.width < 1:
            raise ConfigError(
                f"gan latent_dim and width must be positive integers, got {config.latent_dim} and {config.width}"
            )
        self.num_classes = spec.num_classes if config.class_conditional and spec.num_classes else None
        self.generator = ConvDecoder(config.latent_dim, spec.shape, config.width, norm="batch",
                                     num_classes=self.num_classes)
        self.discriminator = Discriminator(spec.shape, config.width, self.num_classes, config.minibatch_std)

    def optimizer_groups(self) -> dict[str, OptimizerGroup]:
        groups = {}
        for name, net in (("disc", self.discriminator), ("gen", self.generator)):
            decay, no_decay = decay_split(net)
            groups[name] = OptimizerGroup(params=decay, no_decay=no_decay, betas=DCGAN_BETAS)
        return groups

    def generate(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """Latents (B, latent_dim) -> images in [-1, 1], in whatever mode the module is in."""
        return torch.tanh(self.generator(z, labels).float())

    def training_step(self, batch: dict[str, torch.Tensor]) -> Iterator[Phase]:
        real = batch["x"]
        labels = None
        if self.num_classes:
            if "y" not in batch:
                raise ConfigError("this gan is class-conditional but the batch has no labels 'y'")
            labels = batch["y"]
        z = torch.randn(real.shape[0], self.config.latent_dim, device=real.device)
        fake = self.generate(z, labels)

        # non-saturating loss in softplus form: -log sigmoid(l) = softplus(-l), -log(1 - sigmoid(l)) = softplus(l).
        # Reals and fakes go through D separately: its spread feature must measure each batch on its own.
        real_logits = self.discriminator(real, labels).float()
        fake_logits = self.discriminator(fake.detach(), labels).float()
        d_loss = F.softplus(-real_logits).mean() + F.softplus(fake_logits).mean()
        yield "disc", d_loss, {
            "d_real": torch.sigmoid(real_logits).mean().detach(),  # D's mean belief that reals are real
            "d_fake": torch.sigmoid(fake_logits).mean().detach(),
        }

        # resumed after the trainer stepped D: the same fakes, judged by the updated D
        with frozen(self.discriminator):
            gen_logits = self.discriminator(fake, labels).float()
        g_loss = F.softplus(-gen_logits).mean()
        yield "gen", g_loss, {}

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None, label: Any = None,
               **conditions: Any) -> torch.Tensor:
        self.reject_conditions(self.name, conditions)
        if self.num_classes is None:
            self.reject_conditions(self.name, {"label": label})
        # z first, so the same seed gives the same latents whatever the labels
        z = torch.randn(n, self.config.latent_dim, generator=generator, device=self.device)
        labels = None
        if self.num_classes:
            labels = resolve_labels(label, n, self.num_classes, self.spec.class_names, generator, self.device)
        with eval_mode(self):
            return self.generate(z, labels)
