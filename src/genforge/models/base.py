"""A trained run, ready to use: ``genforge.load("runs/NAME")`` returns one of these.

``Model`` serves what every run can do (sample, save samples, describe itself); the classes beside it
add what runs of one kind of data serve: ``ImageModel`` (``images.py``: img2img, inpainting, latent
tools) and ``TextModel`` (``text.py``: prompts, stop strings, streaming, fill-in-the-middle). The
modality of a run names its class (``Modality.model_kind``); a run's capabilities are those its
family declares and its class serves (``serves``), less those its data rules out.
"""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path
from typing import Any, Callable, ClassVar, Sequence

import torch

from genforge.config import check_count
from genforge.errors import ConfigError
from genforge.modalities import run_modality
from genforge.models import batches
from genforge.runs import Run
from genforge.train.device import autocast, autocast_dtype, resolve_device


class Model:
    """A trained run: ``genforge.load("runs/NAME").sample(16, seed=0)``."""

    serves: ClassVar[frozenset[str]] = frozenset({"sample", "likelihood"})
    prompt_is_file: ClassVar[bool] = False  # a prompt is a file's content to continue (music), not text

    def __init__(self, run: Run, device: str = "auto"):
        self.run = run
        self.device = resolve_device(device)
        self.modality, self.tokenizer = run_modality(run)  # first: an older run's spec is brought up to date
        self.family = run.load_family(self.device)
        self.spec = run.spec
        self.codec = self.modality.codec(self.spec, self.tokenizer)
        self.amp_dtype = autocast_dtype(self.device, run.config.train.precision)

    # ---- what this run can do --------------------------------------------------------------------
    @property
    def capabilities(self) -> dict:
        """Capability name -> settings dataclass: those the family declares (``families.capabilities``)
        and this class of model serves."""
        return {name: settings for name, settings in self.family.capabilities.items() if name in self.serves}

    def offers(self, capability: str) -> bool:
        return capability in self.capabilities

    def settings(self, capability: str, **values: Any):
        """The checked settings dataclass of ``capability`` for this run: one line naming what the run
        offers when it lacks the capability, or naming the bad value."""
        from genforge.families.capabilities import offered

        table = self.capabilities
        if capability not in table:
            raise ConfigError(f"{self.run.path} is a {self.run.config.family} run, which has no {capability}; "
                              f"it offers: {offered(table)}")
        settings = table[capability].make(values, self.run.config.family, capability)
        ranges = self.family.setting_ranges()  # what this model allows (steps up to its timesteps, ...)
        for f in fields(settings):
            value = getattr(settings, f.name)
            if value is None:
                continue
            if f.name in ranges:
                ranges[f.name].check(f.name, value, integer=f.metadata["kind"] == "int")
            if f.metadata["kind"] == "label":  # one of this run's classes (a run without classes takes none)
                self.family.labels_for(1, value, None)
        return settings

    def _require(self, capability: str, what: str):
        """The family, when this run offers ``capability`` (``what`` names it for the error)."""
        if not self.offers(capability):
            from genforge.families.capabilities import offered

            raise ConfigError(f"{what} needs a run that offers {capability}; {self.run.path} is a "
                              f"{self.run.config.family} run, which offers: {offered(self.capabilities)}")
        return self.family

    def describe_capabilities(self) -> dict[str, Any]:
        """The capability table as JSON (``genforge info RUN --json``): summaries, inputs, every option."""
        from genforge.families.capabilities import describe_table

        return describe_table(self.capabilities, self.family.setting_ranges())

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
                     "class_names": list(spec.class_names or []), "unit": self.modality.unit,
                     "writes": self.codec.suffix},
            "parameters": self.num_parameters,
            "step": self.run.model_step(),
            "last_training_record": training[-1] if training else None,
            "latest_eval": latest_result(self.run.path),
            "config": self.run.config.to_dict(),
            "capabilities": self.describe_capabilities(),
            "exports": list(type(self.family).exports),
        }

    @property
    def writes_images(self) -> bool:
        """Whether samples are written as images (image runs, and priors over VQ-VAE codes)."""
        return self.codec.suffix == ".png"

    @property
    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.family.parameters())

    def _generator(self, seed: int) -> torch.Generator:
        return torch.Generator(device=self.device).manual_seed(int(seed))

    # ---- sampling ---------------------------------------------------------------------------------
    def sample_tensors(self, n: int, seed: int = 0, prompt: str | None = None, **conditions: Any) -> tuple[torch.Tensor, int]:
        """Raw samples (images in [-1, 1], or token ids) and the prompt length in tokens.

        At most ``SAMPLE_BATCH`` items are generated at once (see ``batches.sample_batches``).
        """
        self._check_in_memory(n)
        parts, prompt_len = [], 0
        for _, k, batch_seed in batches.sample_batches(n, seed):
            out, prompt_len = self._sample_tensors(k, batch_seed, prompt, conditions)
            parts.append(out)
        return batches.concat(self._even(parts)), prompt_len

    def _even(self, parts: list[torch.Tensor]) -> list[torch.Tensor]:
        """Batches made the same width, where a modality's samples may differ in length."""
        return parts

    def _sample_tensors(self, n: int, seed: int, prompt: str | None, conditions: dict) -> tuple[torch.Tensor, int]:
        if prompt is not None:
            self._not_text()
        settings = self._family_settings(self.settings("sample", **conditions).given())
        settings.update(self.modality.sample_options(self.spec, self.tokenizer))
        with autocast(self.device, self.amp_dtype):
            out = self.family.sample(n, generator=self._generator(seed), **settings)
        return (out.float() if out.is_floating_point() else out), 0

    def check_sample(self, stop: Any = None, **conditions: Any) -> None:
        """What ``sample`` checks before it draws anything, without drawing: a one-line ConfigError for a bad
        setting (a front end that queues work, such as the studio, checks a request when it arrives)."""
        self._family_settings(self.settings("sample", **({"stop": stop} if stop else {}), **conditions).given())

    def _family_settings(self, settings: dict[str, Any]) -> dict[str, Any]:
        """Checked sample settings as the family takes them: the same here; a class for one kind of data
        turns what only its data can resolve (a table's category names) into what the family sees."""
        return settings

    def sample(self, n: int = 16, seed: int = 0, prompt: str | None = None, *,
               stop: str | Sequence[str] | None = None, **conditions: Any):
        """``n`` samples as users get them: images as a float tensor in [-1, 1] (n, C, H, W), texts as a
        list of strings (``TextModel``), what the run's codec decodes otherwise.

        At most ``SAMPLE_BATCH`` items are generated at once; up to that many, the result is the one
        batch that seed draws (see ``batches.sample_batches``). Everything is returned in memory: for
        many samples use ``save_samples``, which writes each batch as it finishes.
        """
        self._check_in_memory(n)
        parts = [self._sample_batch(k, batch_seed, prompt, stop, conditions)
                 for _, k, batch_seed in batches.sample_batches(n, seed)]
        return batches.concat(parts)

    def _sample_batch(self, n: int, seed: int, prompt: str | None, stop: Any, conditions: dict):
        """``sample`` of at most one batch."""
        if stop:
            self._not_text()
        return self.codec.decode(self._sample_tensors(n, seed, prompt, conditions)[0])

    def _not_text(self) -> None:
        raise ConfigError(f"--prompt and --stop do not apply to {self.run.path}, which holds {self.spec.modality} data; "
                          f"they apply to text runs")

    def _check_in_memory(self, n: Any) -> None:
        """``n`` samples returned together must fit in a share of the machine's memory (texts are small)."""
        from genforge.train.memory import describe_bytes, device_memory

        check_count(n, "the number of samples", batches.MAX_SAMPLES)
        shape = self.codec.item_shape(self.spec)
        if shape is None:
            return
        need = n * int(torch.tensor(shape).prod()) * 4
        capacity = device_memory(torch.device("cpu"))
        if capacity is not None and need > capacity * batches.IN_MEMORY_SHARE:
            raise ConfigError(f"{n:,} items of {' x '.join(map(str, shape))} need about {describe_bytes(need)} held "
                              f"in memory together, more than this machine can spare; write them to files in "
                              f"batches instead (Model.save_samples, genforge sample)")

    def sample_params(self, n: int, seed: int, prompt: str | None, stop: Any, conditions: dict) -> dict:
        """The settings recorded with samples (settings.json, PNG text chunks)."""
        from genforge.sampling.tokens import check_stops

        return {"family": self.run.config.family, "run": str(self.run.path), "seed": seed, "n": n,
                **({"prompt": prompt} if prompt else {}), **({"stop": list(check_stops(stop))} if stop else {}),
                **{k: (v if isinstance(v, (int, float, str, bool)) or v is None else str(v)) for k, v in conditions.items()}}

    def save_samples(self, n: int, out: str | Path, seed: int = 0, prompt: str | None = None, *,
                     stop: str | Sequence[str] | None = None, on_piece: Callable[[str], None] | None = None,
                     progress: bool = True, outputs: dict[str, Any] | None = None, **conditions: Any) -> list[Path]:
        """Write one file per sample into ``out`` (plus grid.png for images, and settings.json).

        ``outputs``: what the run's codec writes besides each sample, among those it offers
        (``codec.output_options``: music's {"audio": True} adds a .wav); they are recorded with the settings.

        Samples are generated ``SAMPLE_BATCH`` at a time and each batch is written as it finishes, so
        memory stays bounded for any ``n`` up to ``MAX_SAMPLES`` (a progress bar shows when there is
        more than one batch); grid.png shows the first ``GRID_MAX`` images. ``on_piece`` is for runs
        that stream (``TextModel``).
        """
        from tqdm.auto import tqdm

        check_count(n, "the number of samples", batches.MAX_SAMPLES)
        outputs = {k: v for k, v in (outputs or {}).items() if v is not None}
        offered = getattr(self.codec, "output_options", {})
        for key in outputs:
            if key not in offered:
                raise ConfigError(f"--{key.replace('_', '-')} does not apply to {self.run.path} ({self.spec.modality} "
                                  f"data); it applies to runs whose samples offer it: " + (", ".join(offered) or "none here"))
        params = {**self.sample_params(n, seed, prompt, stop, conditions), **outputs}
        paths: list[Path] = []
        shown: list = []  # the first items, which the preview (grid.png) shows
        plan = batches.sample_batches(n, seed)
        with tqdm(total=n, desc="sampling", unit="item", disable=not progress or len(plan) < 2) as bar:
            for start, k, batch_seed in plan:
                items = self._sample_batch(k, batch_seed, prompt, stop, conditions)
                paths += self.codec.write_items(items, out, params, start)
                if start < batches.GRID_MAX:
                    shown.append(items[:batches.GRID_MAX - start])
                bar.update(k)
        self.codec.finish(batches.concat([_cpu(part) for part in shown]), out, params)
        return paths


def _cpu(items):
    return items.cpu() if torch.is_tensor(items) else items
