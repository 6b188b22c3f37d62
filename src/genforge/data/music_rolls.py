"""Music as pictures: fixed-length piano-roll segments, for the families that generate images (VAE, GAN,
diffusion), as MuseGAN and the piano-roll diffusion models do.

A piece's pitched notes (all tracks merged, drums left out) are laid on a grid of ``steps_per_beat`` steps a
beat and the pitches ``pitch_low..pitch_high``, then cut into segments of ``bars`` 4/4 bars that start on bar
lines (``music_tokens.score_to_roll`` and ``roll_segments``). Each segment is an image (2, steps, pitches):
channel 0 is on while a note sounds, channel 1 marks the step where it starts, so two touching notes of one
pitch stay two notes. Velocities are dropped: a pixel is 255 (on) or 0 (off), and decoded notes have one
velocity. A generated image (floats in [-1, 1]) is read back by thresholding at 0: a note begins at an onset
mark where the pitch sounds, or where it turns on, and lasts while it stays on.

``RollFormat`` plays the part a tokenizer plays for event tokens: it is saved with the run
(``tokenizer.json``), so sampling decodes exactly as the data was encoded.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from genforge.errors import DataError
from genforge.io import atomic_write_json

DECODED_VELOCITY = 90  # the velocity of every decoded note: the roll keeps no dynamics


@dataclass(frozen=True)
class RollFormat:
    """The grid of a piano-roll run: 4 steps a beat, 4 bars (64 steps), pitches C2..D#7 (64): 2 x 64 x 64."""

    type: ClassVar[str] = "pianoroll"
    steps_per_beat: int = 4
    bars: int = 4
    pitch_low: int = 36
    pitch_high: int = 99
    tempo: float = 100.0  # the tempo decoded pieces play at (chorales move at about this many beats a minute)

    @property
    def steps(self) -> int:
        return 4 * self.steps_per_beat * self.bars

    @property
    def shape(self) -> tuple[int, int, int]:
        return (2, self.steps, self.pitch_high - self.pitch_low + 1)

    def segments(self, score) -> np.ndarray:
        """(N, 2, steps, pitches) uint8 segments of a piece, 255 where on; silent segments are left out."""
        from genforge.data.music_tokens import roll_segments, score_to_roll

        roll = score_to_roll(score, self.steps_per_beat, self.pitch_low, self.pitch_high, onsets=True)
        if roll.shape[1] == 0:
            return np.zeros((0, *self.shape), dtype=np.uint8)
        return np.where(roll_segments(roll, self.steps) > 0, 255, 0).astype(np.uint8)

    def decode(self, image: Any):
        """One image (2, steps, pitches), floats in [-1, 1] (or uint8 0/255), -> a ``symusic.Score``."""
        return self._score(self._on(image))

    def join(self, images: Any):
        """Several images -> one piece: the segments one after another (a walk between two phrases, played
        through), each exactly as ``decode`` reads it: a note sounding across a seam ends there."""
        parts = [self._on(image) for image in images]
        for part in parts[1:]:
            part[1, 0] = part[0, 0]  # every note sounding at a segment's first step starts there
        return self._score(np.concatenate(parts, axis=1))

    def _on(self, image: Any) -> np.ndarray:
        array = np.asarray(image.detach().float().cpu() if hasattr(image, "detach") else image, dtype=np.float32)
        if tuple(array.shape) != self.shape:
            raise DataError(f"a piano-roll sample must be shaped {self.shape}, got {tuple(array.shape)}")
        on = array > (127.5 if array.max(initial=0) > 1.5 else 0.0)
        on[1] &= on[0]  # an onset mark counts only where its pitch sounds
        return on

    def _score(self, on: np.ndarray):
        from genforge.data.music_tokens import roll_to_score

        roll = np.where(on, DECODED_VELOCITY, 0).astype(np.uint8)
        return roll_to_score(roll, self.steps_per_beat, self.pitch_low, self.tempo, onsets=True)

    def first_segment(self, score, name: str) -> np.ndarray:
        """The first segment of a piece that holds notes, (2, steps, pitches) uint8: what a model refines."""
        segments = self.segments(score)
        if not len(segments):
            raise DataError(f"{name} has no notes in this run's piano-roll range (MIDI pitches {self.pitch_low} to "
                            f"{self.pitch_high}); expected a piece with notes there")
        return segments[0]

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.type, **asdict(self)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "RollFormat":
        return cls(**{k: v for k, v in d.items() if k != "type"})

    def save(self, path: str | os.PathLike) -> None:
        atomic_write_json(Path(path), self.to_dict())

    @classmethod
    def load(cls, path: str | os.PathLike) -> "RollFormat":
        return cls.from_dict(json.loads(Path(path).read_text(encoding="utf-8")))
