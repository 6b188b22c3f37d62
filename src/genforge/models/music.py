"""Runs of symbolic music: samples are pieces (``symusic.Score``), and a prompt is a piece to continue.

A prompt is a MIDI or MusicXML file (or a Score already in memory): its notes are tokenised as the training
pieces were (``MusicTokenizer``), after the end-of-piece token, and every sample continues them. The
prompt's tokens stay the first tokens of each row, so each sample begins with the given melody, at the
tokenizer's grid resolution, and goes on from its last note.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from genforge.errors import DataError
from genforge.models.base import Model
from genforge.train.device import autocast


class MusicModel(Model):
    """A run that writes music; ``sample(..., prompt=PATH_OR_SCORE)`` continues a given piece."""

    serves = Model.serves | {"continue"}
    prompt_is_file = True  # `genforge sample --prompt-file`: the prompt is a piece read from a file

    def _prompt_tokens(self, prompt: Any) -> list[int]:
        """The end-of-piece token, then the prompt piece's event tokens (none without a prompt)."""
        start = [self.tokenizer.eot_id]
        if prompt is None:
            return start
        from genforge.data.music import load_score

        score = load_score(prompt) if isinstance(prompt, (str, os.PathLike)) else prompt
        ids = self.tokenizer.encode_score(score)
        if not ids:
            raise DataError(f"the prompt piece {_name(prompt)} has no pitched notes to continue")
        return start + ids

    def _sample_tensors(self, n: int, seed: int, prompt: Any, conditions: dict) -> tuple[torch.Tensor, int]:
        if self.spec.kind != "tokens":  # piano rolls: images, with nothing to continue
            return super()._sample_tensors(n, seed, prompt, conditions)
        settings = self._family_settings(self.settings("sample", **conditions).given())
        options = self.modality.sample_options(self.spec, self.tokenizer)
        tokens = self._prompt_tokens(prompt)
        settings = {"max_new_tokens": options["max_new_tokens"], **settings, "prompt": tokens}
        with autocast(self.device, self.amp_dtype):
            out = self.family.sample(n, generator=self._generator(seed), **settings)
        return out, len(tokens)

    def sample_params(self, n: int, seed: int, prompt: Any, stop: Any, conditions: dict) -> dict:
        return super().sample_params(n, seed, None if prompt is None else _name(prompt), stop, conditions)


def _name(prompt: Any) -> str:
    return str(Path(prompt)) if isinstance(prompt, (str, os.PathLike)) else "a score given in memory"
