"""Diffusion on raw waveforms (DiffWave, Kong et al. 2021): the diffusion family's training, samplers,
guidance, img2img and inpainting, unchanged, around a 1-D denoiser instead of the image UNet.

The denoiser (``nets/diffwave.py``) is a stack of dilated convolutions whose dilation doubles up to a cycle
and starts again, with gated activations and skip connections: its receptive field grows exponentially with
depth, so a few dozen layers see thousands of samples while every layer keeps the clip's full time
resolution. The timestep (and a class label, in class-conditional runs) is added to every layer.

Audio has 65,536 levels, not the 256 of an 8-bit image, so the image family's likelihood bound (a
discretised Gaussian over 256 levels) does not apply: this variant declares no likelihood. Inpainting
fills a masked span of samples (``mask`` shaped (B or 1, 1, L)) and returns the other samples exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from genforge.config import Range, check_ranges
from genforge.data.spec import DataSpec
from genforge.families.capabilities import DiffusionSampling, Img2Img, Inpaint, declare
from genforge.families.diffusion import Diffusion, DiffusionConfig
from genforge.nets.diffwave import DiffWave


@dataclass
class WaveDiffusionConfig(DiffusionConfig):
    # the 1-D denoiser (DiffWave's own is 64 channels x 30 layers with a cycle of 10: 6,139 samples of context).
    # These defaults see 253 samples and cost about 0.3 s a clip-second per training step on two CPU cores (a
    # batch of 16 one-second 16 kHz clips: ~4 s forward and backward), so a CPU run learns 8 kHz clips; a GPU
    # takes DiffWave's size
    residual_channels: int = 32
    residual_layers: int = 12
    dilation_cycle: int = 6


class WaveDiffusion(Diffusion):
    accepts = ("waveform",)
    Config = WaveDiffusionConfig
    checkpointed_nets = ("wavenet",)
    capabilities = declare(sample=DiffusionSampling, img2img=Img2Img, inpaint=Inpaint)
    exports = ("onnx",)

    def build_backbone(self, config: WaveDiffusionConfig, spec: DataSpec) -> None:
        check_ranges(config, {"residual_channels": Range(1), "residual_layers": Range(1), "dilation_cycle": Range(1)},
                     "model")
        channels, length = spec.shape
        self.wavenet = DiffWave(in_channels=channels, length=length, residual_channels=config.residual_channels,
                                layers=config.residual_layers, dilation_cycle=config.dilation_cycle,
                                dropout=config.dropout)

    @property
    def backbone(self) -> nn.Module:
        return self.wavenet
