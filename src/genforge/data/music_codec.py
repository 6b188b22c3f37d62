"""Samples of music -> files people can open, hear and look at.

An event-token sample is one row of token ids: the tokens up to the end-of-piece token that follows
content (as a text sample ends at its end-of-text) become a ``symusic.Score`` through the run's
``MusicTokenizer``; a piano-roll sample is an image the run's ``RollFormat`` reads back as a piece. ``write_items`` writes it as ``000000.mid`` with a piano-roll preview ``000000.png``
beside it, and, when the sample settings ask for audio (``genforge sample --audio``), ``000000.wav``
rendered by FluidSynth or, without it, genforge's additive synthesiser (``music_render``). ``grid``
(the training run's sample previews) draws the first samples' piano rolls one above the other.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from genforge.data.codecs import _plain, content_end
from genforge.data.music_rolls import RollFormat
from genforge.data.spec import DataSpec
from genforge.io import atomic_write_bytes, atomic_write_json, ensure_dir

GRID_ROWS = 4  # pieces a preview (grid.png, the training run's samples) shows
GAP = 4  # pixels between two pieces in a preview


class MusicCodec:
    """Token ids (n, T) or piano rolls (n, 2, steps, pitches) -> ``symusic.Score`` items -> .mid files (+ .png
    previews, + .wav on request)."""

    suffix = ".mid"
    output_options = {"audio": "a .wav beside each .mid"}

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer

    def decode_one(self, sample: torch.Tensor | np.ndarray | list[int], prompt_len: int = 0):
        """One sample -> a ``symusic.Score``: a row of event tokens (the prompt kept, up to the end-of-piece token
        after content), or a piano-roll image (``RollFormat``)."""
        if isinstance(self.tokenizer, RollFormat):
            return self.tokenizer.decode(sample)
        ids = np.asarray(sample.detach().cpu() if isinstance(sample, torch.Tensor) else sample, dtype=np.int64).reshape(-1)
        end = content_end(ids, prompt_len, self.tokenizer.eot_id)
        kept = [int(i) for i in ids[:end] if int(i) != self.tokenizer.eot_id]
        return self.tokenizer.decode_score(kept)

    def decode(self, samples: torch.Tensor, prompt_len: int = 0) -> list:
        return [self.decode_one(sample, prompt_len) for sample in samples]

    def item_shape(self, spec: DataSpec) -> None:
        return None  # token rows are small: no memory estimate needed

    def write_items(self, scores: list, out_dir: str | os.PathLike, params: dict[str, Any], start: int = 0) -> list[Path]:
        """``NNNNNN.mid`` per piece, its piano roll as ``NNNNNN.png``, and ``NNNNNN.wav`` when ``params["audio"]``."""
        from genforge.data.music_render import render_wav, roll_png

        out_dir = ensure_dir(out_dir, "output folder")
        paths = []
        for i, score in enumerate(scores, start):
            path = out_dir / f"{i:06d}.mid"
            atomic_write_bytes(path, score_bytes(score))
            roll_png(score, path.with_suffix(".png"))
            if params.get("audio"):
                render_wav(score, path.with_suffix(".wav"))
            paths.append(path)
        return paths

    def finish(self, scores: list, out_dir: str | os.PathLike, params: dict[str, Any]) -> None:
        """settings.json, once every piece is written, and grid.png: the first pieces' piano rolls."""
        out_dir = ensure_dir(out_dir, "output folder")
        self.preview(scores[:GRID_ROWS], out_dir / "grid.png")
        atomic_write_json(out_dir / "settings.json", _plain(params))

    def save(self, tokens: torch.Tensor, out_dir: str | os.PathLike, params: dict[str, Any], prompt_len: int = 0) -> list[Path]:
        scores = self.decode(tokens, prompt_len)
        paths = self.write_items(scores, out_dir, params)
        self.finish(scores, out_dir, params)
        return paths

    def grid(self, tokens: torch.Tensor, path: str | os.PathLike, params: dict[str, Any], prompt_len: int = 0,
             columns: int | None = None) -> Path:
        """The pieces' piano rolls in one PNG, one above the other; when ``path`` names a MIDI file (the trainer's
        ``samples/step_*.mid``) the first piece is written there too, for the report to play. With ``columns``
        (results that read left to right: a walk between two phrases) piano-roll samples are joined into one
        piece, written as a .mid beside the PNG of its roll."""
        path = Path(path)
        if columns is not None and isinstance(self.tokenizer, RollFormat):
            joined = self.tokenizer.join(tokens)
            atomic_write_bytes(path.with_suffix(self.suffix), score_bytes(joined))
            return self.preview([joined], path.with_suffix(".png"))
        scores = self.decode(tokens, prompt_len)
        if path.suffix == self.suffix and scores:
            atomic_write_bytes(path, score_bytes(scores[0]))
        return self.preview(scores, path.with_suffix(".png"))

    def preview(self, scores: list, path: Path) -> Path:
        """The pieces' piano rolls, one above the other."""
        from genforge.data.music_render import rolls_png

        rolls_png(scores, path, gap=GAP)
        return path


def score_bytes(score) -> bytes:
    """A score as the bytes of a standard MIDI file."""
    return bytes(score.dumps_midi())
