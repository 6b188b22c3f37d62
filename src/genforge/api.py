"""The Python API under the command line: ``genforge.train``, ``genforge.load`` and ``Model``."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import torch

from genforge.config import TRAIN_RANGES, RunConfig, apply_overrides, check_count, check_ranges, check_types
from genforge.errors import ConfigError, RunError
from genforge.families import get_family
from genforge.runs import Run, complete_model_config
from genforge.sampling.tokens import check_stops, first_stop, held_back
from genforge.train.device import autocast, autocast_dtype, resolve_device


def make_config(
    family: str,
    data: str,
    *,
    steps: int | None = None,
    overrides: Sequence[str] = (),
    **train: Any,
) -> RunConfig:
    """A full run config: TrainConfig defaults, then the family's defaults, then the caller's values."""
    family_cls = get_family(family)
    d: dict[str, Any] = {"family": family, "data": {"source": data}, "train": dict(family_cls.train_defaults),
                         "model": dict(getattr(family_cls, "model_defaults", {}))}
    if steps is not None:
        d["train"]["steps"] = steps
    d["train"].update({k: v for k, v in train.items() if v is not None})
    apply_overrides(d, list(overrides))
    config = RunConfig.from_dict(d)
    check_types(config.train, "train")
    check_types(config.data, "data")
    validate_train(config)
    complete_model_config(config)
    return config


def validate_train(config: RunConfig) -> None:
    """Every train.* value within its range (``config.TRAIN_RANGES``), and a known feature extractor."""
    check_ranges(config.train, TRAIN_RANGES, "train")
    from genforge.evaluate.extractors import EXTRACTORS

    if config.train.eval_features not in EXTRACTORS:
        raise ConfigError(f"unknown train.eval_features '{config.train.eval_features}'; expected one of: {', '.join(EXTRACTORS)}")


def train(
    family: str | None = None,
    data: str | None = None,
    out: str | Path | None = None,
    *,
    steps: int | None = None,
    overrides: Sequence[str] = (),
    resume: bool = False,
    progress: bool = True,
    on_step=None,
    log: Callable[[str], None] | None = None,
    **train_options: Any,
):
    """Train a family on a data source into the run directory ``out``; returns a ``TrainResult``.

    ``genforge.train(family="vae", data="mnist", out="runs/vae", steps=500)``.
    With ``resume=True`` the run's own config is used; ``steps`` may raise its total. A run stopped
    before its first checkpoint resumes from step 0 (``log`` is told so). One process trains a run at
    a time: a second one gets a one-line ``RunError`` naming the first.
    """
    from genforge.data import prepare
    from genforge.io import remove_stale_temps
    from genforge.runlock import RunLock
    from genforge.train.memory import out_of_memory
    from genforge.train.trainer import Trainer

    if out is None:
        raise ConfigError("an output run directory (--out) is required")
    if resume:
        Run.open(out)  # a clear error for a folder that is not a run, before anything is created
        lock = RunLock(out, "train").acquire()
    else:
        if family is None or data is None:
            raise ConfigError("training needs --family and --data")
        config = make_config(family, data, steps=steps, overrides=overrides, **train_options)
        Run.check_free(out)  # before preparing data; checked again under the lock, in Run.create
        prepared = prepare(config.data.source, config.data, progress=progress)
        family_cls = get_family(family)
        if prepared.spec.modality not in family_cls.modalities:
            raise ConfigError(
                f"family '{family}' does not handle {prepared.spec.modality} data ('{data}'); "
                f"it handles {', '.join(family_cls.modalities)}"
            )
        check_fits_in_memory(config, prepared.spec)
        lock = RunLock(out, "train").acquire()
    try:
        if resume:
            run = Run.open(out)
            if family is not None and family != run.config.family:
                raise ConfigError(f"{out} is a '{run.config.family}' run; cannot resume it as '{family}'")
            if steps is not None:
                run.config.train.steps = steps
            for key, value in train_options.items():
                if value is not None:
                    setattr(run.config.train, key, value)
            validate_train(run.config)
            prepared = prepare(run.config.data.source, run.config.data, progress=progress)
            if prepared.spec.to_dict() != run.spec.to_dict():
                raise RunError(f"the data source '{run.config.data.source}' changed since {out} was created; resume needs the same data")
            check_fits_in_memory(run.config, run.spec)
            remove_stale_temps(run.path)
            remove_stale_temps(run.samples_dir)
            if not run.state_path.is_file() and log is not None:
                log(f"note: {out} has no checkpoint yet (it stopped before its first one); "
                    f"training starts from step 0 with its saved config")
        else:
            run = Run.create(out, config, prepared.spec, prepared.tokenizer)
        model = run.build_family(seed=run.config.train.seed)
        trainer = Trainer(run, model, prepared, progress=progress, on_step=on_step)
        try:
            return trainer.fit(resume=resume)
        except (RuntimeError, MemoryError) as e:
            if not (isinstance(e, MemoryError) or out_of_memory(e)):
                raise
            raise ConfigError(f"out of memory at step {trainer.global_step} on {trainer.device}; choose a smaller --batch-size "
                              f"or model, then continue with --resume from the last checkpoint") from None
    finally:
        lock.release()


def check_fits_in_memory(config: RunConfig, spec) -> None:
    """Refuse, before anything is allocated, a model or batch that cannot fit in the training device's memory."""
    from genforge.train.memory import check_training_fits

    check_training_fits(config, spec, resolve_device(config.train.device))


class Model:
    """A trained run, ready to sample: ``genforge.load("runs/NAME").sample(16, seed=0)``."""

    def __init__(self, run: Run, device: str = "auto"):
        from genforge.data.codecs import codec_for

        self.run = run
        self.device = resolve_device(device)
        self.family = run.load_family(self.device)
        self.spec = run.spec
        self.tokenizer = run.load_tokenizer()
        self.codec = codec_for(self.spec, self.tokenizer)
        self.amp_dtype = autocast_dtype(self.device, run.config.train.precision)

    @property
    def capabilities(self) -> dict:
        """What this run can do: its family's declared capabilities (name -> settings dataclass), less those
        its data rules out (fill-in-the-middle needs a run trained with --fim-rate; a prior over VQ-VAE
        codes writes images, so it has no text streaming, continuation or infill)."""
        table = dict(self.family.capabilities)
        if self.writes_images and self.spec.modality != "image":
            for name in ("stream", "continue", "infill"):
                table.pop(name, None)
        elif "infill" in table and (not self.run.config.data.fim_rate or self.tokenizer.fim_ids() is None):
            del table["infill"]
        return table

    def offers(self, capability: str) -> bool:
        return capability in self.capabilities

    def settings(self, capability: str, **values: Any):
        """The checked settings dataclass of ``capability`` for this run (``families.capabilities``): one
        line naming what the run offers when it lacks the capability, or naming the bad value."""
        from genforge.families.capabilities import offered

        table = self.capabilities
        if capability not in table:
            raise ConfigError(f"{self.run.path} is a {self.run.config.family} run, which has no {capability}; "
                              f"it offers: {offered(table)}")
        return table[capability].make(values, self.run.config.family, capability)

    def describe_capabilities(self) -> dict[str, Any]:
        """The capability table as JSON (``genforge info RUN --json``): summaries, inputs, every option."""
        from genforge.families.capabilities import describe_table

        return describe_table(self.capabilities)

    def describe(self) -> dict[str, Any]:
        """What ``genforge info`` shows, JSON-ready: family, data, parameters, progress, the last training
        record, the latest evaluation, the full config and the capability table with every option."""
        from genforge.evaluate.results import latest_result

        training = [rec for rec in self.run.read_metrics() if "items_per_s" in rec]  # eval/* records aside
        spec = self.spec
        return {
            "run": str(self.run.path),
            "family": self.run.config.family,
            "data": {"source": self.run.config.data.source, "modality": spec.modality, "shape": list(spec.shape),
                     "vocab_size": spec.vocab_size, "num_classes": spec.num_classes,
                     "class_names": list(spec.class_names or [])},
            "parameters": self.num_parameters,
            "step": self.run.model_step(),
            "last_training_record": training[-1] if training else None,
            "latest_eval": latest_result(self.run.path),
            "config": self.run.config.to_dict(),
            "capabilities": self.describe_capabilities(),
        }

    @property
    def writes_images(self) -> bool:
        """Whether samples are images: image runs, and transformer priors over VQ-VAE codes (``codes:``)."""
        return self.spec.modality == "image" or getattr(self.tokenizer, "type", None) == "codes"

    def _sample_code_images(self, n: int, seed: int, prompt: str | None, stop: Any, conditions: dict) -> torch.Tensor:
        """A prior over code grids: one grid of tokens after end-of-text per sample, decoded through the VQ-VAE."""
        if prompt is not None or stop:
            raise ConfigError(f"{self.run.path} is a prior over VQ-VAE codes: its samples are images, so --prompt "
                              "and --stop do not apply")
        settings = self.settings("sample", **conditions).given()
        settings["max_new_tokens"] = self.tokenizer.grid_tokens
        with autocast(self.device, self.amp_dtype):
            tokens = self.family.sample(n, generator=self._generator(seed), prompt=[self.tokenizer.eot_id], **settings)
        return self.codec.decode_images(tokens, prompt_len=1)

    @property
    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.family.parameters())

    def _generator(self, seed: int) -> torch.Generator:
        return torch.Generator(device=self.device).manual_seed(int(seed))

    def sample_tensors(self, n: int, seed: int = 0, prompt: str | None = None, **conditions: Any) -> tuple[torch.Tensor, int]:
        """Raw samples (images in [-1, 1], or token ids) and the prompt length in tokens.

        Text rows end at their end-of-text token (end-of-text after it); stop strings need ``sample``.
        At most ``SAMPLE_BATCH`` items are generated at once (see ``sample_batches``).
        """
        self._check_in_memory(n)
        parts, prompt_len = [], 0
        for _, k, batch_seed in sample_batches(n, seed):
            out, prompt_len = self._sample_tensors(k, batch_seed, prompt, conditions)
            parts.append(out)
        width = max(part.shape[-1] for part in parts)
        if self.spec.modality == "text" and any(part.shape[-1] != width for part in parts):
            # batches of text that ended early are shorter: pad with end-of-text, as their rows already end
            parts = [torch.nn.functional.pad(part, (0, width - part.shape[-1]), value=self.tokenizer.eot_id)
                     for part in parts]
        return _concat(parts), prompt_len

    def _sample_tensors(self, n: int, seed: int, prompt: str | None, conditions: dict) -> tuple[torch.Tensor, int]:
        conditions = self.settings("sample", **conditions).given()
        prompt_len = 0
        if self.spec.modality == "text":
            tokens = self._prompt_tokens(prompt)
            conditions.update(prompt=tokens, stop_at_end=True)
            prompt_len = len(tokens)
        elif prompt is not None:
            raise ConfigError(f"--prompt applies to text runs; {self.run.path} is an image run")
        with autocast(self.device, self.amp_dtype):
            out = self.family.sample(n, generator=self._generator(seed), **conditions)
        return (out.float() if out.is_floating_point() else out), prompt_len

    def sample(self, n: int = 16, seed: int = 0, prompt: str | None = None, *,
               stop: str | Sequence[str] | None = None, **conditions: Any):
        """Images as a float tensor in [-1, 1] (n, C, H, W), or a list of generated texts (prompt included).

        A text ends at the model's end-of-text token or just before the first of the ``stop`` strings
        in its continuation, whichever comes first; generation ends once every text has ended.
        Text runs take the decoding controls max_new_tokens, temperature, top_k, top_p, min_p and
        repetition_penalty (see ``genforge.sampling.tokens``). With ``n == 1`` the text is exactly
        ``"".join(self.stream(prompt, seed, ...))`` for the same settings.

        At most ``SAMPLE_BATCH`` items are generated at once; up to that many, the result is the one
        batch that seed draws (see ``sample_batches``). Everything is returned in memory: for many
        samples use ``save_samples``, which writes each batch as it finishes.
        """
        self._check_in_memory(n)
        parts = [self._sample_batch(k, batch_seed, prompt, stop, conditions) for _, k, batch_seed in sample_batches(n, seed)]
        return _concat(parts)

    def _sample_batch(self, n: int, seed: int, prompt: str | None, stop: Any, conditions: dict):
        """``sample`` of at most one batch: a tensor of images, or a list of texts."""
        if self.spec.modality != "text":
            self._no_stop(stop)
            return self._sample_tensors(n, seed, prompt, conditions)[0]
        if self.writes_images:
            return self._sample_code_images(n, seed, prompt, stop, conditions)
        settings = self.settings("sample", stop=stop, **conditions).given()
        stops = check_stops(settings.pop("stop", None))
        tokens = self._prompt_tokens(prompt)
        prompt_text = self.tokenizer.decode(tokens)
        done = [False] * n

        def continuation(row) -> str:
            return self.codec.decode_one(row, len(tokens))[len(prompt_text):]

        def should_stop(ids: torch.Tensor) -> list[bool]:
            ids = ids.cpu()
            for i in range(n):
                done[i] = done[i] or first_stop(continuation(ids[i]), stops) >= 0
            return done

        with autocast(self.device, self.amp_dtype):
            out = self.family.sample(n, generator=self._generator(seed), prompt=tokens, stop_at_end=True,
                                     should_stop=should_stop if stops else None, **settings)
        texts = [continuation(row) for row in out.cpu()]
        return [prompt_text + (text[:cut] if (cut := first_stop(text, stops)) >= 0 else text) for text in texts]

    def _check_in_memory(self, n: Any) -> None:
        """``n`` samples returned together must fit in a share of the machine's memory (images; texts are small)."""
        from genforge.train.memory import describe_bytes, device_memory

        check_count(n, "the number of samples", MAX_SAMPLES)
        if self.writes_images:
            shape = self.codec_image_shape
            need = n * int(torch.tensor(shape).prod()) * 4
            capacity = device_memory(torch.device("cpu"))
            if capacity is not None and need > capacity * IN_MEMORY_SHARE:
                raise ConfigError(f"{n:,} images of {' x '.join(map(str, shape))} need about {describe_bytes(need)} held "
                                  f"in memory together, more than this machine can spare; write them to files in "
                                  f"batches instead (Model.save_samples, genforge sample)")

    @property
    def codec_image_shape(self) -> tuple[int, ...]:
        """The (C, H, W) of the images this run writes."""
        return tuple(self.spec.shape) if self.spec.modality == "image" else tuple(self.codec.vq.spec.shape)

    def infill(self, prefix: str, suffix: str, seed: int = 0, *, max_new_tokens: int = 256, **decoding: Any) -> str:
        """Fill in the middle: the text that belongs between ``prefix`` and ``suffix``, for text runs
        trained with ``--fim-rate`` (see ``genforge.data.fim``). Generation ends at end-of-text.

        When prefix and suffix do not fit the context together with the middle, the text nearest the
        gap is kept (the end of the prefix, the start of the suffix).
        """
        from genforge.data.fim import FimIds, psm

        if self.spec.modality != "text":
            raise ConfigError(f"fill-in-the-middle applies to text runs; {self.run.path} is an image run")
        if "infill" in self.family.capabilities and not self.offers("infill"):
            raise ConfigError(f"{self.run.path} was not trained for fill-in-the-middle; "
                              "train a run with --fim-rate 0.5 (a share of windows in prefix-suffix-middle order)")
        decoding = self.settings("infill", **decoding).given()
        if not isinstance(max_new_tokens, int) or isinstance(max_new_tokens, bool) or max_new_tokens < 1:
            raise ConfigError(f"max_new_tokens must be a positive integer, got {max_new_tokens!r}")
        fim = self.tokenizer.fim_ids()
        ids = FimIds(*fim, end=self.tokenizer.eot_id)
        before, after = self.tokenizer.encode(prefix), self.tokenizer.encode(suffix)
        block = self.spec.shape[0]
        room = block - 3 - min(max_new_tokens, block // 2)  # context left for prefix and suffix
        if len(before) + len(after) > room:
            keep_after = min(len(after), room // 2)
            keep_before = min(len(before), room - keep_after)
            keep_after = min(len(after), room - keep_before)
            before, after = before[len(before) - keep_before:], after[:keep_after]
        prompt = psm(before, [], after, ids)
        specials = set(self.tokenizer.special_ids.values())

        def should_stop(tokens: torch.Tensor) -> list[bool]:
            return [bool(set(row[len(prompt):].tolist()) & specials) for row in tokens.cpu()]

        with autocast(self.device, self.amp_dtype):
            out = self.family.sample(1, generator=self._generator(seed), prompt=prompt, max_new_tokens=max_new_tokens,
                                     should_stop=should_stop, **decoding)
        new = out[0, len(prompt):].tolist()
        end = next((i for i, t in enumerate(new) if t in specials), len(new))
        return self.tokenizer.decode(new[:end])

    def load_image(self, path: str | Path) -> torch.Tensor:
        """An image file as (1, C, H, W) in [-1, 1], resized and converted to this run's image shape."""
        self._need_images("loading an input image")
        return self.codec.load(path, self.spec.shape)

    def load_mask(self, path: str | Path, like: str | Path | None = None) -> torch.Tensor:
        """A mask image as (1, 1, H, W) of 0/1: white (brighter than mid-grey) marks the pixels to generate.

        The mask file must have the size of the image file ``like`` (the input it goes with) or, without
        one, of this run's images: a mask of another size is refused, never silently resized."""
        from genforge.data.codecs import pixel_size

        self._need_images("loading a mask")
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
                    MAX_GRID_SIDE if len(seeds) == 4 else MAX_REFINE)
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
        check_count(n, "the number of variations", MAX_REFINE)
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
        check_count(n, "the number of images", MAX_REFINE)
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
        from genforge.data import prepare
        from genforge.nets.conv import resolve_labels

        family = self._require("attribute", "attribute editing")
        self.settings("attribute", per_label=per_label)
        options = self.settings("encode", **encode_options).given()
        check_count(len(strengths), "the number of strengths", MAX_REFINE)
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

    def _require(self, capability: str, what: str):
        """The family, when this run offers ``capability`` (``what`` names it for the error)."""
        self._need_images(what)
        if not self.offers(capability):
            from genforge.families.capabilities import offered

            raise ConfigError(f"{what} needs a run that offers {capability}; {self.run.path} is a "
                              f"{self.run.config.family} run, which offers: {offered(self.capabilities)}")
        return self.family

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
        check_count(n, "the number of samples", MAX_REFINE)
        image = self._one_image(image)
        with autocast(self.device, self.amp_dtype):
            out = getattr(self.family, capability)(image.expand(n, *image.shape[1:]), generator=self._generator(seed),
                                                   **inputs, **options)
        return out.float()

    def _need_images(self, what: str) -> None:
        if self.spec.modality != "image":
            raise ConfigError(f"{what} applies to image runs; {self.run.path} is a {self.spec.modality} run")

    def stream(
        self,
        prompt: str | None = None,
        seed: int = 0,
        *,
        stop: str | Sequence[str] | None = None,
        **decoding: Any,
    ) -> Iterator[str]:
        """One text sample, as pieces of text while it is generated: the prompt first, then new text.

        ``decoding`` takes max_new_tokens and ``sample``'s controls (temperature, top_k, top_p, min_p,
        repetition_penalty; None: the family's default). The pieces join to
        ``self.sample(1, seed, prompt, ...)[0]`` with the same settings. A piece is shown only once it
        is final: text that could still become a stop string, and a half-decoded multi-byte character
        (U+FFFD), wait for the next token. Settings are checked here, before the first piece.
        """
        if self.spec.modality != "text":
            raise ConfigError(f"streaming applies to text runs; {self.run.path} is an image run")
        settings = self.settings("stream", stop=stop, **decoding).given()
        stops = check_stops(settings.pop("stop", None))
        tokens = self._prompt_tokens(prompt)
        columns = self.family.sample_stream(1, generator=self._generator(seed), prompt=tokens, stop_at_end=True,
                                            **settings)
        return self._stream_text(columns, tokens, stops)

    def _stream_text(self, columns: Iterator[torch.Tensor], tokens: list[int], stops: tuple[str, ...]) -> Iterator[str]:
        prompt_text = self.tokenizer.decode(tokens)
        if prompt_text:
            yield prompt_text
        ids, shown, text = list(tokens), 0, ""
        try:
            while True:
                with autocast(self.device, self.amp_dtype):  # only around model work, not the caller's code
                    column = next(columns, None)
                if column is None:
                    break
                ids.append(int(column[0]))
                # Decode everything again: a byte-level tokenizer's text for one token depends on its neighbours.
                text = self.codec.decode_one(ids, len(tokens))[len(prompt_text):]
                cut = first_stop(text, stops)
                if cut >= 0:
                    text = text[:cut]
                    break
                ready = len(text) - held_back(text, stops)
                if ready > shown:
                    yield text[shown:ready]
                    shown = ready
        finally:
            columns.close()  # puts the model back in its mode at once, even when the caller stops early
        if len(text) > shown:
            yield text[shown:]

    def save_samples(self, n: int, out: str | Path, seed: int = 0, prompt: str | None = None, *,
                     stop: str | Sequence[str] | None = None, on_piece: Callable[[str], None] | None = None,
                     progress: bool = True, **conditions: Any) -> list[Path]:
        """Write one file per sample into ``out`` (plus grid.png for images and settings.json).

        Samples are generated ``SAMPLE_BATCH`` at a time and each batch is written as it finishes, so
        memory stays bounded for any ``n`` up to ``MAX_SAMPLES`` (a progress bar shows when there is
        more than one batch); grid.png shows the first ``GRID_MAX`` images.
        For one text sample, ``on_piece`` (if given) gets the text while it is generated (``stream``).
        """
        from tqdm.auto import tqdm

        check_count(n, "the number of samples", MAX_SAMPLES)
        params = {"family": self.run.config.family, "run": str(self.run.path), "seed": seed, "n": n,
                  **({"prompt": prompt} if prompt else {}), **({"stop": list(check_stops(stop))} if stop else {}),
                  **{k: (v if isinstance(v, (int, float, str, bool)) or v is None else str(v)) for k, v in conditions.items()}}
        if on_piece is not None and n == 1 and not self.writes_images:
            pieces = []
            for piece in self.stream(prompt, seed, stop=stop, **conditions):
                on_piece(piece)
                pieces.append(piece)
            return self.codec.save_texts(["".join(pieces)], out, params)
        paths: list[Path] = []
        shown: list[torch.Tensor] = []  # the images grid.png shows
        batches = sample_batches(n, seed)
        with tqdm(total=n, desc="sampling", unit="item", disable=not progress or len(batches) < 2) as bar:
            for start, k, batch_seed in batches:
                items = self._sample_batch(k, batch_seed, prompt, stop, conditions)
                if self.writes_images:
                    paths += self.codec_images.write_items(items, out, params, start)
                    if start < GRID_MAX:
                        shown.append(items[:GRID_MAX - start].cpu())
                else:
                    paths += self.codec.save_texts(items, out, params, start, settings=False)
                bar.update(k)
        if self.writes_images:
            self.codec_images.finish(torch.cat(shown), out, params)
        else:
            self.codec.save_texts([], out, params)  # settings.json, once every sample is written
        return paths

    @property
    def codec_images(self):
        """The image codec this run's samples are written with (a codes prior's decodes through its VQ-VAE)."""
        return self.codec if self.spec.modality == "image" else self.codec.images

    def _prompt_tokens(self, prompt: str | None) -> list[int]:
        """A text run's start: the end-of-text token (a document boundary), then the encoded prompt."""
        if prompt is not None and not isinstance(prompt, str):
            raise ConfigError(f"prompt must be a string, got {type(prompt).__name__}")
        return [self.tokenizer.eot_id] + (self.tokenizer.encode(prompt) if prompt else [])

    def _no_stop(self, stop: Any) -> None:
        if stop:
            raise ConfigError(f"stop strings apply to text runs; {self.run.path} is an image run")


SAMPLE_BATCH = 256  # items generated at once: memory stays bounded whatever the number of samples
MAX_SAMPLES = 999_999  # per call: sample files are numbered 000000 to 999999
MAX_REFINE = 1024  # results of one refine call, held in memory together
MAX_GRID_SIDE = 64  # an interpolation grid between 4 seeds is at most this many images on a side
GRID_MAX = 256  # grid.png shows at most this many images (the first ones)
IN_MEMORY_SHARE = 0.25  # of the machine's memory that samples returned together may take


def sample_batches(n: int, seed: int) -> list[tuple[int, int, int]]:
    """``(start, size, seed)`` of each batch of ``n`` samples. The first batch uses ``seed`` itself, so
    up to ``SAMPLE_BATCH`` samples are exactly what one call with that seed draws; later batches use
    seeds derived from it (and from their index), so every sample is reproducible."""
    from genforge.train.trainer import step_seed

    return [(start, min(SAMPLE_BATCH, n - start), seed if start == 0 else step_seed(seed, start // SAMPLE_BATCH))
            for start in range(0, n, SAMPLE_BATCH)]


def _concat(parts: list):
    """Batches joined: one tensor, or one list of texts."""
    if isinstance(parts[0], list):
        return [item for part in parts for item in part]
    return parts[0] if len(parts) == 1 else torch.cat(parts)


def load(run: str | Path, device: str = "auto") -> Model:
    """Load a trained run for sampling."""
    return Model(Run.open(run), device=device)
