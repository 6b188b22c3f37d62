"""Samples of audio -> files people can hear and look at.

A sample is a log-mel image (mel runs), turned into sound by Griffin-Lim phase reconstruction
(``MelFormat.griffin_lim``), or a waveform (waveform runs), taken as it is. ``write_items`` writes each clip as
``000000.wav`` (16-bit PCM mono at the run's rate) with its spectrogram ``000000.png`` beside it: what the clip
sounds like, analysed the way the data was, low frequencies at the bottom, time left to right, brighter louder
(the PNG carries the sample's parameters, as every genforge PNG does). ``finish`` adds ``grid.png``, the first
clips' spectrograms. ``grid`` (the trainer's ``samples/step_*``, refine's comparison and strips) writes the
spectrograms as one PNG and the clips one after another, a short silence apart, as a WAV beside it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from genforge.data.codecs import _plain, make_grid, png_bytes
from genforge.data.spec import DataSpec
from genforge.errors import DataError
from genforge.io import atomic_write_bytes, atomic_write_json, ensure_dir

GRID_MAX = 16  # spectrograms grid.png shows
GAP_SECONDS = 0.25  # silence between two clips of a joined WAV
PNG_SCALE = 2  # pixels per frame and mel band: a 64 x 64 spectrogram is drawn 128 x 128
COLORMAP = "magma"


class AudioCodec:
    """Log-mel images (n, 1, frames, mels) or waveforms (n, 1, samples) -> clips (n, samples) -> .wav + .png."""

    suffix = ".wav"

    def __init__(self, mel, waveform: bool = False):
        self.mel = mel  # data.audio_dsp.MelFormat: the run's sample rate, clip length and spectrogram settings
        self.waveform = waveform

    @property
    def sample_rate(self) -> int:
        return int(self.mel.sample_rate)

    def decode(self, x: torch.Tensor) -> torch.Tensor:
        """Samples in data space -> float32 clips (n, samples) in [-1, 1] on the CPU."""
        x = torch.nan_to_num(x.detach().float().cpu())
        if self.waveform:
            if x.dim() != 3 or x.shape[1] != 1:
                raise DataError(f"waveforms must be a (n, 1, samples) tensor, got shape {tuple(x.shape)}")
            return x[:, 0].clamp(-1, 1)
        if x.dim() != 4 or tuple(x.shape[1:]) != tuple(self.mel.shape):
            raise DataError(f"log-mel images must be a (n, {', '.join(map(str, self.mel.shape))}) tensor, got shape "
                            f"{tuple(x.shape)}")
        return self.mel.griffin_lim(x.clamp(-1, 1)).float().cpu()

    def item_shape(self, spec: DataSpec) -> tuple[int, ...]:
        return (int(self.mel.clip_samples),)

    def write_items(self, clips: torch.Tensor, out_dir: str | os.PathLike, params: dict[str, Any],
                    start: int = 0) -> list[Path]:
        """``NNNNNN.wav`` per clip, numbered from ``start``, with its spectrogram ``NNNNNN.png``."""
        from genforge.data.audio_io import write_wav

        out_dir = ensure_dir(out_dir, "output folder")
        pictures = self.spectrograms(clips)
        paths = []
        for i, (clip, picture) in enumerate(zip(clips, pictures), start):
            path = out_dir / f"{i:06d}.wav"
            write_wav(path, clip.numpy(), self.sample_rate)
            atomic_write_bytes(path.with_suffix(".png"), png_bytes(to_image(picture), params))
            paths.append(path)
        return paths

    def finish(self, clips: torch.Tensor, out_dir: str | os.PathLike, params: dict[str, Any]) -> None:
        """grid.png (the first clips' spectrograms) and settings.json."""
        out_dir = ensure_dir(out_dir, "output folder")
        pictures = self.spectrograms(clips[:GRID_MAX])
        atomic_write_bytes(out_dir / "grid.png", png_bytes(to_image(make_grid(pictures)), params))
        atomic_write_json(out_dir / "settings.json", _plain(params))

    def save(self, x: torch.Tensor, out_dir: str | os.PathLike, params: dict[str, Any]) -> list[Path]:
        clips = self.decode(x)
        paths = self.write_items(clips, out_dir, params)
        self.finish(clips, out_dir, params)
        return paths

    def grid(self, x: torch.Tensor, path: str | os.PathLike, params: dict[str, Any], columns: int | None = None) -> Path:
        """The samples' spectrograms as one PNG (near-square, or ``columns`` wide) and the clips one after another
        as a WAV of the same name; returns the PNG's path."""
        from genforge.data.audio_io import write_wav

        path = Path(path)
        clips = self.decode(x)
        pictures = self.spectrograms(clips)
        png = path.with_suffix(".png")
        atomic_write_bytes(png, png_bytes(to_image(make_grid(pictures, columns=columns)), params))
        write_wav(path.with_suffix(".wav"), join(clips.numpy(), int(GAP_SECONDS * self.sample_rate)), self.sample_rate)
        return png

    def spectrograms(self, clips: torch.Tensor) -> np.ndarray:
        """uint8 RGB pictures (n, 3, mels * scale, frames * scale) of clips (n, samples): time left to right, low
        frequencies at the bottom."""
        if len(clips) == 0:
            return np.zeros((0, 3, self.mel.n_mels * PNG_SCALE, self.mel.frames * PNG_SCALE), dtype=np.uint8)
        levels = ((self.mel.to_image(clips.float()) + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).numpy()
        levels = levels[:, 0].transpose(0, 2, 1)[:, ::-1]  # (n, frames, mels) -> (n, mels, frames), low bands last
        rgb = colormap()[levels]  # (n, mels, frames, 3)
        rgb = rgb.repeat(PNG_SCALE, axis=1).repeat(PNG_SCALE, axis=2)
        return np.ascontiguousarray(rgb.transpose(0, 3, 1, 2))


def join(clips: np.ndarray, gap: int) -> np.ndarray:
    """Clips (n, samples) one after another with ``gap`` samples of silence between them."""
    if len(clips) == 0:
        return np.zeros(0, dtype=np.float32)
    parts = []
    for i, clip in enumerate(clips):
        if i:
            parts.append(np.zeros(gap, dtype=np.float32))
        parts.append(np.asarray(clip, dtype=np.float32))
    return np.concatenate(parts)


_LUT: np.ndarray | None = None


def colormap() -> np.ndarray:
    """A (256, 3) uint8 lookup table of matplotlib's perceptually uniform colormap."""
    global _LUT
    if _LUT is None:
        from matplotlib import colormaps

        _LUT = (colormaps[COLORMAP](np.linspace(0, 1, 256))[:, :3] * 255).round().astype(np.uint8)
    return _LUT


def to_image(pixels: np.ndarray):
    """uint8 (3, H, W) -> a Pillow RGB image."""
    from PIL import Image

    return Image.fromarray(np.ascontiguousarray(pixels.transpose(1, 2, 0)), mode="RGB")

