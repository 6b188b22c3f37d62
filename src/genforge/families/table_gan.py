"""The GAN on tables: CTGAN's recipe (Xu et al., 2019, "Modeling Tabular Data using Conditional GAN").

Rows come encoded by the table modality (``nets/spans.py``): continuous spans (a value normalised within its
mode, a binary code) and one-hot groups (the mode a value belongs to, a category, whether a cell is missing).

- **Generator**: z ~ N(0, I) and a conditional vector -> CTGAN's residual blocks (each block's output joins
  its input) -> one raw output per dim of the row. In training, continuous spans go through tanh and each
  one-hot group through a Gumbel-softmax of temperature 0.2: soft one-hots the critic's gradient reaches the
  generator through. At sampling each group is a one-hot draw from its softmax.
- **Critic**: PacGAN (Lin et al., 2018): ``pac`` rows, each with its conditional vector, are concatenated into
  one input and scored together, so a generator drawing the same row again and again is caught by a pack's
  lack of variety. Linear -> LeakyReLU(0.2) -> Dropout(0.5) blocks -> one score per pack, trained with the
  Wasserstein loss and WGAN-GP's gradient penalty (weight 10) at interpolates between real and fake packs,
  one mixing weight per pack and the norm of the whole pack's gradient, as CTGAN computes it.
- **Conditional vector and training-by-sampling**: the categorical columns' "category" spans (not the modes of
  numbers, not missing flags) make up the conditional vector. For each fake row one such column is chosen
  uniformly and one of its categories with probability proportional to log(frequency + 1), so rare
  categories are trained on far more often than they occur; the vector is that category, one-hot. The critic
  judges real rows under conditions drawn the same way (independently of the fakes', as CTGAN's shuffle
  makes them), each real row one holding its condition's category. An extra cross-entropy (CTGAN's
  conditional loss) makes the generator's output for the chosen column match the condition. A table
  without categorical columns has no conditional vector.

Frequencies come from each training batch: the table layout (``DataSpec.table``) gives each column's number of
categories, not their counts. Matching real rows are drawn from the batch too, so every condition has one.
The counts seen over training are kept in a buffer, saved with the weights: ``sample`` draws its conditions
as often as the training rows held them (a column uniformly, then a category with its empirical frequency),
so the samples keep the table's category proportions. ``sample(n, where=[...])`` keeps only rows holding given
categories (``table_conditions.py``): the conditional vector is the first condition's category for every row
(CTGAN's own conditional sampling), and rows missing any condition (the generator may still miss) are dropped
and more drawn.

Every random number of a training step comes from ``genforge.draws``: noise, conditions, the choice of real
rows, Gumbel noise, dropout masks and the penalty's mixing weights. Two things stay each part's own when a
step's batch is split (``train.grad_accum``, several processes): the batch statistics of the generator's
BatchNorm, and the category frequencies and matching real rows, taken from the part's own rows.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator

import torch
import torch.nn.functional as F
from torch import nn

from genforge import draws
from genforge.config import Range, check_ranges
from genforge.data.spec import DataSpec, TableSpan
from genforge.errors import ConfigError
from genforge.families.base import Family, OptimizerGroup, Phase, eval_mode
from genforge.families.capabilities import TableSampling, declare
from genforge.families.gan_objectives import discriminator_loss, generator_loss, gradient_penalty
from genforge.families.table_conditions import Condition, condition_span, draw_matching
from genforge.nets.conv import frozen
from genforge.nets.mlp import Residual, check_widths
from genforge.nets.spans import activate, gumbel_activate, spans_of

GUMBEL_TAU = 0.2  # CTGAN's temperature: near one-hot soft draws that still pass a gradient
LEAKY_SLOPE = 0.2
DROPOUT = 0.5


@dataclass
class TableGANConfig:
    latent_dim: int = 128  # CTGAN's embedding_dim
    generator_dim: list[int] = field(default_factory=lambda: [256, 256])  # residual block widths (CTGAN's names)
    discriminator_dim: list[int] = field(default_factory=lambda: [256, 256])
    pac: int = 10  # rows per pack the critic scores together; train.batch_size must be a multiple of it
    gp_weight: float = 10.0  # WGAN-GP's lambda


MODEL_RANGES = {"latent_dim": Range(1, 4096), "pac": Range(1, 1000), "gp_weight": Range(0)}


class Generator(nn.Sequential):
    """CTGAN's generator: residual blocks, each seeing the input and every block before it, then a Linear to
    the row's raw outputs."""

    def __init__(self, in_dim: int, hidden: list[int], out_dim: int):
        layers: list[nn.Module] = []
        width = in_dim
        for h in hidden:
            layers.append(Residual(width, h))
            width += h
        layers.append(nn.Linear(width, out_dim))
        super().__init__(*layers)


class Dropout(nn.Module):
    """Dropout whose masks come from genforge.draws, so a split batch drops what the whole batch would."""

    def __init__(self, p: float):
        super().__init__()
        self.p = p

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0:
            return h
        keep = draws.rand(h.shape[0], h.shape[1], device=h.device) >= self.p
        return h * keep / (1 - self.p)


class Discriminator(nn.Sequential):
    """CTGAN's critic on packs (B / pac, pac x row width): Linear -> LeakyReLU -> Dropout blocks, one score each."""

    def __init__(self, in_dim: int, hidden: list[int]):
        layers: list[nn.Module] = []
        width = in_dim
        for h in hidden:
            layers += [nn.Linear(width, h), nn.LeakyReLU(LEAKY_SLOPE), Dropout(DROPOUT)]
            width = h
        layers.append(nn.Linear(width, 1))
        super().__init__(*layers)


def pack(rows: torch.Tensor, pac: int) -> torch.Tensor:
    """(B, W) -> (B / pac, pac x W): each run of ``pac`` consecutive rows becomes one input of the critic."""
    return rows.reshape(rows.shape[0] // pac, pac * rows.shape[1])


def check_packs(rows: int, pac: int) -> None:
    if rows % pac:
        raise ConfigError(f"train.batch_size ({rows}) must be a multiple of model.pac ({pac}): the table gan's "
                          f"critic scores packs of {pac} rows; try --batch-size {max(pac, rows - rows % pac)}")


# ---- conditional vectors ------------------------------------------------------------------------------
def choose_categories(weights: torch.Tensor, entry_column: torch.Tensor, n_columns: int,
                      u: torch.Tensor) -> torch.Tensor:
    """One entry of the conditional vector per row of ``u`` (n, 2) uniforms: a column chosen uniformly by
    u[:, 0], then one of its categories with probability proportional to ``weights`` (C,) by u[:, 1] (the
    inverse of the column's cumulative weights). ``entry_column`` (C,) says which column each entry is of."""
    column = (u[:, 0] * n_columns).long().clamp_max(n_columns - 1)
    in_column = entry_column[None, :] == column[:, None]  # (n, C)
    cumulative = (weights.float()[None, :] * in_column).cumsum(dim=1)
    target = u[:, 1] * cumulative[:, -1]
    choice = (cumulative <= target[:, None]).sum(dim=1)  # entries before the column, and those the target passed
    # u[:, 1] * total may round up to the total itself: stay on the column's last entry
    last = (in_column * torch.arange(in_column.shape[1], device=u.device)).amax(dim=1)
    return torch.minimum(choice, last)


def matching_rows(entries: torch.Tensor, counts: torch.Tensor, choice: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """For each chosen entry (n,), a row of the batch holding that category: the one at position u x count among
    them (``u``: (n,) uniforms); a uniformly chosen row where none does. ``entries`` (B, S): each row's category
    in each conditioning column, as its entry of the conditional vector; ``counts`` (C,): how many rows hold each."""
    b = entries.shape[0]
    flat = entries.t().reshape(-1)  # column by column: position s * B + r holds row r's entry of column s
    order = torch.argsort(flat, stable=True)  # the rows of entry 0, then of entry 1, ...
    first = counts.cumsum(0) - counts  # where each entry's rows start in ``order``
    held = counts[choice]
    k = (u * held).long().clamp_max(held - 1).clamp_min(0)
    matched = order[(first[choice] + k).clamp_max(flat.numel() - 1)] % b
    anyone = (u * b).long().clamp_max(b - 1)
    return torch.where(held > 0, matched, anyone)


def conditional_loss(logits: torch.Tensor, choice: torch.Tensor, spans: list[TableSpan], offsets: list[int],
                     entry_column: torch.Tensor) -> torch.Tensor:
    """CTGAN's conditional loss: the cross-entropy of each fake row's conditioned column's outputs against the
    category it was asked for, averaged over the batch (the other columns are free)."""
    column = entry_column[choice]
    loss = torch.zeros(logits.shape[0], device=logits.device)
    for s, (span, offset) in enumerate(zip(spans, offsets)):
        target = (choice - offset).clamp(0, span.width - 1)
        ce = F.cross_entropy(logits[:, span.start:span.stop].float(), target, reduction="none")
        loss = loss + ce * (column == s)
    return loss.mean()


class TableGAN(Family):
    name = "gan"
    Config = TableGANConfig
    accepts = ("table",)
    capabilities = declare(sample=TableSampling)
    exports = ("onnx",)
    train_defaults = {
        "lr": 2e-4,
        "betas": (0.5, 0.9),  # both players, as CTGAN's Adam
        "weight_decay": 1e-6,
        "batch_size": 500,
        "warmup_steps": 0,
        "grad_clip": 0.0,  # the gradient penalty keeps the critic's slopes in check; CTGAN clips nothing
        "ema_decay": 0.0,  # CTGAN samples from the last weights
    }

    @classmethod
    def check_training(cls, model: dict, train) -> None:
        check_packs(train.batch_size, model.get("pac", TableGANConfig.pac))

    def __init__(self, config: TableGANConfig, spec: DataSpec):
        super().__init__(config, spec)
        check_ranges(config, MODEL_RANGES, "model")
        check_widths("model.generator_dim", config.generator_dim)
        check_widths("model.discriminator_dim", config.discriminator_dim)
        self.spans = spans_of(spec)
        self.category_spans = [s for s in self.spans if s.kind == "category"]
        self.offsets = [sum(s.width for s in self.category_spans[:i]) for i in range(len(self.category_spans))]
        self.cond_width = sum(s.width for s in self.category_spans)
        width = spec.shape[0]
        self.generator = Generator(config.latent_dim + self.cond_width, config.generator_dim, width)
        self.discriminator = Discriminator(config.pac * (width + self.cond_width), config.discriminator_dim)
        # which conditioning column each entry of the conditional vector belongs to
        column = [s for s, span in enumerate(self.category_spans) for _ in range(span.width)]
        self.register_buffer("entry_column", torch.tensor(column, dtype=torch.long), persistent=False)
        # how many training rows held each category: sampling's condition frequencies, saved with the weights
        self.register_buffer("category_counts", torch.zeros(self.cond_width, dtype=torch.long))

    def optimizer_groups(self) -> dict[str, OptimizerGroup]:
        return {"disc": OptimizerGroup(params=list(self.discriminator.parameters())),
                "gen": OptimizerGroup(params=list(self.generator.parameters()))}

    def category_entries(self, x: torch.Tensor) -> torch.Tensor:
        """(B, S): each row's category in each conditioning column, as its entry of the conditional vector."""
        return torch.stack([x[:, span.start:span.stop].argmax(dim=1) + offset
                            for span, offset in zip(self.category_spans, self.offsets)], dim=1)

    def one_hot(self, choice: torch.Tensor) -> torch.Tensor:
        return F.one_hot(choice, self.cond_width).float()

    def training_conditions(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Training-by-sampling on the batch ``x``: (the fakes' chosen entries (B,), real rows (B, D), their
        conditional vectors (B, C)), each real row holding its condition's category."""
        b = x.shape[0]
        entries = self.category_entries(x)
        counts = torch.bincount(entries.reshape(-1), minlength=self.cond_width)
        self.category_counts += counts  # every micro-batch adds its own rows: the step adds the whole batch
        weights = torch.log1p(counts.float())
        u = draws.rand(b, 5, device=x.device)
        n_columns = len(self.category_spans)
        fake_choice = choose_categories(weights, self.entry_column, n_columns, u[:, 0:2])
        real_choice = choose_categories(weights, self.entry_column, n_columns, u[:, 2:4])
        rows = matching_rows(entries, counts, real_choice, u[:, 4])
        return fake_choice, x[rows], self.one_hot(real_choice)

    def training_step(self, batch: dict[str, torch.Tensor]) -> Iterator[Phase]:
        x = batch["x"]
        b, pac = x.shape[0], self.config.pac
        check_packs(b, pac)
        if self.category_spans:
            fake_choice, real, real_cond = self.training_conditions(x)
            fake_cond = self.one_hot(fake_choice)
        else:
            fake_choice, real, real_cond, fake_cond = None, x, x.new_zeros(b, 0), x.new_zeros(b, 0)
        z = draws.randn(b, self.config.latent_dim, device=x.device)
        logits = self.generator(torch.cat([z, fake_cond], dim=1)).float()
        fake = torch.cat([gumbel_activate(logits, self.spans, GUMBEL_TAU), fake_cond], dim=1)
        real = pack(torch.cat([real, real_cond], dim=1), pac)

        fake_packs = pack(fake.detach(), pac)
        real_scores = self.discriminator(real).float()
        fake_scores = self.discriminator(fake_packs).float()
        penalty = gradient_penalty(self.discriminator, real, fake_packs)
        d_loss = discriminator_loss("wgan", real_scores, fake_scores) + self.config.gp_weight * penalty
        distance = (real_scores.mean() - fake_scores.mean()).detach()  # the critic's Wasserstein estimate
        yield "disc", d_loss, {"gp": penalty.detach(), "distance": distance}

        # resumed after the trainer stepped the critic: the same fakes, judged by the updated critic
        with frozen(self.discriminator):
            g_loss = generator_loss("wgan", self.discriminator(pack(fake, pac)))
        logs = {}
        if fake_choice is not None:
            cond = conditional_loss(logits, fake_choice, self.category_spans, self.offsets, self.entry_column)
            g_loss = g_loss + cond
            logs["cond"] = cond.detach()
        yield "gen", g_loss, logs

    def sampling_conditions(self, n: int, generator: torch.Generator | None,
                            where: Condition | None = None) -> torch.Tensor:
        """(n, C) conditional vectors as often as the training rows held each category (CTGAN's sample): a
        column uniformly, then a category with its empirical frequency. Before any training, all alike.
        ``where``: that category for every row instead (CTGAN's conditional sampling)."""
        if not self.category_spans:
            return torch.zeros(n, 0, device=self.device)
        if where is not None:
            span = condition_span(self.category_spans, where)
            entry = self.offsets[self.category_spans.index(span)] + where.index
            return self.one_hot(torch.full((n,), entry, dtype=torch.long, device=self.device))
        counts = self.category_counts
        weights = counts if bool(counts.any()) else torch.ones_like(counts)
        u = torch.rand(n, 2, generator=generator, device=self.device)
        return self.one_hot(choose_categories(weights, self.entry_column, len(self.category_spans), u))

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None, where: list[Condition] | None = None,
               **conditions) -> torch.Tensor:
        """``n`` encoded rows (n, D): one-hot draws for the groups, tanh for continuous spans. ``where``: only
        rows holding every condition's category, the generator conditioned on the first that names a one-hot
        column (a binary-coded column has no entry in the conditional vector)."""
        self.reject_conditions(self.name, conditions)
        with eval_mode(self):
            if not where:
                return self.draw(n, generator)
            first = next((c for c in where if condition_span(self.spans, c).kind == "category"), None)
            return draw_matching(lambda k: self.draw(k, generator, first), n, self.spans, where)

    def sampling_nets(self) -> list:
        """The generator as ``draw`` runs it, up to the draws: latents and the conditional vector -> each span's
        values and categories' probabilities."""
        from genforge.families.sampling_nets import (EXAMPLE_BATCH, sampling_net, span_layout, span_probabilities,
                                                     spans_note)

        latent, width = self.config.latent_dim, self.spec.shape[0]
        inputs = {"z": torch.randn(EXAMPLE_BATCH, latent, device=self.device)}
        condition = ""
        if self.cond_width:  # a table with categorical columns conditions on one of their categories
            entries = torch.arange(EXAMPLE_BATCH, device=self.device) % self.cond_width
            inputs["cond"] = self.one_hot(entries)
            condition = (f" and cond (B, {self.cond_width}) float32, one category of one categorical column, one-hot "
                         f"(genforge picks a column uniformly, then a category as often as the training rows held it: "
                         f"category_counts)")

        def generate(z: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
            return span_probabilities(self.generator(z if cond is None else torch.cat([z, cond], dim=1)), self.spans)

        facts = {"spans": span_layout(self.spans),
                 "conditions": [{"column": span.column, "offset": offset, "width": span.width}
                                for span, offset in zip(self.category_spans, self.offsets)],
                 "category_counts": self.category_counts.tolist()}
        return [sampling_net(
            "generator", generate, self, inputs, ["rows"],
            f"z (B, {latent}) float32 latents from N(0, I){condition} -> rows (B, {width}) float32: continuous spans "
            f"in [-1, 1], one-hot groups as probabilities." + spans_note(), facts=facts)]

    def draw(self, n: int, generator: torch.Generator | None, where: Condition | None = None) -> torch.Tensor:
        z = torch.randn(n, self.config.latent_dim, generator=generator, device=self.device)
        cond = self.sampling_conditions(n, generator, where)
        return activate(self.generator(torch.cat([z, cond], dim=1)), self.spans, generator)
