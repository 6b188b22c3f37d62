"""The VQ-VAE family: a convolutional autoencoder whose latent is a grid of discrete codes
(van den Oord et al. 2017).

The encoder halves the image ``downsample`` times with stride-2 4x4 convolutions, refines the map with
residual blocks (ReLU, 3x3 conv, ReLU, 1x1 conv, added back) and projects it to ``code_dim`` channels:
one vector per cell of an h x w grid (28 x 28 -> 7 x 7 with the default two halvings). Each vector is
replaced by its nearest codebook entry (``genforge.nets.quantize``: EMA codebook, commitment loss,
restarts of dead codes), and the decoder mirrors the encoder back to the image. Images whose sides are
not multiples of 2**downsample are zero-padded on the way in and centre-cropped on the way out.

Loss per batch: recon + commitment * ||z - sg(q)||^2, both means over elements. ``recon_loss``:
  - "mse" (default): squared error on pixels in [-1, 1]; the decoder's output is the image (clamped to
    [-1, 1] when decoding). A Gaussian likelihood with fixed variance, as in the paper; suits any data.
  - "bernoulli": binary cross-entropy on (x + 1) / 2, the image is the decoder's mean 2 sigmoid(out) - 1,
    tempered by ``decoder_temperature`` T to 2 sigmoid(out / T) - 1 (``nets.bernoulli``); sharper strokes
    on digit-like, nearly binary data.
Logs: "recon", "commitment", and the codebook's health: "perplexity" (exp of the entropy of the batch's
code usage), "usage" (share of codes used in the batch) and "dead_restarts".

A VQ-VAE has no prior of its own. Its codes are meant for a second model: ``encode_codes`` turns images
into (B, h, w) code grids for genforge's transformer, and ``decode_codes`` turns its sampled grids back
into images. ``sample`` therefore only draws every code uniformly at random and decodes that: a look at
what the codebook's entries draw, not samples of the data.

There is no class conditioning: labels are ignored in training, and ``sample`` rejects them.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from genforge.data.spec import DataSpec
from genforge.config import Range, check_ranges
from genforge.errors import ConfigError
from genforge.families.capabilities import Plain, declare
from genforge.families.base import Family, OptimizerGroup, Phase, eval_mode
from genforge.nets.bernoulli import bernoulli_image
from genforge.nets.conv import center_crop, check_image_shape, decay_split
from genforge.nets.quantize import VectorQuantizer

RECON_LOSSES = ("mse", "bernoulli")
MODEL_RANGES = {"decoder_temperature": Range(0, hint="1 is the mean image, 0 the mode")}
# New runs show the Bernoulli decoder's mean at T = 0.6. On mnist (the README's two-stage recipe, 2 CPU
# minutes, n = 1,000 against the training digits, FD in the classifier's / a random network's features)
# reconstructions of held-out digits score 4.93 / 33.7 at T = 1, 1.38 / 6.6 at 0.7 and 1.18 / 9.7 at 0.6;
# the prior's samples 6.05 / 36.3 at 0.7, 5.14 / 37.7 at 0.6 and 4.79 / 46.5 at 0.5.
DECODER_TEMPERATURE_DEFAULT = 0.6


@dataclass
class VQVAEConfig:
    # sized for 28x28 MNIST trained a few minutes on 2 CPU cores (see train_defaults)
    width: int = 64  # channels of every conv layer between the image and the code grid
    num_codes: int = 256  # codebook size: the vocabulary a transformer prior sees
    code_dim: int = 32  # length of each code vector
    downsample: int = 2  # halvings from image to code grid: 28x28 -> 7x7, 32x32 -> 8x8, 64x64 -> 16x16
    res_blocks: int = 2  # residual blocks at the grid resolution, in the encoder and again in the decoder
    commitment: float = 0.25  # beta, the weight of ||z - sg(q)||^2
    decay: float = 0.99  # EMA decay of the codebook
    restart_threshold: float = 1.0  # restart codes assigned fewer vectors per batch than this (EMA); 0: never
    recon_loss: str = "mse"  # "mse" on [-1, 1] or "bernoulli" (BCE on (x+1)/2)
    # bernoulli only: images shown are 2 sigmoid(logit / T) - 1; 1 is the plain mean (runs made before the
    # option), 0 the mode. Training never sees it. New runs get VQVAE.model_defaults.
    decoder_temperature: float = 1.0


class ResidualBlock(nn.Module):
    """x + 1x1(ReLU(3x3(ReLU(x)))): the paper's block, with a bottleneck of half the channels."""

    def __init__(self, channels: int):
        super().__init__()
        hidden = max(1, channels // 2)
        self.body = nn.Sequential(
            nn.ReLU(), nn.Conv2d(channels, hidden, 3, padding=1),
            nn.ReLU(), nn.Conv2d(hidden, channels, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class Encoder(nn.Module):
    """Image (B, C, H, W), sides multiples of 2**downsample -> vectors (B, code_dim, H / 2**k, W / 2**k)."""

    def __init__(self, channels: int, width: int, code_dim: int, downsample: int, res_blocks: int):
        super().__init__()
        layers: list[nn.Module] = []
        in_ch = channels
        for _ in range(downsample):
            layers += [nn.Conv2d(in_ch, width, 4, 2, 1), nn.ReLU()]
            in_ch = width
        layers += [nn.Conv2d(width, width, 3, padding=1)]
        layers += [ResidualBlock(width) for _ in range(res_blocks)]
        layers += [nn.ReLU(), nn.Conv2d(width, code_dim, 1)]
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class Decoder(nn.Module):
    """Vectors (B, code_dim, h, w) -> image-shaped output (B, C, h * 2**k, w * 2**k), before any activation."""

    def __init__(self, channels: int, width: int, code_dim: int, downsample: int, res_blocks: int):
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(code_dim, width, 3, padding=1)]
        layers += [ResidualBlock(width) for _ in range(res_blocks)]
        layers += [nn.ReLU()]
        for _ in range(downsample - 1):
            layers += [nn.ConvTranspose2d(width, width, 4, 2, 1), nn.ReLU()]
        layers += [nn.ConvTranspose2d(width, channels, 4, 2, 1)]
        self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)


class VQVAE(Family):
    name = "vqvae"
    Config = VQVAEConfig
    accepts = ("image",)
    capabilities = declare(sample=Plain, encode=Plain)
    exports = ("onnx",)
    model_defaults: ClassVar[dict[str, Any]] = {"decoder_temperature": DECODER_TEMPERATURE_DEFAULT}
    train_defaults: ClassVar[dict[str, Any]] = {
        "lr": 1e-3,
        "batch_size": 64,
        "warmup_steps": 50,
        # the codebook is a buffer that follows the live encoder by its own EMA; averaged weights would
        # pair a trailing encoder and decoder with the live codebook (and its restarts), so the last
        # weights are the consistent ones to sample and encode with
        "ema_decay": 0.0,
    }

    def __init__(self, config: VQVAEConfig, spec: DataSpec):
        super().__init__(config, spec)
        channels, height, width_px = check_image_shape(spec.shape, self.name)
        for field_name in ("width", "num_codes", "code_dim", "downsample"):
            value = getattr(config, field_name)
            if not isinstance(value, int) or value < 1:
                raise ConfigError(f"vqvae {field_name} must be a positive integer, got {value!r}")
        if not isinstance(config.res_blocks, int) or config.res_blocks < 0:
            raise ConfigError(f"vqvae res_blocks must be an integer >= 0, got {config.res_blocks!r}")
        if 2**config.downsample > min(height, width_px):
            raise ConfigError(
                f"vqvae downsample={config.downsample} halves {height}x{width_px} images below one pixel; "
                f"use at most {int(math.log2(min(height, width_px)))}"
            )
        if config.recon_loss not in RECON_LOSSES:
            raise ConfigError(f"unknown vqvae recon_loss '{config.recon_loss}'; expected one of: {', '.join(RECON_LOSSES)}")
        check_ranges(config, MODEL_RANGES, "model")
        self.height, self.width = height, width_px
        factor = 2**config.downsample
        self._code_grid = (math.ceil(height / factor), math.ceil(width_px / factor))
        self.padded = (self._code_grid[0] * factor, self._code_grid[1] * factor)
        args = (channels, config.width, config.code_dim, config.downsample, config.res_blocks)
        self.encoder = Encoder(*args)
        self.quantizer = VectorQuantizer(config.num_codes, config.code_dim, decay=config.decay,
                                         commitment=config.commitment, restart_threshold=config.restart_threshold)
        self.decoder = Decoder(*args)

    def optimizer_groups(self) -> dict[str, OptimizerGroup]:
        decay, no_decay = decay_split(self)
        return {"main": OptimizerGroup(params=decay, no_decay=no_decay)}

    @property
    def code_grid(self) -> tuple[int, int]:
        """(h, w) of the code grid one image becomes."""
        return self._code_grid

    @property
    def num_codes(self) -> int:
        return self.config.num_codes

    # ---- the model ------------------------------------------------------------------------------------------

    def encode_vectors(self, x: torch.Tensor) -> torch.Tensor:
        """Images (B, C, H, W) -> the encoder's continuous vectors (B, code_dim, h, w), before quantisation."""
        pad_h, pad_w = self.padded[0] - self.height, self.padded[1] - self.width
        if pad_h or pad_w:  # split as center_crop splits, so the crop takes back exactly the padding
            x = F.pad(x, (pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2))
        return self.encoder(x)

    def decoder_output(self, z: torch.Tensor) -> torch.Tensor:
        """Latents (B, code_dim, h, w) -> the decoder's raw output at the image's size."""
        return center_crop(self.decoder(z), self.height, self.width)

    def output_image(self, out: torch.Tensor) -> torch.Tensor:
        """Decoder output -> image in [-1, 1], float32."""
        if self.config.recon_loss == "bernoulli":
            return bernoulli_image(out, self.config.decoder_temperature)
        return out.float().clamp(-1.0, 1.0)

    def reconstruction_loss(self, out: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Mean over pixels, float32."""
        out, x = out.float(), x.float()
        if self.config.recon_loss == "bernoulli":
            return F.binary_cross_entropy_with_logits(out, (x + 1) / 2)
        return F.mse_loss(out, x)

    def training_step(self, batch: dict[str, torch.Tensor]) -> Iterator[Phase]:
        x = batch["x"]
        z_q, _, vq_loss, stats = self.quantizer(self.encode_vectors(x))
        recon = self.reconstruction_loss(self.decoder_output(z_q), x)
        yield "main", recon + vq_loss, {"recon": recon.detach(), "commitment": vq_loss.detach(), **stats}

    # ---- capabilities ---------------------------------------------------------------------------------------

    @torch.no_grad()
    def encode_codes(self, images: torch.Tensor) -> torch.Tensor:
        """Images (B, C, H, W) in [-1, 1] -> code grids (B, h, w), int64 in [0, num_codes)."""
        self.check_images(images)
        with eval_mode(self):
            return self.quantizer.quantize(self.encode_vectors(images.to(self.device)))

    @torch.no_grad()
    def decode_codes(self, indices: torch.Tensor) -> torch.Tensor:
        """Code grids (B, h, w) of ints in [0, num_codes) -> images (B, C, H, W) in [-1, 1], float32."""
        if indices.dim() != 3 or tuple(indices.shape[1:]) != self.code_grid:
            raise ConfigError(f"decode_codes expects code grids shaped (B, {self.code_grid[0]}, {self.code_grid[1]}), "
                              f"got {tuple(indices.shape)}")
        if indices.is_floating_point() or indices.is_complex():
            raise ConfigError(f"decode_codes expects integer codes, got {indices.dtype}")
        if indices.numel() and not (0 <= int(indices.min()) and int(indices.max()) < self.num_codes):
            raise ConfigError(f"codes must lie in [0, {self.num_codes}), got values from {int(indices.min())} "
                              f"to {int(indices.max())}")
        return self.decode(self.quantizer.lookup(indices.to(self.device, torch.long)))

    def sampling_nets(self) -> list:
        """The decoder from code grids, as ``decode_codes`` runs it: codebook lookup, decoder, the image shown."""
        from genforge.families.sampling_nets import EXAMPLE_BATCH, sampling_net

        h, w = self.code_grid
        codes = torch.arange(EXAMPLE_BATCH * h * w, device=self.device).view(EXAMPLE_BATCH, h, w) % self.num_codes

        def decode(codes: torch.Tensor) -> torch.Tensor:
            # quantizer.lookup with permute for its movedim, whose ONNX symbolic writes a negative permutation
            vectors = F.embedding(codes, self.quantizer.codebook).permute(0, 3, 1, 2)
            return self.output_image(self.decoder_output(vectors))

        return [sampling_net(
            "decoder", decode, self, {"codes": codes}, ["images"],
            f"codes (B, {h}, {w}) int64 code ids in [0, {self.num_codes}) -> images "
            f"(B, {', '.join(map(str, self.spec.shape))}) float32 in [-1, 1]; the grids come from a prior over codes "
            f"(a genforge transformer trained on this run's codes): a VQ-VAE has no prior of its own.",
            facts={"code_grid": [h, w], "num_codes": self.num_codes})]

    @torch.no_grad()
    def encode(self, images: torch.Tensor, label: Any = None,
               generator: torch.Generator | None = None) -> tuple[torch.Tensor, None]:
        """Images -> (quantised latents (B, code_dim, h, w) float32, None): the codebook vectors of
        ``encode_codes``. Deterministic and unconditional: ``label`` and ``generator`` are unused (they are
        in the signature so callers can treat every encoder alike); the None stands for "no label"."""
        return self.quantizer.lookup(self.encode_codes(images)), None

    @torch.no_grad()
    def decode(self, z: torch.Tensor, labels: Any = None) -> torch.Tensor:
        """Latents (B, code_dim, h, w) -> images (B, C, H, W) in [-1, 1]. The latents are decoded as given,
        not snapped to the codebook: the decoder was trained on codebook vectors, so pass ``encode``'s
        output or ``quantizer.lookup(codes)``. ``labels`` is unused (no class conditioning)."""
        expected = (self.config.code_dim, *self.code_grid)
        if z.dim() != 4 or tuple(z.shape[1:]) != expected:
            raise ConfigError(f"decode expects latents shaped (B, {', '.join(map(str, expected))}), got {tuple(z.shape)}")
        with eval_mode(self):
            return self.output_image(self.decoder_output(z.to(self.device)))

    @torch.no_grad()
    def reconstruct(self, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Encode to codes and decode them: deterministic, so ``generator`` is unused."""
        return self.decode_codes(self.encode_codes(images))

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None, **conditions: Any) -> torch.Tensor:
        """Codes drawn uniformly at random at every position, decoded: a placeholder look at the codebook.
        A VQ-VAE has no prior; real samples come from a transformer trained on ``encode_codes`` grids."""
        self.reject_conditions(self.name, conditions)
        codes = torch.randint(self.num_codes, (n, *self.code_grid), generator=generator, device=self.device)
        return self.decode_codes(codes)

