"""Runs of symbolic music: samples are pieces (``symusic.Score``); a user's piece is continued or refined.

Event-token runs (the transformer): a prompt is a MIDI or MusicXML file (or a Score already in memory); its
notes are tokenised as the training pieces were (``MusicTokenizer``), after the end-of-piece token, and every
sample continues them. The prompt's tokens stay the first tokens of each row, so each sample begins with the
given melody, at the tokenizer's grid resolution, and goes on from its last note.

Piano-roll runs (VAE, GAN, diffusion) are image runs underneath, so they refine a piece with the image tools
their family declares (``ImageModel``): a piece given as "an image" is its first four-bar segment that holds
notes (``load_image``), so a VAE or GAN draws variations of a phrase or walks from one phrase to another
(MusicVAE's interpolation), and diffusion redraws it (img2img) or regenerates chosen bars, keeping the others
note for note (inpainting with a mask of bars, ``load_mask``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from genforge.errors import ConfigError, DataError
from genforge.models.images import ImageModel
from genforge.train.device import autocast


class MusicModel(ImageModel):
    """A run that writes music; ``sample(..., prompt=PATH_OR_SCORE)`` continues a given piece (event tokens),
    ``variations``, ``interpolate_images``, ``img2img`` and ``inpaint`` refine one (piano rolls)."""

    serves = ImageModel.serves | {"continue"}
    prompt_is_file = True  # `genforge sample --prompt-file`: the prompt is a piece read from a file

    def load_image(self, path: str | Path) -> torch.Tensor:
        """A piece (a MIDI or MusicXML file) as the piano roll this run refines: its first four-bar segment that
        holds notes, (1, 2, steps, pitches) in [-1, 1]."""
        from genforge.data.music import load_score

        segment = self._rolls().first_segment(load_score(path), str(path))
        return torch.from_numpy(segment).float().div(127.5).sub(1).unsqueeze(0)

    def load_mask(self, bars: str | Path, like: str | Path | None = None) -> torch.Tensor:
        """The bars of a segment to regenerate, as an inpainting mask (1, 1, steps, pitches): "2" or "2-3"
        (bars counted from 1); every other bar is kept note for note."""
        rolls = self._rolls()
        first, sep, last = str(bars).partition("-")
        try:
            low, high = int(first), int(last if sep else first)
        except ValueError:
            low = high = 0
        if not 1 <= low <= high <= rolls.bars:
            raise ConfigError(f"--mask on a music run names the bars to regenerate, e.g. 2 or 2-3 (of 1-{rolls.bars}); "
                              f"got '{bars}'")
        per_bar = rolls.steps // rolls.bars
        mask = torch.zeros(1, 1, rolls.steps, rolls.shape[2])
        mask[:, :, (low - 1) * per_bar:high * per_bar] = 1
        return mask

    def _rolls(self):
        """The run's ``RollFormat``; a one-line error on an event-token run, which has no piano rolls to refine."""
        if self.spec.kind != "image":
            raise ConfigError(f"{self.run.path} learns event tokens: it continues a piece (--prompt-file, or refine "
                              "--input), it does not refine it as a piano roll")
        return self.tokenizer

    def _prompt_tokens(self, prompt: Any, label: Any = None) -> list[int]:
        """The end-of-piece token, the key token (a run with keys: ``label``'s, else the prompt piece's; none
        without either, and the model draws one), then the prompt piece's event tokens (none without a prompt)."""
        start = [self.tokenizer.eot_id]
        key = self._key(label)
        if prompt is None:
            return start + ([] if key is None else [self.tokenizer.key_token(key)])
        from genforge.data.music import load_score
        from genforge.data.music_keys import estimate_key

        score = load_score(prompt) if isinstance(prompt, (str, os.PathLike)) else prompt
        ids = self.tokenizer.encode_score(score)
        if not ids:
            raise DataError(f"the prompt piece {_name(prompt)} has no pitched notes to continue")
        if self.tokenizer.keys:
            start.append(self.tokenizer.key_token(estimate_key(score) if key is None else key))
        return start + ids

    def _key(self, label: Any) -> int | None:
        """``label`` (a key name such as "D minor", or its id 0..23) as a key id; a one-line error on a run
        prepared without keys."""
        from genforge.data.music_keys import KEY_NAMES, key_id

        if label is None:
            return None
        if not self.tokenizer.keys:
            raise ConfigError(f"{self.run.path} learnt no keys (it was prepared without data.labels=key), so it "
                              "takes no --label")
        text = str(label).strip()
        if text.isdigit():
            if int(text) >= len(KEY_NAMES):
                raise ConfigError(f"--label {label}: key ids run from 0 to {len(KEY_NAMES) - 1}")
            return int(text)
        return key_id(text)

    def check_sample(self, stop: Any = None, **conditions: Any) -> None:
        if self.spec.kind == "tokens":  # the key is a token of the prompt, not a setting of the family
            self._key(conditions.pop("label", None))
        super().check_sample(stop, **conditions)

    def _sample_tensors(self, n: int, seed: int, prompt: Any, conditions: dict) -> tuple[torch.Tensor, int]:
        if self.spec.kind != "tokens":  # piano rolls: images, with nothing to continue
            return super()._sample_tensors(n, seed, prompt, conditions)
        conditions = dict(conditions)
        tokens = self._prompt_tokens(prompt, conditions.pop("label", None))
        settings = self._family_settings(self.settings("sample", **conditions).given())
        options = self.modality.sample_options(self.spec, self.tokenizer)
        settings = {"max_new_tokens": options["max_new_tokens"], **settings, "prompt": tokens}
        with autocast(self.device, self.amp_dtype):
            out = self.family.sample(n, generator=self._generator(seed), **settings)
        return out, len(tokens)

    def sample_params(self, n: int, seed: int, prompt: Any, stop: Any, conditions: dict) -> dict:
        return super().sample_params(n, seed, None if prompt is None else _name(prompt), stop, conditions)


def _name(prompt: Any) -> str:
    return str(Path(prompt)) if isinstance(prompt, (str, os.PathLike)) else "a score given in memory"
