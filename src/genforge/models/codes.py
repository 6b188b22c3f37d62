"""Priors over a VQ-VAE's codes, loaded: samples are the VQ-VAE's data (images; log-mel clips made audible), and
a user's input is continued from a point on.

``sample(n, prompt=FILE, mask=WHERE)`` reads FILE as the VQ-VAE run reads its inputs (an image; an audio clip),
encodes it into a code grid, keeps the codes before the first cell that ``mask`` marks (the VQ-VAE run's own
mask: an image file, or for audio the span of time to regenerate, "0.5-"), and lets the prior write the rest, so
every sample begins as the input does: an image's top rows, a clip's first half second (a mel grid runs in
time order, row by row). The mask must run to the end of the grid: a prior writes forward, it does not fill
a hole with the input's continuation in view (diffusion runs inpaint).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from genforge.errors import ConfigError
from genforge.models.base import Model
from genforge.train.device import autocast


class CodesModel(Model):
    """A prior run; ``sample(..., prompt=PATH, mask=WHERE)`` continues an input (``genforge refine --input``)."""

    serves = Model.serves | {"continue"}
    prompt_is_file = True  # a prompt is an input file to continue (the VQ-VAE's kind of data)
    _data_model: Model | None = None

    @property
    def data_model(self) -> Model:
        """The VQ-VAE run, loaded as a model of its own data: it reads the inputs a prior continues."""
        if self._data_model is None:
            from genforge.models import MODELS
            from genforge.modalities import modality_of
            from genforge.modalities.codes import open_vq_run

            run = open_vq_run(Path(self.tokenizer.run))
            self._data_model = MODELS[modality_of(run.spec, run.path).model_kind](run, device="cpu")
        return self._data_model

    def check_sample(self, stop: Any = None, **conditions: Any) -> None:
        conditions.pop("mask", None)
        super().check_sample(stop, **conditions)

    def _sample_tensors(self, n: int, seed: int, prompt: Any, conditions: dict) -> tuple[torch.Tensor, int]:
        conditions = dict(conditions)
        mask = conditions.pop("mask", None)
        if prompt is None:
            if mask is not None:
                raise ConfigError("--mask goes with an input to continue (--input FILE)")
            return super()._sample_tensors(n, seed, None, conditions)
        if not isinstance(prompt, (str, os.PathLike)):
            raise ConfigError(f"a prior continues an input file; got a {type(prompt).__name__}")
        if mask is None:
            raise ConfigError("continuing an input needs --mask: where the prior takes over (audio: the span to "
                              "regenerate, e.g. 0.5-; images: a mask file, white from a point to the end)")
        settings = self.settings("sample", **conditions).given()
        kept, class_token = self._kept_codes(prompt, mask, seed)
        tokens = [self.tokenizer.eot_id, *class_token, *[int(c) + 1 for c in kept]]
        settings["max_new_tokens"] = self.tokenizer.grid_tokens - len(kept)
        with autocast(self.device, self.amp_dtype):
            out = self.family.sample(n, generator=self._generator(seed), prompt=tokens, **settings)
        return out, 1  # the class token and the kept codes are decoded with the rest of the grid

    def _kept_codes(self, prompt: str | os.PathLike, mask: Any, seed: int) -> tuple[list[int], list[int]]:
        """The input's codes before the first masked cell (raster order), and its class token (a prior with class
        tokens: drawn by the prior itself from ``seed``)."""
        data = self.data_model
        image = data.load_image(prompt)
        cells = data.load_mask(mask, like=prompt)
        with torch.no_grad():
            codes = data.family.encode_codes(image.to(data.device)).reshape(-1).cpu()
        h, w = self.tokenizer.grid
        covered = torch.nn.functional.adaptive_max_pool2d(cells.float(), (h, w)).reshape(-1) > 0
        if not covered.any():
            raise ConfigError("the mask marks nothing to generate; mark where the prior takes over (e.g. 0.5-)")
        first = int(torch.nonzero(covered)[0])
        if not covered[first:].all():
            raise ConfigError("a prior continues its input: the mask must run from where it takes over to the end "
                              "(audio: START-, e.g. 0.5-; images: white from a row on), not mark a hole in the middle")
        class_token: list[int] = []
        if self.tokenizer.class_tokens:
            with autocast(self.device, self.amp_dtype):
                drawn = self.family.sample(1, generator=self._generator(seed), prompt=[self.tokenizer.eot_id],
                                           max_new_tokens=1)
            token = int(drawn[0, -1])
            class_token = [token if token > self.tokenizer.num_codes else self.tokenizer.class_id(0)]
        return codes[:first].tolist(), class_token
