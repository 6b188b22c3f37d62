"""Runs that make images: img2img, inpainting and the latent tools (inversion, variations,
interpolation, attribute edits), each through a capability its family declares."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import torch

from genforge.config import check_count
from genforge.errors import ConfigError
from genforge.models import batches
from genforge.models.base import Model
from genforge.train.device import autocast


class ImageModel(Model):
    """A run on image data: ``sample`` returns (n, C, H, W) in [-1, 1]; inputs are image files or tensors."""

    serves = Model.serves | {"img2img", "inpaint", "encode", "interpolate", "variations", "attribute"}

    def load_image(self, path: str | Path) -> torch.Tensor:
        """An image file as (1, C, H, W) in [-1, 1], resized and converted to this run's image shape."""
        return self.codec.load(path, self.spec.shape)

    def load_mask(self, path: str | Path, like: str | Path | None = None) -> torch.Tensor:
        """A mask image as (1, 1, H, W) of 0/1: white (brighter than mid-grey) marks the pixels to generate.

        The mask file must have the size of the image file ``like`` (the input it goes with) or, without
        one, of this run's images: a mask of another size is refused, never silently resized."""
        from genforge.data.codecs import pixel_size

        wanted = pixel_size(like) if like is not None else tuple(self.spec.shape[:0:-1])
        got = pixel_size(path)
        if got != wanted:
            of = f"the input {like}" if like is not None else "this run's images"
            raise ConfigError(f"the mask {path} is {got[0]}x{got[1]} pixels but {of} {'is' if like else 'are'} "
                              f"{wanted[0]}x{wanted[1]}; expected a mask of the same size (white: generate, black: keep)")
        return (self.codec.load(path, (1, *self.spec.shape[1:])) > 0).float()

    def img2img(self, image: torch.Tensor | str | Path, strength: float, n: int = 1, seed: int = 0,
                **settings: Any) -> torch.Tensor:
        """SDEdit/img2img: ``n`` variations of ``image`` (a path or a (1, C, H, W) tensor in [-1, 1]).

        ``strength`` 0 returns the input, 1 ignores it (the same as ``sample`` with that seed); settings
        are the family's sampling options (steps, sampler, eta, spacing, label, guidance).
        """
        return self._refine_images("img2img", image, n, seed, {}, {"strength": strength, **settings})

    def inpaint(self, image: torch.Tensor | str | Path, mask: torch.Tensor | str | Path, n: int = 1, seed: int = 0,
                **settings: Any) -> torch.Tensor:
        """``n`` completions of ``image`` where ``mask`` is 1 (white in a mask file); other pixels are kept exactly.
        A mask file must have the size of the input image file (or of the run's images, for a tensor input)."""
        if isinstance(mask, (str, Path)):
            mask = self.load_mask(mask, like=image if isinstance(image, (str, Path)) else None)
        return self._refine_images("inpaint", image, n, seed, {"mask": mask}, settings)

    def interpolate(self, seeds: Sequence[int], n: int = 8, label: Any = None, truncation: float | None = None) -> torch.Tensor:
        """Images along a spherical path through the latents of ``seeds``: 2 seeds give a strip of ``n``,
        4 give an n x n grid (see ``genforge.sampling.latent.interpolation``). The end points are the
        images ``sample(1, seed=...)`` draws; a class-conditional model keeps one label along the way
        (``label``, or the first seed's)."""
        from genforge.sampling.latent import interpolation, truncate

        family = self._require("interpolate", "interpolation")
        self.settings("interpolate", label=label, truncation=truncation)
        seeds = [int(s) for s in seeds]
        if len(seeds) not in (2, 4):
            raise ConfigError(f"interpolate between 2 seeds (a strip) or 4 (a grid), got {len(seeds)}")
        check_count(n, "the number of images per side" if len(seeds) == 4 else "the number of images",
                    batches.MAX_GRID_SIDE if len(seeds) == 4 else batches.MAX_REFINE)
        starts, first_labels = [], None
        for seed in seeds:
            generator = self._generator(seed)
            starts.append(family.sample_latents(1, generator)[0])
            if first_labels is None:
                first_labels = family.labels_for(1, label, generator)  # drawn as sample() draws it
        latents = interpolation(torch.stack(starts), n)
        labels = None if first_labels is None else first_labels.expand(latents.shape[0])
        with autocast(self.device, self.amp_dtype):
            return family.decode(truncate(latents, truncation), labels).float()

    def invert(self, image: torch.Tensor | str | Path, label: Any = None, seed: int = 0, *, steps: int = 300,
               restarts: int = 4) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
        """GAN inversion of one image (a path or (1, C, H, W) in [-1, 1]): (latent, label, reconstruction)."""
        family = self._require("encode", "inversion")
        options = self.settings("encode", label=label, steps=steps, restarts=restarts).given()
        image = self._one_image(image)
        z, labels = family.encode(image, generator=self._generator(seed), **options)
        return z, labels, family.decode(z, labels).float()

    def variations(self, image: torch.Tensor | str | Path, n: int = 4, seed: int = 0, strength: float = 0.3,
                   label: Any = None, *, steps: int = 300, restarts: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
        """(reconstruction, n variations) of a user's image: its inverted latent blended with fresh latents
        by ``strength`` (0: the reconstruction itself, 1: unrelated samples; ``sampling.latent.blend``)."""
        from genforge.sampling.latent import blend

        self._require("variations", "variations of an image")
        self.settings("variations", strength=strength, label=label, steps=steps, restarts=restarts)
        check_count(n, "the number of variations", batches.MAX_REFINE)
        z, labels, reconstruction = self.invert(image, label, seed, steps=steps, restarts=restarts)
        family = self.family
        noise = family.sample_latents(n, self._generator(seed + 1))
        zs = blend(z.expand(n, -1), noise, strength)
        return reconstruction, family.decode(zs, None if labels is None else labels.expand(n)).float()

    def interpolate_images(self, a: torch.Tensor | str | Path, b: torch.Tensor | str | Path, n: int = 8,
                           seed: int = 0, **encode_options: Any) -> torch.Tensor:
        """``n`` images along the spherical path between the latents of two images (paths or (1, C, H, W)):
        the first and last are their reconstructions. A class-conditional decoder keeps ``a``'s label."""
        from genforge.sampling.latent import interpolation

        family = self._require("interpolate", "interpolation between images")
        options = self.settings("encode", **encode_options).given()
        check_count(n, "the number of images", batches.MAX_REFINE)
        za, labels = family.encode(self._one_image(a), generator=self._generator(seed), **options)
        zb, _ = family.encode(self._one_image(b), generator=self._generator(seed), **options)
        path = interpolation(torch.cat([za, zb]), n)
        return family.decode(path, None if labels is None else labels.expand(n)).float()

    def edit_attribute(self, image: torch.Tensor | str | Path, source: Any, target: Any,
                       strengths: Sequence[float] = (0.0, 0.5, 1.0, 1.5), seed: int = 0, per_label: int = 200,
                       **encode_options: Any) -> torch.Tensor:
        """Move an image's latent along an attribute vector: the mean latent of up to ``per_label`` training
        images labelled ``target`` minus that of images labelled ``source`` (class ids or names), scaled by
        each of ``strengths``; returns one image per strength (0 is the reconstruction)."""
        from genforge.modalities import prepare
        from genforge.nets.conv import resolve_labels

        family = self._require("attribute", "attribute editing")
        self.settings("attribute", per_label=per_label)
        options = self.settings("encode", **encode_options).given()
        check_count(len(strengths), "the number of strengths", batches.MAX_REFINE)
        if not self.spec.num_classes:
            raise ConfigError(f"attribute vectors need labelled data; {self.run.config.data.source} has no labels")
        ids = resolve_labels([source, target], 2, self.spec.num_classes, self.spec.class_names, None, torch.device("cpu"))
        train = prepare(self.run.config.data.source, self.run.config.data, progress=False).train
        labels = torch.as_tensor(train.labels)
        chosen = torch.cat([torch.nonzero(labels == int(i)).flatten()[:per_label] for i in ids])
        batch = train.get(chosen.numpy())
        vector = family.attribute_vector(batch["x"].to(self.device), batch["y"].to(self.device), int(ids[0]), int(ids[1]))
        z, found = family.encode(self._one_image(image), generator=self._generator(seed), **options)
        steps = torch.tensor([float(s) for s in strengths], device=z.device)[:, None]
        return family.decode(z + steps * vector, None if found is None else found.expand(len(steps))).float()

    def _one_image(self, image: Any) -> torch.Tensor:
        image = self.load_image(image) if isinstance(image, (str, Path)) else image
        if not torch.is_tensor(image) or image.dim() != 4 or image.shape[0] != 1:
            raise ConfigError(f"expected one input image shaped (1, C, H, W), got {getattr(image, 'shape', type(image).__name__)}")
        return image

    def _refine_images(self, capability: str, image: Any, n: int, seed: int, inputs: dict[str, Any],
                       settings: dict[str, Any]) -> torch.Tensor:
        """A declared image-refinement capability (the family method of that name) on ``n`` copies of ``image``."""
        self._require(capability, capability)
        options = self.settings(capability, **settings).given()
        check_count(n, "the number of samples", batches.MAX_REFINE)
        image = self._one_image(image)
        with autocast(self.device, self.amp_dtype):
            out = getattr(self.family, capability)(image.expand(n, *image.shape[1:]), generator=self._generator(seed),
                                                   **inputs, **options)
        return out.float()
