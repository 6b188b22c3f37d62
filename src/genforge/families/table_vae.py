"""The VAE on tables: TVAE's recipe (Xu et al., 2019, "Modeling Tabular Data using Conditional GAN").

Rows come encoded by the table modality (``nets/spans.py``): continuous spans (a value normalised within its
mode, a binary code) and one-hot groups (the mode a value belongs to, a category, whether a cell is missing).
An MLP encoder gives q(z|x) = N(mu, diag(exp(logvar))); an MLP decoder gives, per row, a Gaussian on each
continuous entry, N(x; tanh(out), sigma^2) with one learned sigma per entry (clamped to [0.01, 1], as TVAE
does), and a categorical on each one-hot group. The loss per row is ``loss_factor`` x reconstruction NLL + KL
to N(0, I), averaged over the batch. Sampling decodes z ~ N(0, I) and draws each group's category from its
softmax (TVAE takes the most likely one; drawing keeps rare categories in proportion); continuous entries
are the Gaussian's mean. ``sample(n, where=[...])`` keeps only rows holding given categories, by rejection
(``table_conditions.py``): TVAE has no conditional input.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator

import torch
from torch import nn

from genforge import draws
from genforge.config import Range, check_ranges
from genforge.data.spec import DataSpec
from genforge.families.base import Family, OptimizerGroup, Phase, eval_mode
from genforge.families.capabilities import TableSampling, declare
from genforge.families.table_conditions import Condition, draw_matching
from genforge.families.vae import kl_divergence_per_dim
from genforge.nets.mlp import MLP, check_widths
from genforge.nets.spans import activate, reconstruction_nll, spans_of

MIN_SIGMA, MAX_SIGMA = 0.01, 1.0


@dataclass
class TableVAEConfig:
    latent_dim: int = 128  # TVAE's embedding_dim
    hidden: list[int] = field(default_factory=lambda: [128, 128])  # encoder widths; the decoder mirrors them
    loss_factor: float = 2.0  # weight of the reconstruction term against the KL (TVAE's default)


MODEL_RANGES = {"latent_dim": Range(1, 4096), "loss_factor": Range(0, open_low=True)}


class TableVAE(Family):
    name = "vae"
    Config = TableVAEConfig
    accepts = ("table",)
    capabilities = declare(sample=TableSampling)
    exports = ("onnx",)
    train_defaults = {
        "lr": 1e-3,
        "weight_decay": 1e-5,  # TVAE's l2scale
        "batch_size": 500,
        "warmup_steps": 0,
        "grad_clip": 0.0,  # the loss is summed over a row's entries: its gradient norm is large by design
        "ema_decay": 0.0,  # the ELBO is not a moving game: the last weights are the best ones
    }

    def __init__(self, config: TableVAEConfig, spec: DataSpec):
        super().__init__(config, spec)
        check_ranges(config, MODEL_RANGES, "model")
        check_widths("model.hidden", config.hidden)
        self.spans = spans_of(spec)
        width = spec.shape[0]
        self.encoder = MLP(width, config.hidden, 2 * config.latent_dim)
        self.decoder = MLP(config.latent_dim, list(reversed(config.hidden)), width)
        self.log_sigma = nn.Parameter(torch.full((width,), 0.1).log())

    def optimizer_groups(self) -> dict[str, OptimizerGroup]:
        return {"main": OptimizerGroup(params=list(self.parameters()))}

    def sigma(self) -> torch.Tensor:
        return self.log_sigma.exp().clamp(MIN_SIGMA, MAX_SIGMA)

    def training_step(self, batch: dict[str, torch.Tensor]) -> Iterator[Phase]:
        x = batch["x"]
        mu, logvar = self.encoder(x).float().chunk(2, dim=1)
        logvar = logvar.clamp(-20.0, 10.0)
        z = mu + draws.randn_like(mu) * (0.5 * logvar).exp()
        recon = reconstruction_nll(self.decoder(z), x, self.spans, self.sigma())
        kl = kl_divergence_per_dim(mu, logvar, torch.zeros_like(mu)).sum(dim=1)
        loss = (self.config.loss_factor * recon + kl).mean()
        yield "main", loss, {"recon": recon.mean().detach(), "kl": kl.mean().detach()}

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None, where: list[Condition] | None = None,
               **conditions) -> torch.Tensor:
        """``n`` encoded rows (n, D); ``where``: only rows holding every condition's category."""
        self.reject_conditions(self.name, conditions)
        with eval_mode(self):
            if not where:
                return self.draw(n, generator)
            return draw_matching(lambda k: self.draw(k, generator), n, self.spans, where)

    def sampling_nets(self) -> list:
        """The decoder as ``draw`` runs it, up to the draws: latents -> each span's values and categories'
        probabilities."""
        from genforge.families.sampling_nets import (EXAMPLE_BATCH, sampling_net, span_layout, span_probabilities,
                                                     spans_note)

        latent, width = self.config.latent_dim, self.spec.shape[0]
        return [sampling_net(
            "decoder", lambda z: span_probabilities(self.decoder(z), self.spans), self,
            {"z": torch.randn(EXAMPLE_BATCH, latent, device=self.device)}, ["rows"],
            f"z (B, {latent}) float32 latents from N(0, I) -> rows (B, {width}) float32: continuous spans in [-1, 1] "
            f"(the Gaussian's mean), one-hot groups as probabilities." + spans_note(),
            facts={"spans": span_layout(self.spans)})]

    def draw(self, n: int, generator: torch.Generator | None) -> torch.Tensor:
        z = torch.randn(n, self.config.latent_dim, generator=generator, device=self.device)
        return activate(self.decoder(z), self.spans, generator)
