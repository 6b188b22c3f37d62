"""What `genforge refine` and `genforge sample --interpolate` do, as one Python call each, so the command
line, a notebook and the web studio get the same behaviour: choose the mode from the inputs given, run
it through the model's declared capabilities, and write the results with their layout (one PNG per
result, grid.png, comparison.png or strip.png, settings.json, the parent and settings in every PNG).

    from genforge.refine import refine
    done = refine(genforge.load("runs/diff"), input="photo.png", mask="holes.png", n=4)
    done.mode, done.out, done.paths
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch

from genforge.models import ImageModel, Model, TextModel
from genforge.errors import ConfigError
from genforge.io import atomic_write_text

DEFAULT_LATENT_STRENGTH = 0.3  # variations around an inverted image
DEFAULT_ATTRIBUTE_STRENGTH = 1.5  # the furthest step along an attribute vector
DEFAULT_INVERSION_STEPS = 300


@dataclass
class Refined:
    mode: str  # inpaint | img2img | variations | interpolate | attribute | infill | continue
    out: Path  # the folder written (the file, for infill)
    paths: list[Path]  # one per result
    text: str | None = None  # infill: the middle
    details: dict[str, Any] = field(default_factory=dict)  # e.g. the inversion's pixel error


def refine(model: Model, *, input: str | Path | None = None, mask: str | Path | None = None,
           strength: float | None = None, n: int = 4, towards: str | Path | None = None, attribute: str | None = None,
           prefix: str | None = None, suffix: str | None = None, out: str | Path | None = None, seed: int = 0,
           **settings: Any) -> Refined:
    """Refine content with the run's capabilities and write the results (default folder RUN/refined/...).

    Images (``input``): with ``mask``, inpaint; with ``strength`` on a diffusion run, img2img; on a latent
    family (GAN, VAE), variations around the inverted input (``strength``, default 0.3), a walk to
    ``towards``, or a move along ``attribute`` ("SOURCE:TARGET" labels). Music (``input`` a MIDI or MusicXML
    file): the transformer continues it; piano-roll runs refine its first four bars as images (``mask``: the
    bars to regenerate, "2-3"). Text (``prefix``/``suffix``): fill in the middle. ``settings`` are the capability's options (steps, sampler, label, guidance, ...;
    text: max_new_tokens, temperature, top_k, top_p)."""
    settings = {k: v for k, v in settings.items() if v is not None}
    text_mode = prefix is not None or suffix is not None
    if input is None and not text_mode:
        raise ConfigError("refine needs --input IMAGE (with --mask or --strength) for image runs, "
                          "or --prefix-file/--suffix-file for text runs")
    if input is not None and text_mode:
        raise ConfigError("use either --input (images) or --prefix-file/--suffix-file (text), not both")
    if text_mode:
        _expect(model, TextModel, "--prefix-file/--suffix-file (fill in the middle)", "text")
        return _infill(model, prefix or "", suffix or "", out, seed, settings)
    if model.prompt_is_file and model.offers("continue"):  # music events, code priors: --input is continued n times
        return _continue(model, Path(input), n, out, seed, {**settings, **({} if mask is None else {"mask": str(mask)})})
    _expect(model, ImageModel, "--input", "image")
    image = model.load_image(input)
    if model.offers("inpaint") or model.offers("img2img"):
        return _denoise(model, Path(input), image, mask, strength, n, towards, attribute, out, seed, settings)
    return _latent(model, Path(input), image, mask, strength, n, towards, attribute, out, seed, settings)


def _expect(model: Model, cls: type, what: str, kind: str) -> None:
    if not isinstance(model, cls):
        raise ConfigError(f"{what} applies to {kind} runs; {model.run.path} holds {model.spec.modality} data "
                          f"(it offers: {', '.join(model.capabilities)})")


def _infill(model: Model, prefix: str, suffix: str, out: str | Path | None, seed: int, settings: dict) -> Refined:
    middle = model.infill(prefix, suffix, seed=seed, **settings)
    path = Path(out) if out is not None else model.run.path / "refined" / f"middle-seed-{seed}.txt"
    atomic_write_text(path, middle)
    return Refined("infill", path, [path], text=middle)


def _continue(model: Model, input: Path, n: int, out: str | Path | None, seed: int, settings: dict) -> Refined:
    """``n`` continuations of the piece in ``input``, each beginning with it (``MusicModel``)."""
    folder = Path(out) if out is not None else _default_out(model, input, "continue", seed)
    paths = model.save_samples(n, folder, seed=seed, prompt=str(input), progress=False, **settings)
    return Refined("continue", folder, paths)


def _params(model: Model, mode: str, input: Path, seed: int, **extra: Any) -> dict[str, Any]:
    return {"family": model.run.config.family, "run": str(model.run.path), "mode": mode, "parent": str(input),
            "seed": seed, **{k: v for k, v in extra.items() if v is not None}}


def _default_out(model: Model, input: Path, mode: str, seed: int) -> Path:
    return model.run.path / "refined" / f"{input.stem}-{mode}-seed-{seed}"


def _denoise(model: Model, input: Path, image: torch.Tensor, mask, strength, n: int, towards, attribute, out,
             seed: int, settings: dict) -> Refined:
    latent_only = [name for name, value in (("--towards", towards), ("--attribute", attribute)) if value is not None]
    if latent_only:
        raise ConfigError(f"{', '.join(latent_only)} work in a latent space (gan, vae runs), not in a "
                          f"{model.run.config.family} run")
    if (mask is None) == (strength is None):
        raise ConfigError("image refinement needs exactly one of --mask MASK (inpaint) or --strength S (img2img)")
    if mask is not None:
        mask_t = model.load_mask(mask, like=input)
        results = model.inpaint(image, mask_t, n=n, seed=seed, **settings)
        mode, shown = "inpaint", [image, image * (1 - mask_t)]  # the input, then what the model was shown
    else:
        results = model.img2img(image, strength, n=n, seed=seed, **settings)
        mode, shown = "img2img", [image]
    out = Path(out) if out is not None else _default_out(model, input, mode, seed)
    params = _params(model, mode, input, seed, n=n, **({"mask": str(mask)} if mask is not None else {"strength": strength}),
                     **settings)
    paths = model.codec.save(results, out, params)
    model.codec.grid(torch.cat([*shown, results.cpu()]), out / "comparison.png", params)
    return Refined(mode, out, paths)


def _latent(model: Model, input: Path, image: torch.Tensor, mask, strength, n: int, towards, attribute, out,
            seed: int, settings: dict) -> Refined:
    family = model.run.config.family
    if mask is not None:
        raise ConfigError(f"--mask (inpainting) is a diffusion capability; a {family} run refines "
                          "by inverting --input and drawing variations (--strength)")
    unused = [f"--{k}" for k in ("sampler", "guidance") if settings.get(k) is not None]
    if unused:
        raise ConfigError(f"{', '.join(unused)} apply to diffusion runs, not {family}")
    if towards is not None and attribute is not None:
        raise ConfigError("use one of --towards (interpolate) and --attribute (edit), not both")
    steps = settings.get("steps") or DEFAULT_INVERSION_STEPS
    label = settings.get("label")
    if towards is not None:
        results = model.interpolate_images(image, model.load_image(towards), n=max(n, 2), seed=seed, steps=steps)
        return _strip(model, input, image, results, "interpolate", out, seed, towards=str(towards))
    if attribute is not None:
        source, sep, target = str(attribute).partition(":")
        if not sep or not source or not target:
            raise ConfigError(f"--attribute takes SOURCE:TARGET labels, e.g. 3:8; got '{attribute}'")
        top = DEFAULT_ATTRIBUTE_STRENGTH if strength is None else strength
        strengths = [top * i / max(n - 1, 1) for i in range(n)]
        results = model.edit_attribute(image, source, target, strengths, seed=seed, steps=steps)
        return _strip(model, input, image, results, "attribute", out, seed, attribute=attribute, strengths=strengths)
    strength = DEFAULT_LATENT_STRENGTH if strength is None else strength
    reconstruction, results = model.variations(image, n=n, seed=seed, strength=strength, label=label, steps=steps)
    error = float((reconstruction.cpu() - image).pow(2).mean())
    out = Path(out) if out is not None else _default_out(model, input, "variations", seed)
    params = _params(model, "variations", input, seed, n=n, strength=strength, inversion_steps=steps,
                     inversion_mse=round(error, 6), label=label)
    paths = model.codec.save(results, out, params)
    model.codec.save(reconstruction, out / "reconstruction", params)
    model.codec.grid(torch.cat([image, reconstruction.cpu(), results.cpu()]), out / "comparison.png", params)
    return Refined("variations", out, paths, details={"inversion_mse": error})


def _strip(model: Model, input: Path, image: torch.Tensor, results: torch.Tensor, mode: str, out, seed: int,
           **extra: Any) -> Refined:
    """Results that read left to right (a walk, an attribute edit): comparison.png is the input, then them."""
    out = Path(out) if out is not None else _default_out(model, input, mode, seed)
    params = _params(model, mode, input, seed, **extra)
    paths = model.codec.save(results, out, params)
    model.codec.grid(torch.cat([image, results.cpu()]), out / "comparison.png", params, columns=len(paths) + 1)
    return Refined(mode, out, paths)


def sample_interpolation(model: Model, seeds: Sequence[int] | str, n: int = 8, label: Any = None,
                         truncation: float | None = None, out: str | Path | None = None) -> Refined:
    """`genforge sample --interpolate`: images along the latent path between 2 seeds (a strip of ``n``,
    also written as strip.png) or 4 seeds (an n x n grid), written like samples."""
    if isinstance(seeds, str):
        try:
            seeds = [int(s) for s in seeds.split(",")]
        except ValueError:
            raise ConfigError(f"--interpolate takes 2 or 4 comma-separated seeds, e.g. 3,7; got '{seeds}'") from None
    seeds = [int(s) for s in seeds]
    _expect(model, ImageModel, "--interpolate", "image")
    images = model.interpolate(seeds, n=n, label=label, truncation=truncation)
    out = Path(out) if out is not None else model.run.path / "generated" / f"interpolate-{'-'.join(map(str, seeds))}"
    params = {"family": model.run.config.family, "run": str(model.run.path), "mode": "interpolate", "seeds": seeds,
              "n": n, **({"label": label} if label is not None else {}),
              **({"truncation": truncation} if truncation is not None else {})}
    paths = model.codec.save(images, out, params)
    if len(seeds) == 2:  # a strip reads left to right: one row, not grid.png's near-square layout
        model.codec.grid(images.cpu(), out / "strip.png", params, columns=len(paths))
    return Refined("interpolate", out, paths)
