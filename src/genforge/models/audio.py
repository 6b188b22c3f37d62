"""Runs of audio: samples are clips; a user's clip is refined with the tools the run's family declares.

Mel runs (every family) are image runs underneath, so a clip given as "an image" is its log-mel spectrogram,
analysed the way the training clips were (``load_image``: read, mixed to mono, resampled, cut or padded to the
run's clip length). Diffusion redraws it (img2img: ``--strength``) or regenerates a span of time and keeps the
rest (inpainting: ``--mask 0.25-0.5``, seconds), a VAE or GAN draws variations of it or walks from one clip to
another. Waveform runs (DiffWave) refine the samples themselves: inpainting keeps every sample outside the span
exactly, so a 16-bit input comes back bit for bit there.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch

from genforge.errors import ConfigError
from genforge.models.images import ImageModel


class AudioModel(ImageModel):
    """A run that writes audio clips; ``img2img``, ``inpaint``, ``variations`` and ``interpolate_images`` take a
    clip (an audio file, or a tensor shaped like one sample)."""

    def load_image(self, path: str | Path) -> torch.Tensor:
        """An audio file as this run's input: (1, 1, frames, mels) log-mel in [-1, 1] for mel runs, (1, 1, samples)
        for waveform runs."""
        from genforge.data.audio_io import read_clip

        wave, _ = read_clip(Path(path), self.tokenizer.sample_rate, self.tokenizer.clip_samples)
        wave = torch.from_numpy(wave).float()[None]
        if self.spec.kind == "waveform":
            return wave[:, None]
        return self.tokenizer.to_image(wave).float()

    def load_mask(self, span: str | Path, like: str | Path | None = None) -> torch.Tensor:
        """The span of time to regenerate, "START-END" in seconds ("0.25-0.5"; "0.5-" runs to the clip's end), as
        an inpainting mask: (1, 1, frames, 1) rows of the spectrogram, or (1, 1, samples)."""
        start, end = parse_span(str(span), self.tokenizer.clip_samples / self.tokenizer.sample_rate)
        if self.spec.kind == "waveform":
            length = self.spec.shape[-1]
            mask = torch.zeros(1, 1, length)
            mask[..., round(start * self.tokenizer.sample_rate):round(end * self.tokenizer.sample_rate)] = 1
            return mask
        frames, mels = self.spec.shape[1:]
        per_second = self.tokenizer.sample_rate / self.tokenizer.hop
        mask = torch.zeros(1, 1, frames, mels)
        mask[:, :, math.floor(start * per_second):math.ceil(end * per_second)] = 1
        return mask

    def _one_image(self, image: Any) -> torch.Tensor:
        image = self.load_image(image) if isinstance(image, (str, Path)) else image
        want = (1, *self.spec.shape)
        if not torch.is_tensor(image) or tuple(image.shape) != want:
            got = tuple(image.shape) if torch.is_tensor(image) else type(image).__name__
            raise ConfigError(f"expected one input clip shaped {want}, got {got}")
        return image


def parse_span(text: str, seconds: float) -> tuple[float, float]:
    """"0.25-0.5" -> (0.25, 0.5) seconds inside a clip of ``seconds``; "0.5-" -> (0.5, seconds)."""
    first, sep, last = text.strip().partition("-")
    try:
        start = float(first)
        end = float(last) if last.strip() else seconds
    except ValueError:
        start = end = -1.0
    if not sep or not (math.isfinite(start) and math.isfinite(end)) or not 0 <= start < end <= seconds + 1e-9:
        raise ConfigError(f"--mask on an audio run is the span of time to regenerate, START-END in seconds within the "
                          f"{seconds:g} s clip (e.g. 0.25-0.5, or 0.5- to the end); got '{text}'")
    return start, min(end, seconds)
