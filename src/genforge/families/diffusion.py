"""Denoising diffusion (Ho et al. 2020): a UNet learns to undo noise added to images, and a sampler
walks from pure noise back to an image in a few dozen steps.

Training: pick a timestep t, noise the batch to x_t = sqrt(abar_t) x + sqrt(1 - abar_t) eps and regress
the network's target, one of (config.prediction):
  eps  the noise (DDPM),
  v    sqrt(abar) eps - sqrt(1 - abar) x (Salimans & Ho 2022; well-scaled at every noise level),
  x0   the clean image,
  edm  EDM's preconditioned output F (Karras et al. 2022): x0 = c_skip(sigma) x + c_out(sigma) F in the
       variance-exploding view below, with c_skip = s^2 / (sigma^2 + s^2), c_out = sigma s / sqrt(sigma^2 + s^2)
       for the data's scale s = sigma_data, so F's target has unit variance at every noise level,
with uniform weights or min-SNR-gamma weights (Hang et al. 2023), which stop the easy low-noise steps
from dominating the loss. Noise levels are drawn (config.noise_sampling) uniformly over the T training
timesteps (DDPM), or EDM's way: log sigma ~ N(noise_mean, noise_std^2), which spends training on the middle
levels that decide an image rather than on the near-pure noise where the linear schedule puts half its
timesteps; the network then sees the level's float timestep (sigma_to_timestep), as samplers give it. Class-conditional runs (data with labels) add a label embedding to the
timestep embedding and replace the label by a "null" class with probability label_dropout, so one
network is both the conditional and the unconditional model: classifier-free guidance (Ho & Salimans
2022) mixes the two at sampling time.

Sampling runs in the variance-exploding view of k-diffusion and Karras et al. 2022: x = x0 + sigma *
eps with sigma = sqrt((1 - abar) / abar). ``denoiser`` turns the network into D(x, sigma), an estimate
of the clean image, and the solvers in genforge.sampling.diffusion (DDPM, DDIM, Euler, Heun,
DPM-Solver++(2M)) only see D. Inpainting (RePaint-style resampling, Lugmayr et al. 2022) and img2img
(SDEdit, Meng et al. 2022) reuse the same solvers on part of the noise-level ladder.
The schedule lives in genforge.sampling.schedules, the network in genforge.nets.unet; this file wires
them up.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import nn

from genforge import draws, progress
from genforge.data.spec import DataSpec
from genforge.config import Range, check_choices, check_ranges
from genforge.errors import ConfigError
from genforge.families.capabilities import DiffusionSampling, Img2Img, Inpaint, Likelihood, declare
from genforge.families.base import Family, Phase, eval_mode
from genforge.nets.conv import resolve_labels
from genforge.nets.unet import UNet
from genforge.sampling import diffusion as solvers
from genforge.sampling.schedules import (
    SPACINGS,
    check_steps,
    make_alphas_cumprod,
    sampling_sigmas,
    sigma_to_timestep,
)

PREDICTIONS = ("eps", "v", "x0", "edm")
NOISE_SAMPLINGS = ("uniform", "lognormal")
LOSS_WEIGHTINGS = ("uniform", "min_snr")
Denoiser = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass
class DiffusionConfig:
    # UNet size; the defaults suit 28x28 MNIST trained for a few minutes on a laptop CPU
    base_channels: int = 16
    channel_mults: list[int] = field(default_factory=lambda: [1, 2, 2])
    blocks_per_level: int = 1
    attention_resolutions: list[int] = field(default_factory=lambda: [7])
    dropout: float = 0.0
    # GroupNorm groups: 0 each width its own count (runs made before the option), -1 one count for the whole net
    # (the narrowest width's), N > 0 N groups everywhere. diffusers' UNet2DModel takes one count, so only a
    # run with one count exports to diffusers (genforge export --format hf).
    norm_groups: int = 0
    # noise schedule
    timesteps: int = 1000
    schedule: str = "linear"  # linear | cosine
    beta_start: float = 1e-4  # linear schedule only, for 1000 timesteps (rescaled for other counts)
    beta_end: float = 0.02
    # what the network predicts and how the loss weighs noise levels
    prediction: str = "eps"  # eps | v | x0 | edm
    sigma_data: float = 0.5  # edm only: the data's standard deviation in EDM's preconditioning
    loss_weighting: str = "uniform"  # uniform | min_snr
    min_snr_gamma: float = 5.0
    # how training draws noise levels: uniform over the timesteps, or EDM's log-normal in sigma
    noise_sampling: str = "uniform"  # uniform | lognormal
    noise_mean: float = -1.2  # lognormal only: mean of log sigma
    noise_std: float = 1.2  # lognormal only: standard deviation of log sigma
    # class conditioning (only when the data has labels); runs made before it existed have it off
    class_conditional: bool = False
    label_dropout: float = 0.1  # share of training labels replaced by the null class (for guidance)
    # sampling defaults, each overridable per call. eta (ddim only) = 1 adds fresh noise each step, which
    # hides much of a briefly trained model's error: after a few CPU minutes on MNIST, eta=0 gives
    # speckled, blotchy digits where eta=1 gives clean strokes. Well-trained models can use eta=0.
    sampler: str = "ddim"  # ddpm | ddim | euler | heun | dpmpp_2m
    spacing: str = "trailing"  # trailing | uniform | karras
    sample_steps: int = 50
    eta: float = 1.0
    guidance: float = 1.0  # classifier-free guidance scale: 0 unconditional, 1 conditional, > 1 stronger
    resample: int = 2  # inpainting: passes over each step (RePaint's resampling; 1 = none)
    likelihood_steps: int = 32  # log_likelihood: timesteps per image in the variational bound's estimate


class Diffusion(Family):
    name = "diffusion"
    Config = DiffusionConfig
    accepts = ("image",)
    checkpointed_nets = ("unet",)
    train_defaults: ClassVar[dict[str, Any]] = {"lr": 2e-3, "batch_size": 16, "ema_decay": 0.995, "warmup_steps": 100}
    capabilities = declare(sample=DiffusionSampling, img2img=Img2Img, inpaint=Inpaint, likelihood=Likelihood)
    exports = ("hf", "onnx")
    # New runs condition on labels when the data has them and train EDM's way (older runs keep the dataclass
    # defaults): at 700 steps on mnist, FD 15.7 against 19.1 for DDPM's eps and uniform timesteps, and 10
    # DPM-Solver++ steps at 18.4 against 50.2 (benchmarks/diffusion_recipe.py)
    model_defaults: ClassVar[dict[str, Any]] = {"class_conditional": True, "prediction": "edm",
                                                "noise_sampling": "lognormal"}

    def __init__(self, config: DiffusionConfig, spec: DataSpec):
        super().__init__(config, spec)
        check_config(config)
        self.build_backbone(config, spec)
        self.num_classes = spec.num_classes if config.class_conditional and spec.num_classes else None
        if self.num_classes:
            # one extra row: the "null" label of the unconditional model
            self.label_embedding = nn.Embedding(self.num_classes + 1, self.backbone.emb_dim)
            nn.init.normal_(self.label_embedding.weight, std=0.02)
        abar = make_alphas_cumprod(config.schedule, config.timesteps, config.beta_start, config.beta_end)
        check_steps(config.sample_steps, config.timesteps)  # a bad sample_steps fails now, not at sampling
        # derived from the config, so not saved with the weights; float32 because MPS has no float64
        self.register_buffer("alphas_cumprod", abar.float(), persistent=False)

    def build_backbone(self, config: DiffusionConfig, spec: DataSpec) -> None:
        """The denoising network, as ``self.unet``: the image UNet (a variant for other data builds its own)."""
        c, h, w = spec.shape
        self.unet = UNet(
            in_channels=c,
            image_size=(h, w),
            base_channels=config.base_channels,
            channel_mults=tuple(config.channel_mults),
            blocks_per_level=config.blocks_per_level,
            attention_resolutions=tuple(config.attention_resolutions),
            dropout=config.dropout,
            norm_groups=config.norm_groups,
        )

    @property
    def backbone(self) -> nn.Module:
        """The network ``net`` runs: (x_t, t, cond) -> a tensor shaped like x_t, with ``emb_dim`` for labels."""
        return self.unet

    def setting_ranges(self) -> dict[str, Range]:
        return {"steps": Range(1, self.config.timesteps, hint="the model's timesteps")}

    # ---- the network and its parametrisation --------------------------------------------------
    def net(self, x_t: torch.Tensor, t: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        """The raw network output (eps, v or x0, per config.prediction) for VP inputs x_t at timesteps t."""
        if x_t.is_cuda and x_t.dim() == 4:  # cuDNN convolutions are faster in NHWC, and the layout propagates
            x_t = x_t.contiguous(memory_format=torch.channels_last)
        cond = self.label_embedding(labels) if labels is not None else None
        return self.backbone(x_t, t, cond)

    @property
    def null_label(self) -> int:
        return self.num_classes or 0

    def training_step(self, batch: dict[str, torch.Tensor]) -> Iterator[Phase]:
        x0 = batch["x"]
        t, abar = self.training_levels(x0.shape[0], x0.device)
        noise = draws.randn_like(x0)
        abar = per_item(abar, x0)
        x_t = abar.sqrt() * x0 + (1 - abar).sqrt() * noise
        labels = None
        if self.num_classes:
            if "y" not in batch:
                raise ConfigError("this diffusion model is class-conditional but the batch has no labels 'y'")
            drop = draws.rand(x0.shape[0], device=x0.device) < self.config.label_dropout
            labels = torch.where(drop, torch.full_like(batch["y"], self.null_label), batch["y"])
        out = self.net(x_t, t, labels).float()
        target = prediction_target(self.config.prediction, x0.float(), noise.float(), abar, self.config.sigma_data)
        per_image = (out - target).pow(2).flatten(1).mean(dim=1)
        weights = loss_weights(self.config, abar.flatten() / (1 - abar.flatten()))
        yield "main", (weights * per_image).mean(), {}

    def training_levels(self, n: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """(timesteps, abar) for ``n`` training images: integer steps drawn uniformly, or (lognormal) sigma
        drawn log-normally, kept inside the schedule's range, as float timesteps and abar = 1 / (1 + sigma^2)."""
        table = self.alphas_cumprod
        if self.config.noise_sampling == "uniform":
            t = draws.randint(0, self.config.timesteps, n, device=device)
            return t, table[t]
        log_sigma = self.config.noise_mean + self.config.noise_std * draws.randn(n, device=device)
        lo, hi = table[0], table[-1]  # the least and the most noise the schedule has
        log_sigma = log_sigma.clamp(0.5 * torch.log((1 - lo) / lo), 0.5 * torch.log((1 - hi) / hi))
        sigma = log_sigma.exp()
        return sigma_to_timestep(sigma, table), 1 / (1 + sigma**2)

    def denoiser(self, labels: torch.Tensor | None = None, guidance: float = 1.0) -> Denoiser:
        """D(x, sigma): the clean image the network sees in x = x0 + sigma * eps, clipped to [-1, 1].

        ``labels`` (B,) condition a class-conditional model (None: the unconditional model); with
        ``guidance`` w the estimate is D_uncond + w (D_cond - D_uncond), both halves in one batch.
        """
        abar_table = self.alphas_cumprod
        null = None if labels is None else torch.full_like(labels, self.null_label)

        def both_halves(x_t: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            return self.net(torch.cat([x_t, x_t]), torch.cat([t, t]), torch.cat([labels, null])).float().chunk(2)

        mix = solvers.guided(both_halves, guidance)  # mixing raw outputs = mixing x0 estimates (to_x0 is affine)

        def denoise(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
            sigma = sigma.to(device=x.device, dtype=torch.float32).expand(x.shape[0])
            t = sigma_to_timestep(sigma, abar_table)
            abar = per_item(1 / (1 + sigma**2), x)
            x_t = x.float() * abar.sqrt()  # the VP input the network was trained on
            if labels is None or guidance in (0, 1):  # one half is enough
                out = self.net(x_t, t, self._null_for(x) if labels is None or guidance == 0 else labels)
            else:
                out = mix(x_t, t)
            return to_x0(self.config.prediction, out.float(), x_t, abar, self.config.sigma_data).clamp(-1, 1)

        return denoise

    def _null_for(self, x: torch.Tensor) -> torch.Tensor | None:
        if not self.num_classes:
            return None
        return torch.full((x.shape[0],), self.null_label, dtype=torch.long, device=x.device)

    def sampling_nets(self) -> list:
        """The denoiser D(x, sigma[, label]) exactly as ``denoiser`` computes it for one batch (without guidance,
        which mixes two calls), in traceable form: the timestep of sigma by ``grid_timestep``."""
        from genforge.families.sampling_nets import (EXAMPLE_BATCH, example_labels, grid_timestep, log_sigma_grid,
                                                     sampling_net)
        from genforge.sampling.schedules import sigmas_from_alphas_cumprod

        config, shape = self.config, self.spec.shape
        log_grid = log_sigma_grid(self.alphas_cumprod).to(self.device)

        def denoise(x: torch.Tensor, sigma: torch.Tensor, labels: torch.Tensor | None = None):
            abar = per_item(1 / (1 + sigma.float() ** 2), x)
            x_t = x.float() * abar.sqrt()  # the VP input the network was trained on
            out = self.net(x_t, grid_timestep(sigma.float(), log_grid), labels).float()
            x0 = to_x0(config.prediction, out, x_t, abar, config.sigma_data)
            return x0.clamp(-1, 1), x0

        inputs = {"x": torch.randn(EXAMPLE_BATCH, *shape, device=self.device),
                  "sigma": torch.tensor([0.5, 2.0], device=self.device)[:EXAMPLE_BATCH],
                  **example_labels(self.num_classes, self.device)}
        dims = ", ".join(map(str, shape))
        labels = ""
        if self.num_classes:
            labels = (f" labels (B,) int64: a class in [0, {self.num_classes}), or {self.null_label} for the "
                      f"unconditional model; classifier-free guidance w is the caller's mix of a labelled and an "
                      f"unconditional call, clip(u + w (c - u), -1, 1) of their unclipped outputs, which is genforge's "
                      f"guided estimate.")
        train_sigmas = sigmas_from_alphas_cumprod(self.alphas_cumprod.detach().cpu().double())  # as samplers take them
        facts = {"timesteps": config.timesteps, "training_sigmas": train_sigmas.tolist(),
                 "prediction": config.prediction, "sigma_data": config.sigma_data,
                 "sampler": config.sampler, "spacing": config.spacing, "steps": config.sample_steps, "eta": config.eta,
                 "guidance": config.guidance, "sampling_sigmas": self.sigmas().tolist()}
        if self.num_classes:
            facts["null_label"] = self.null_label
        return [sampling_net(
            "denoiser", denoise, self, inputs, ["denoised", "unclipped"],
            f"x (B, {dims}) float32 noisy items in the variance-exploding view x = x0 + sigma * eps and sigma (B,) "
            f"float32 noise levels >= 0 -> denoised (B, {dims}), the clean-item estimate clipped to [-1, 1], and "
            f"unclipped, the same before clipping; a solver (DDIM, Euler, DPM-Solver++) starts from "
            f"sqrt(1 + sampling_sigmas[0]^2) * N(0, I) and calls it at each level of sampling_sigmas but the final "
            f"0 (onnx.json)." + labels,
            facts=facts)]

    # ---- sampling -----------------------------------------------------------------------------
    def sigmas(self, steps: int | None = None, spacing: str | None = None) -> torch.Tensor:
        steps = self.config.sample_steps if steps is None else steps
        spacing = self.config.spacing if spacing is None else spacing
        return sampling_sigmas(self.alphas_cumprod, steps, spacing).to(self.device)

    def _settings(self, capability: str, **given: Any) -> tuple[str, float | None, float]:
        """Every option checked by the capability's settings dataclass (``capabilities.py``: names, kinds,
        ranges, choices); then (sampler, eta, guidance) with the run's defaults for those not given."""
        options = self.settings(capability, given)
        sampler = self.config.sampler if options.sampler is None else options.sampler
        eta = options.eta
        if eta is None and sampler == "ddim":
            eta = self.config.eta
        guidance = self.config.guidance if options.guidance is None else float(options.guidance)
        return sampler, (None if eta is None else float(eta)), guidance

    def _labels(self, n: int, label: Any, guidance: float, generator: torch.Generator | None) -> torch.Tensor | None:
        if label is not None and not self.num_classes:
            why = "the data has no labels" if not self.spec.num_classes else "it was trained without class_conditional"
            raise ConfigError(f"--label needs a class-conditional diffusion run; this one is not ({why})")
        if not self.num_classes or guidance == 0:
            return None
        return resolve_labels(label, n, self.num_classes, self.spec.class_names, generator, self.device)

    def _solve(self, x: torch.Tensor, sigmas: torch.Tensor, labels: torch.Tensor | None, sampler: str,
               eta: float | None, guidance: float, generator: torch.Generator | None) -> torch.Tensor:
        with eval_mode(self):
            out = solvers.sample(sampler, self.denoiser(labels, guidance), x, sigmas, eta=eta, generator=generator)
        return out.clamp(-1, 1).contiguous()

    def _noise(self, n: int, sigma: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        # the VP prior N(0, I) seen in VE coordinates at the top noise level
        x = torch.randn((n, *self.spec.shape), generator=generator, device=self.device)
        return x * float((1 + sigma.double() ** 2).sqrt())

    @torch.no_grad()
    def sample(
        self,
        n: int,
        generator: torch.Generator | None = None,
        steps: int | None = None,
        eta: float | None = None,
        label: Any = None,
        sampler: str | None = None,
        spacing: str | None = None,
        guidance: float | None = None,
        **conditions: Any,
    ) -> torch.Tensor:
        """``n`` images in [-1, 1] from ``steps`` steps of ``sampler``; the generator alone decides them.

        Class-conditional runs: ``label`` (an id, a class name, or n of them; None draws classes
        uniformly) and ``guidance`` (0 unconditional, 1 conditional, > 1 classifier-free guidance).
        """
        self.reject_conditions(self.name, conditions)
        sampler, eta, guidance = self._settings("sample", steps=steps, eta=eta, label=label, sampler=sampler,
                                                spacing=spacing, guidance=guidance)
        sigmas = self.sigmas(steps, spacing)
        x = self._noise(n, sigmas[0], generator)  # noise first: the same seed gives the same noise for any label
        labels = self._labels(n, label, guidance, generator)
        return self._solve(x, sigmas, labels, sampler, eta, guidance, generator)

    # ---- refinement ---------------------------------------------------------------------------
    @torch.no_grad()
    def img2img(
        self,
        image: torch.Tensor,
        strength: float,
        generator: torch.Generator | None = None,
        steps: int | None = None,
        label: Any = None,
        sampler: str | None = None,
        eta: float | None = None,
        spacing: str | None = None,
        guidance: float | None = None,
    ) -> torch.Tensor:
        """SDEdit: noise ``image`` (B, C, H, W) in [-1, 1] to a level set by ``strength`` and denoise it.

        Strength 0 returns the input; 1 starts from pure noise and equals ``sample`` with the same
        generator; in between, the last round(strength * steps) steps of the ladder are run.
        """
        image = self._check_images(image)
        sampler, eta, guidance = self._settings("img2img", strength=strength, steps=steps, eta=eta, label=label,
                                                sampler=sampler, spacing=spacing, guidance=guidance)
        sigmas = self.sigmas(steps, spacing)
        steps = len(sigmas) - 1
        run = round(float(strength) * steps)
        if run == 0:
            return image.clone()
        n = image.shape[0]
        if run == steps:
            x = self._noise(n, sigmas[0], generator)
        else:
            sigmas = sigmas[steps - run:]
            noise = torch.randn(image.shape, generator=generator, device=self.device)
            x = image + float(sigmas[0]) * noise
        labels = self._labels(n, label, guidance, generator)
        return self._solve(x, sigmas, labels, sampler, eta, guidance, generator)

    @torch.no_grad()
    def inpaint(
        self,
        image: torch.Tensor,
        mask: torch.Tensor,
        generator: torch.Generator | None = None,
        steps: int | None = None,
        label: Any = None,
        sampler: str | None = None,
        eta: float | None = None,
        spacing: str | None = None,
        guidance: float | None = None,
        resample: int | None = None,
    ) -> torch.Tensor:
        """Fill the pixels where ``mask`` is 1 (B or 1, 1, H, W) and keep ``image`` (B, C, H, W) elsewhere.

        Each step first replaces the known pixels by the input noised to the step's level, then takes one
        solver step; with ``resample`` r > 1 the step is undone by fresh noise and taken again r times,
        so the generated region agrees with the known one (RePaint). Known pixels are returned exactly.
        """
        image = self._check_images(image)
        if (mask.dim() != image.dim() or mask.shape[1] != 1 or mask.shape[2:] != image.shape[2:]
                or mask.shape[0] not in (1, image.shape[0])):
            dims = ", ".join(map(str, image.shape[2:]))
            raise ConfigError(f"mask must be shaped (1, 1, {dims}) or (B, 1, {dims}) for items {tuple(image.shape)}, "
                              f"got {tuple(mask.shape)}")
        mask = (mask.to(self.device) > 0.5).float()
        sampler, eta, guidance = self._settings("inpaint", steps=steps, eta=eta, label=label, sampler=sampler,
                                                spacing=spacing, guidance=guidance, resample=resample)
        resample = self.config.resample if resample is None else resample
        sigmas = self.sigmas(steps, spacing)
        n = image.shape[0]
        x = self._noise(n, sigmas[0], generator)
        labels = self._labels(n, label, guidance, generator)
        with eval_mode(self), progress.summed(resample * solvers.denoiser_calls(sampler, len(sigmas) - 1)):
            denoise = self.denoiser(labels, guidance)
            for i in range(len(sigmas) - 1):
                hi, lo = sigmas[i], sigmas[i + 1]
                for r in range(resample):
                    noise = torch.randn(image.shape, generator=generator, device=self.device)
                    known = image + float(hi) * noise  # the input at this step's noise level
                    x = mask * x + (1 - mask) * known
                    x = solvers.sample(sampler, denoise, x, sigmas[i:i + 2], eta=eta, generator=generator)
                    if r + 1 < resample and lo > 0:  # back up to this step's noise level, then take it again
                        fresh = torch.randn(x.shape, generator=generator, device=self.device)
                        x = x + float((hi.double() ** 2 - lo.double() ** 2).sqrt()) * fresh
        return (mask * x.clamp(-1, 1) + (1 - mask) * image).contiguous()

    def _check_images(self, image: torch.Tensor) -> torch.Tensor:
        return self.check_images(image).to(self.device, torch.float32)

    # ---- likelihood ---------------------------------------------------------------------------
    @torch.no_grad()
    def log_likelihood(self, batch: dict[str, torch.Tensor], generator: torch.Generator | None = None,
                       samples: int | None = None) -> torch.Tensor:
        """Per-image negative variational bound in nats (B,): an upper bound on -log p(x) of the 8-bit image.

        The bound of Ho et al. 2020 for the model's T-step chain with the posterior variance:
        KL to the prior at the last step (exact), plus the sum of T-1 Gaussian KL terms, estimated
        without bias from ``samples`` stratified timesteps per image (default ``likelihood_steps``), plus the decoder's discretised
        Gaussian likelihood of the 256 pixel levels (exact). Labels "y" in the batch condition a
        class-conditional model (a bound on -log p(x | y)); without them its unconditional half is used.
        """
        x = self._check_images(batch["x"])
        self.settings("likelihood", {"samples": samples})
        steps = self.config.likelihood_steps if samples is None else samples
        T = self.config.timesteps
        labels = None
        if self.num_classes:
            y = batch.get("y")
            labels = y.to(self.device) if y is not None else self._null_for(x)
        # the network runs on the model's device; the bound's arithmetic runs in float64 on the CPU
        # (1 - abar is tiny at t = 0, and MPS has no float64)
        abar = self.alphas_cumprod.cpu().double()
        x64 = x.cpu().double()
        b = x.shape[0]
        with eval_mode(self):
            # prior term: KL(q(x_T | x) || N(0, I)), per image
            a_T = abar[-1]
            prior = 0.5 * (a_T * x64**2 + (1 - a_T) - 1 - torch.log1p(-a_T)).flatten(1).sum(1)
            # decoder term at t = 0: -log of the discretised N(x0_hat, beta_0) over the 256 levels
            x0_hat = self._x0_at(x, torch.zeros(b, dtype=torch.long, device=self.device), labels, generator)
            decoder = discretised_gaussian_nll(x64, x0_hat.cpu().double(), 0.5 * torch.log(1 - abar[0]))
            decoder = decoder.flatten(1).sum(1)
            # the T-1 middle terms, one stratified timestep per stratum of 1..T-1
            strata = min(steps, T - 1)
            edges = torch.linspace(1, T, strata + 1, dtype=torch.float64)
            middle = torch.zeros(b, dtype=torch.float64)
            for k in range(strata):
                u = torch.rand(b, generator=generator, device=self.device).cpu().double()
                t = (edges[k] + u * (edges[k + 1] - edges[k])).floor().long().clamp(1, T - 1)
                middle += float(edges[k + 1] - edges[k]) * self._kl_term(x, t.to(self.device), labels, generator)
        return prior + middle + decoder

    def _x0_at(self, x: torch.Tensor, t: torch.Tensor, labels, generator) -> torch.Tensor:
        abar = per_item(self.alphas_cumprod[t], x)
        noise = torch.randn(x.shape, generator=generator, device=self.device)
        x_t = abar.sqrt() * x + (1 - abar).sqrt() * noise
        out = self.net(x_t, t, labels).float()
        return to_x0(self.config.prediction, out, x_t, abar, self.config.sigma_data).clamp(-1, 1)

    def _kl_term(self, x: torch.Tensor, t: torch.Tensor, labels, generator) -> torch.Tensor:
        """KL(q(x_{t-1} | x_t, x) || p(x_{t-1} | x_t)) per image (float64, CPU). Both have the variance
        beta~_t, so only the means differ, and both means are the same affine function of the clean image
        (the true one vs the predicted one)."""
        x0_hat = self._x0_at(x, t, labels, generator)
        sq = (x - x0_hat).double().pow(2).flatten(1).sum(1).cpu()
        abar = self.alphas_cumprod.cpu().double()
        t = t.cpu()
        a_t, a_prev = abar[t], abar[t - 1]
        beta = 1 - a_t / a_prev
        posterior_var = (1 - a_prev) / (1 - a_t) * beta
        coef = a_prev.sqrt() * beta / (1 - a_t)
        return 0.5 * coef**2 * sq / posterior_var


# ---- parametrisation maths (pure functions) ---------------------------------------------------
def per_item(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """(B,) per-item values shaped to broadcast over a batch ``like`` (B, ...): images or waveforms."""
    return values.view(-1, *([1] * (like.dim() - 1)))


def edm_scales(abar: torch.Tensor, sigma_data: float) -> tuple[torch.Tensor, torch.Tensor]:
    """EDM's (c_skip, c_out) at the noise level sigma = sqrt((1 - abar) / abar), for data of scale sigma_data."""
    sigma2 = (1 - abar) / abar
    total = sigma2 + sigma_data**2
    return sigma_data**2 / total, sigma2.sqrt() * sigma_data / total.sqrt()


def prediction_target(kind: str, x0: torch.Tensor, eps: torch.Tensor, abar: torch.Tensor,
                      sigma_data: float = 0.5) -> torch.Tensor:
    """What a network of the given prediction kind should output for x_t = sqrt(abar) x0 + sqrt(1-abar) eps."""
    if kind == "eps":
        return eps
    if kind == "x0":
        return x0
    if kind == "edm":  # F = (x0 - c_skip x) / c_out, with x = x0 + sigma eps the VE view of x_t
        c_skip, c_out = edm_scales(abar, sigma_data)
        x = x0 + ((1 - abar) / abar).sqrt() * eps
        return (x0 - c_skip * x) / c_out
    return abar.sqrt() * eps - (1 - abar).sqrt() * x0  # v


def to_x0(kind: str, out: torch.Tensor, x_t: torch.Tensor, abar: torch.Tensor, sigma_data: float = 0.5) -> torch.Tensor:
    """The clean-image estimate implied by a network output of the given kind at x_t."""
    if kind == "eps":
        return (x_t - (1 - abar).sqrt() * out) / abar.sqrt()
    if kind == "x0":
        return out
    if kind == "edm":
        c_skip, c_out = edm_scales(abar, sigma_data)
        return c_skip * x_t / abar.sqrt() + c_out * out
    return abar.sqrt() * x_t - (1 - abar).sqrt() * out  # v


def to_eps(kind: str, out: torch.Tensor, x_t: torch.Tensor, abar: torch.Tensor, sigma_data: float = 0.5) -> torch.Tensor:
    """The noise estimate implied by a network output of the given kind at x_t."""
    if kind == "eps":
        return out
    return (x_t - abar.sqrt() * to_x0(kind, out, x_t, abar, sigma_data)) / (1 - abar).sqrt()


def loss_weights(config: DiffusionConfig, snr: torch.Tensor) -> torch.Tensor:
    """Per-image loss weights from the signal-to-noise ratio abar / (1 - abar).

    min-SNR-gamma weighs every step as an x0 regression capped at gamma: min(snr, gamma) on the x0 error,
    which is min(snr, gamma) / snr on the eps error, min(snr, gamma) / (snr + 1) on the v error and
    min(snr, gamma) c_out^2 on EDM's F error. Uniform weights on F are EDM's own loss.
    """
    if config.loss_weighting == "uniform":
        return torch.ones_like(snr)
    capped = snr.clamp(max=config.min_snr_gamma)
    if config.prediction == "edm":
        return capped * edm_scales(snr / (1 + snr), config.sigma_data)[1] ** 2
    return {"eps": capped / snr, "v": capped / (snr + 1), "x0": capped}[config.prediction]


def discretised_gaussian_nll(x: torch.Tensor, mean: torch.Tensor, log_std: torch.Tensor) -> torch.Tensor:
    """-log P(x) per pixel for 8-bit values mapped to [-1, 1], under N(mean, std^2) integrated over each
    value's bin (width 2/255; the end bins reach to -inf and +inf, so the 256 probabilities sum to 1)."""
    half = 1.0 / 255.0
    inv_std = torch.exp(-log_std)
    normal = torch.distributions.Normal(torch.zeros((), dtype=x.dtype, device=x.device), 1.0)
    upper = torch.where(x > 1 - 1e-3, torch.ones_like(x), normal.cdf((x + half - mean) * inv_std))
    lower = torch.where(x < -1 + 1e-3, torch.zeros_like(x), normal.cdf((x - half - mean) * inv_std))
    return -torch.log((upper - lower).clamp(min=1e-12))


MODEL_CHOICES = {"prediction": PREDICTIONS, "loss_weighting": LOSS_WEIGHTINGS, "noise_sampling": NOISE_SAMPLINGS, "sampler": solvers.SAMPLERS,
                 "spacing": SPACINGS}
MODEL_RANGES = {"min_snr_gamma": Range(0, open_low=True), "sigma_data": Range(0, open_low=True),
                "noise_std": Range(0, open_low=True), "label_dropout": Range(0, 1, open_high=True),
                "eta": Range(0, 1), "guidance": Range(0), "resample": Range(1), "likelihood_steps": Range(1)}


def check_config(config: DiffusionConfig) -> None:
    check_choices(config, MODEL_CHOICES)
    check_ranges(config, MODEL_RANGES, "model")
