"""Diffusion on tables: TabDDPM's recipe (Kotelnikov et al., 2023, "TabDDPM: Modelling Tabular Data with
Diffusion Models").

Rows come encoded by the table modality (``nets/spans.py``): continuous spans (a value normalised within its
mode, a binary code) and one-hot groups (the mode a value belongs to, a category, whether a cell is missing).
Each part is noised the way that suits it, both on one schedule (``sampling/schedules.py``: abar_t is the
signal left after step t, t = 0 .. T-1):

- **Gaussian diffusion** on the continuous entries (DDPM, Ho et al. 2020): x_t = sqrt(abar_t) x_0 +
  sqrt(1 - abar_t) eps. The network predicts eps; the loss is the squared error averaged over the entries.
- **Multinomial diffusion** on each one-hot group of K categories (Hoogeboom et al. 2021): a step keeps the
  category with probability 1 - beta_t and otherwise draws one uniformly, q(x_t | x_{t-1}) = Cat((1 - beta_t)
  x_{t-1} + beta_t / K), so q(x_t | x_0) = Cat(abar_t x_0 + (1 - abar_t) / K), and the posterior
  q(x_{t-1} | x_t, x_0) is q(x_t | x_{t-1}) q(x_{t-1} | x_0) normalised, computed in log space. The network
  predicts x_0's logits per group; p(x_{t-1} | x_t) is that posterior with x_0 replaced by their softmax. The
  loss per group is KL(q(x_{t-1} | x_t, x_0) || p(x_{t-1} | x_t)); at t = 0 the posterior is x_0 itself and
  the KL is the decoder's NLL, -log p(x_0 | x_1). As TabDDPM does, it is multiplied by T (t is uniform: an
  unbiased estimate of the sum over all steps, the groups' variational bound less its constant prior term),
  summed over groups and divided by their number.

The loss is the Gaussian term plus the multinomial one, unweighted, averaged over the batch. The denoiser is
TabDDPM's MLP (``nets.mlp.TimestepMLP``): it sees the noised row as the data lays it out (continuous entries
and one-hots in place) and outputs a row: eps on continuous entries, x_0's logits on each group. Unlike
TabDDPM, which feeds log one-hots, it is fed the one-hots themselves (0 and 1, not -69 and 0).

Sampling starts from N(0, I) on continuous entries and a uniform category per group and walks the chain
back. The continuous entries take the image family's ancestral DDPM steps (``sampling/diffusion.py``) from
the network's x_0 estimate, clipped to [-1, 1]; each group draws from p(x_s | x_t). ``model.sample_steps``
(or ``steps`` per call) walks fewer steps than training, on the image family's trailing spacing: a step then
jumps from t to an earlier s, which stays exact for both parts, since q(x_t | x_s) has the same form with
abar_t / abar_s in place of 1 - beta_t. Rows come back with continuous entries in [-1, 1] and exact one-hots.
``sample(n, where=[...])`` keeps only rows holding given categories, by rejection (``table_conditions.py``).

Training draws every random number from ``genforge.draws`` (a split batch draws what the whole one would);
sampling draws only from the generator. The log-space maths runs in float32 whatever the autocast, and a
one-hot's zeros are log(1e-30), not -inf, so every log-probability and its gradient stay finite.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Iterator

import torch
import torch.nn.functional as F
from torch import nn

from genforge import draws, progress
from genforge.config import Range, check_choices, check_ranges
from genforge.data.spec import DataSpec, TableSpan
from genforge.families.base import Family, Phase, eval_mode
from genforge.families.capabilities import TableDiffusionSampling, declare
from genforge.families.table_conditions import Condition, draw_matching
from genforge.nets.mlp import TimestepMLP, check_widths
from genforge.nets.spans import gumbel_noise, spans_of
from genforge.sampling import diffusion as solvers
from genforge.sampling.schedules import (
    BETA_SCHEDULES,
    check_steps,
    make_alphas_cumprod,
    sampling_sigmas,
    sigma_to_timestep,
)

LOG_ZERO_PROB = 1e-30  # a one-hot's zeros as probabilities: log 1e-30 = -69 keeps the maths finite
PAD = -1e4  # the log-probability of a group's padding entries: exp(PAD) is exactly 0 in float32


@dataclass
class TableDiffusionConfig:
    hidden: list[int] = field(default_factory=lambda: [256, 256])  # the denoiser MLP's widths (TabDDPM's d_layers)
    time_dim: int = 128  # width of the input projection and of the timestep embedding (TabDDPM's dim_t)
    timesteps: int = 100  # TabDDPM's tuned runs use 100 or 1000
    schedule: str = "cosine"  # TabDDPM's; "linear" is DDPM's
    sample_steps: int | None = 50  # reverse steps when sampling, strided; at most timesteps; None walks them all


MODEL_RANGES = {"time_dim": Range(2, 65536), "timesteps": Range(2, 100_000)}


def check_config(config: TableDiffusionConfig) -> None:
    check_ranges(config, MODEL_RANGES, "model")
    check_choices(config, {"schedule": tuple(BETA_SCHEDULES)})
    check_widths("model.hidden", config.hidden)
    if config.sample_steps is not None:
        Range(1).check("model.sample_steps", config.sample_steps, integer=True)


# ---- multinomial diffusion, on (..., K) log-probabilities (pure functions) ---------------------------
def log1mexp(a: torch.Tensor) -> torch.Tensor:
    """log(1 - exp(a)) for a <= 0 (-inf at 0), accurate at both ends (Maechler, 2012)."""
    return torch.where(a > -math.log(2), torch.log(-torch.expm1(a)), torch.log1p(-torch.exp(a)))


def log_one_hot(x: torch.Tensor) -> torch.Tensor:
    return x.clamp_min(LOG_ZERO_PROB).log()


def q_marginal(log_x: torch.Tensor, log_keep: torch.Tensor, log_uniform: torch.Tensor) -> torch.Tensor:
    """log(keep x + (1 - keep) u) for distributions ``x`` over the last dim: where a chain that keeps its category
    with total probability ``keep``, else draws one from u (uniform over the group's K categories: log u = -log K),
    takes x. With keep = abar_t and x = x_0 it is q(x_t | x_0); with keep = abar_t / abar_s and x = x_t it is
    q(x_t | x_s) as a function of x_s (the transition is symmetric)."""
    return torch.logaddexp(log_x + log_keep, log1mexp(log_keep) + log_uniform)


def q_posterior(log_x0: torch.Tensor, log_x_t: torch.Tensor, log_uniform: torch.Tensor, log_abar_s: torch.Tensor,
                log_abar_t: torch.Tensor) -> torch.Tensor:
    """log q(x_s | x_t, x_0) for s < t, proportional to q(x_t | x_s) q(x_s | x_0) (Bayes' rule: x_t depends on x_0
    only through x_s); ``log_x0`` may be a distribution (the model's), making it p(x_s | x_t). log_abar_s = 0
    (s = -1: the data) gives x_0 itself."""
    unnormed = q_marginal(log_x0, log_abar_s, log_uniform) + q_marginal(log_x_t, log_abar_t - log_abar_s, log_uniform)
    return unnormed - unnormed.logsumexp(-1, keepdim=True)


def categorical_kl(log_p: torch.Tensor, log_q: torch.Tensor) -> torch.Tensor:
    """KL(p || q) over the last dim."""
    return (log_p.exp() * (log_p - log_q)).sum(-1)


def draw_one_hot(log_probs: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """One-hot draws from categoricals over the last dim by the Gumbel-max trick, ``u`` uniforms of its shape."""
    return F.one_hot((log_probs + gumbel_noise(u)).argmax(-1), log_probs.shape[-1]).float()


class OneHotGroups(nn.Module):
    """The row's G one-hot groups as one (B, G, K) tensor, K the widest group's width, a narrower group padded
    with entries of log-probability ``PAD`` (probability exactly 0 in float32, yet finite, so no -inf - -inf
    reaches a gradient). One tensor however many groups there are keeps the ops per step few: on a CPU each op
    has a fixed cost, and a table's groups are many and small."""

    def __init__(self, spans: list[TableSpan]):
        super().__init__()
        groups = [span for span in spans if span.activation == "softmax"]
        self.count = len(groups)
        k = max((g.width for g in groups), default=1)
        # each entry's position in the row; padding reads position 0, and its log-probability is set to PAD
        index = [[g.start + j if j < g.width else 0 for j in range(k)] for g in groups]
        real = [j < g.width for g in groups for j in range(k)]
        self.register_buffer("index", torch.tensor(index, dtype=torch.long).reshape(-1, k), persistent=False)
        pad = torch.tensor([0.0 if r else PAD for r in real]).reshape(-1, k)
        self.register_buffer("pad", pad, persistent=False)
        widths = torch.tensor([float(g.width) for g in groups]).reshape(-1, 1)
        self.register_buffer("log_uniform", pad - widths.log(), persistent=False)
        # the real entries of a flattened (B, G, K) tensor and their positions in the row: scatter needs no mask
        flat_real = [i for i, r in enumerate(real) if r]
        self.register_buffer("flat_real", torch.tensor(flat_real, dtype=torch.long), persistent=False)
        columns = [g.start + j for g in groups for j in range(g.width)]
        self.register_buffer("columns", torch.tensor(columns, dtype=torch.long), persistent=False)

    def predicted(self, out: torch.Tensor) -> torch.Tensor:
        """(B, G, K) log-probabilities of x_0 from the network's (B, D) output: a softmax per group."""
        return (out[:, self.index] + self.pad).log_softmax(-1)

    def log_probs(self, rows: torch.Tensor) -> torch.Tensor:
        """(B, G, K) log one-hots of the rows' groups."""
        return log_one_hot(rows[:, self.index]) + self.pad

    def scatter(self, rows: torch.Tensor, one_hots: torch.Tensor) -> None:
        """Write (B, G, K) one-hots into the rows' groups, in place."""
        rows[:, self.columns] = one_hots.flatten(1)[:, self.flat_real]


class TableDiffusion(Family):
    name = "diffusion"
    Config = TableDiffusionConfig
    accepts = ("table",)
    capabilities = declare(sample=TableDiffusionSampling)
    exports = ("onnx",)
    train_defaults = {
        "lr": 2e-3,  # TabDDPM's tuned runs: about 1e-3 to 2e-3, AdamW
        "weight_decay": 1e-4,
        "batch_size": 256,
        "warmup_steps": 0,
        "grad_clip": 0.0,  # TabDDPM clips nothing; the multinomial term is T x a KL, its gradient large by design
        "ema_decay": 0.999,
    }

    def __init__(self, config: TableDiffusionConfig, spec: DataSpec):
        super().__init__(config, spec)
        check_config(config)
        self.spans = spans_of(spec)
        width = spec.shape[0]
        self.net = TimestepMLP(width, config.hidden, width, config.time_dim)
        self.groups = OneHotGroups(self.spans)
        continuous = [i for span in self.spans if span.activation == "tanh" for i in range(span.start, span.stop)]
        self.register_buffer("continuous", torch.tensor(continuous, dtype=torch.long), persistent=False)
        abar = make_alphas_cumprod(config.schedule, config.timesteps)
        # derived from the config, so not saved with the weights; float32 because MPS has no float64
        self.register_buffer("alphas_cumprod", abar.float(), persistent=False)
        # log abar from step -1 (the data: abar 1) on, so log_abar[t + 1] is step t's and log_abar[t] the one before
        self.register_buffer("log_abar", torch.cat([abar.new_zeros(1), abar.log()]).float(), persistent=False)

    # ---- training ---------------------------------------------------------------------------------
    def noised(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """Rows x_t ~ q(x_t | x_0) at timesteps ``t`` (B,): continuous entries from ``noise`` (B, continuous
        entries), each group's category drawn with the uniforms ``u`` (B, G, K)."""
        x_t = x0.clone()
        abar = self.alphas_cumprod[t][:, None]
        x_t[:, self.continuous] = abar.sqrt() * x0[:, self.continuous] + (1 - abar).sqrt() * noise
        groups = self.groups
        log_q = q_marginal(groups.log_probs(x0), self.log_abar[t + 1].view(-1, 1, 1), groups.log_uniform)
        groups.scatter(x_t, draw_one_hot(log_q, u))
        return x_t

    def multinomial_loss(self, out: torch.Tensor, x0: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """(B,): T x KL(q(x_{t-1} | x_t, x_0) || p(x_{t-1} | x_t)) summed over groups, over their number."""
        groups = self.groups
        if not groups.count:
            return torch.zeros(x0.shape[0], device=x0.device)
        log_abar_s, log_abar_t = self.log_abar[t].view(-1, 1, 1), self.log_abar[t + 1].view(-1, 1, 1)
        log_x_t = groups.log_probs(x_t)
        true = q_posterior(groups.log_probs(x0), log_x_t, groups.log_uniform, log_abar_s, log_abar_t)
        model = q_posterior(groups.predicted(out), log_x_t, groups.log_uniform, log_abar_s, log_abar_t)
        return self.config.timesteps * categorical_kl(true, model).sum(-1) / groups.count

    def training_step(self, batch: dict[str, torch.Tensor]) -> Iterator[Phase]:
        x0 = batch["x"].float()
        b, device = x0.shape[0], x0.device
        t = draws.randint(0, self.config.timesteps, b, device=device)
        noise = draws.randn(b, self.continuous.numel(), device=device)
        u = draws.rand(b, *self.groups.index.shape, device=device)
        x_t = self.noised(x0, t, noise, u)
        out = self.net(x_t, t).float()
        gaussian = torch.zeros(b, device=device)
        if self.continuous.numel():
            gaussian = (out[:, self.continuous] - noise).pow(2).mean(dim=1)
        multinomial = self.multinomial_loss(out, x0, x_t, t)
        loss = (gaussian + multinomial).mean()
        yield "main", loss, {"gaussian": gaussian.mean().detach(), "multinomial": multinomial.mean().detach()}

    # ---- sampling ---------------------------------------------------------------------------------
    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None, where: list[Condition] | None = None,
               steps: int | None = None, **conditions: Any) -> torch.Tensor:
        """``n`` encoded rows (n, D) from ``steps`` reverse steps (default: ``model.sample_steps``, at most the
        timesteps); ``where``: only rows holding every condition's category."""
        self.reject_conditions(self.name, conditions)
        steps = self.steps_for(steps)
        with eval_mode(self):
            if not where:
                return self.draw(n, generator, steps)
            return draw_matching(lambda k: self.draw(k, generator, steps), n, self.spans, where)

    def setting_ranges(self) -> dict[str, Range]:
        return {"steps": Range(1, self.config.timesteps, hint="the model's timesteps")}

    def steps_for(self, steps: int | None) -> int:
        """The reverse steps to take: ``steps`` when given (1 to timesteps), else the run's default, which a
        shorter chain caps at its timesteps (model.timesteps=20 alone walks all 20)."""
        self.settings("sample", {"steps": steps})  # an integer >= 1
        timesteps = self.config.timesteps
        if steps is None:
            return min(self.config.sample_steps or timesteps, timesteps)
        check_steps(steps, timesteps)
        return steps

    def sampling_nets(self) -> list:
        """The denoiser MLP as ``draw`` calls it: a noised row and its timestep -> eps and x_0's logits."""
        from genforge.families.sampling_nets import EXAMPLE_BATCH, sampling_net, span_layout

        width, steps = self.spec.shape[0], self.steps_for(None)
        sigmas = sampling_sigmas(self.alphas_cumprod, steps)
        facts = {"spans": span_layout(self.spans), "timesteps": self.config.timesteps, "steps": steps,
                 "alphas_cumprod": self.alphas_cumprod.tolist(), "sampling_sigmas": sigmas.tolist(),
                 "sampling_timesteps": sigma_to_timestep(sigmas[:-1], self.alphas_cumprod).round().long().tolist()}
        return [sampling_net(
            "denoiser", self.net, self,
            {"rows": torch.zeros(EXAMPLE_BATCH, width, device=self.device),
             "t": torch.arange(EXAMPLE_BATCH, device=self.device) * (self.config.timesteps - 1)}, ["out"],
            f"rows (B, {width}) float32 noised rows at timesteps t (B,) int64 in [0, {self.config.timesteps}): "
            f"continuous entries sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps, one-hot groups the categories drawn so "
            f"far -> out (B, {width}) float32: the noise eps on continuous entries, the logits of x_0's category on "
            f"each group. genforge walks sampling_timesteps from uniform groups and N(0, I) noise: a DDPM step on "
            f"the continuous entries, a draw from the multinomial posterior q(x_s | x_t, softmax(logits)) per group "
            f"(Hoogeboom et al. 2021; table_diffusion.py).", facts=facts)]

    def draw(self, n: int, generator: torch.Generator | None, steps: int) -> torch.Tensor:
        """``n`` rows from the reverse chain in ``steps`` steps, every draw from ``generator``."""
        device, cont, groups = self.device, self.continuous, self.groups
        # the noise levels of the image family's samplers (trailing spacing, float64, ending in 0) and their steps
        sigmas = sampling_sigmas(self.alphas_cumprod, steps)
        timesteps = sigma_to_timestep(sigmas[:-1], self.alphas_cumprod).round().long().tolist()
        # continuous entries in the samplers' variance-exploding coordinates: x = x_0 + sigma eps
        x = torch.randn(n, cont.numel(), generator=generator, device=device) * math.sqrt(1 + float(sigmas[0]) ** 2)
        rows = torch.zeros(n, self.spec.shape[0], device=device)  # the network's input, each group uniform at first
        u = torch.rand(n, *groups.index.shape, generator=generator, device=device)
        groups.scatter(rows, draw_one_hot(groups.log_uniform, u))
        for i, t in enumerate(timesteps):
            s = timesteps[i + 1] if i + 1 < len(timesteps) else -1
            sigma = float(sigmas[i])
            rows[:, cont] = x / math.sqrt(1 + sigma**2)  # the variance-preserving x_t the network was trained on
            out = self.net(rows, torch.full((n,), t, device=device)).float()
            x0 = (x - sigma * out[:, cont]).clamp(-1, 1)
            # one ancestral DDPM step to level s: the network already ran on the whole row, so its denoiser is x0
            x = solvers.sample_ddpm(lambda *_: x0, x, sigmas[i:i + 2], generator)
            log_p = q_posterior(groups.predicted(out), groups.log_probs(rows), groups.log_uniform,
                                self.log_abar[s + 1], self.log_abar[t + 1])
            groups.scatter(rows, draw_one_hot(log_p, torch.rand(log_p.shape, generator=generator, device=device)))
            progress.tick(i + 1, len(timesteps))
        rows[:, cont] = x.clamp(-1, 1)
        return rows
