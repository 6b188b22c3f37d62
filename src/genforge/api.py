"""The Python API under the command line: ``genforge.train``, ``genforge.load`` and ``Model``."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import torch

from genforge.config import RunConfig, apply_overrides, check_types
from genforge.errors import ConfigError, RunError
from genforge.families import get_family
from genforge.runs import Run, complete_model_config
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
    d: dict[str, Any] = {"family": family, "data": {"source": data}, "train": dict(family_cls.train_defaults), "model": {}}
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
    t = config.train
    if t.steps < 1:
        raise ConfigError(f"train.steps must be at least 1, got {t.steps}")
    if t.batch_size < 1:
        raise ConfigError(f"train.batch_size must be at least 1, got {t.batch_size}")
    if not t.lr > 0:
        raise ConfigError(f"train.lr must be positive, got {t.lr}")
    if not 0 <= t.ema_decay < 1:
        raise ConfigError(f"train.ema_decay must be in [0, 1), got {t.ema_decay}")
    if t.max_minutes is not None and not t.max_minutes > 0:
        raise ConfigError(f"train.max_minutes must be positive, got {t.max_minutes}")
    if t.eval_every < 0:
        raise ConfigError(f"train.eval_every (--eval-every) must be 0 (off) or a positive step count, got {t.eval_every}")
    if t.eval_n is not None and t.eval_n < 2:
        raise ConfigError(f"train.eval_n must be at least 2 samples, got {t.eval_n}")
    from genforge.evaluate.extractors import EXTRACTORS

    if t.eval_features not in EXTRACTORS:
        raise ConfigError(f"unknown train.eval_features '{t.eval_features}'; expected one of: {', '.join(EXTRACTORS)}")


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
    **train_options: Any,
):
    """Train a family on a data source into the run directory ``out``; returns a ``TrainResult``.

    ``genforge.train(family="vae", data="mnist", out="runs/vae", steps=500)``.
    With ``resume=True`` the run's own config is used; ``steps`` may raise its total.
    """
    from genforge.data import prepare
    from genforge.train.trainer import Trainer

    if out is None:
        raise ConfigError("an output run directory (--out) is required")
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
        run.save_config()
    else:
        if family is None or data is None:
            raise ConfigError("training needs --family and --data")
        config = make_config(family, data, steps=steps, overrides=overrides, **train_options)
        prepared = prepare(config.data.source, config.data, progress=progress)
        family_cls = get_family(family)
        if prepared.spec.modality not in family_cls.modalities:
            raise ConfigError(
                f"family '{family}' does not handle {prepared.spec.modality} data ('{data}'); "
                f"it handles {', '.join(family_cls.modalities)}"
            )
        run = Run.create(out, config, prepared.spec, prepared.tokenizer)
    model = run.build_family(seed=run.config.train.seed)
    trainer = Trainer(run, model, prepared, progress=progress, on_step=on_step)
    return trainer.fit(resume=resume)


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
    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.family.parameters())

    def _generator(self, seed: int) -> torch.Generator:
        return torch.Generator(device=self.device).manual_seed(int(seed))

    def sample_tensors(self, n: int, seed: int = 0, prompt: str | None = None, **conditions: Any) -> tuple[torch.Tensor, int]:
        """Raw samples (images in [-1, 1], or token ids) and the prompt length in tokens."""
        if n < 1:
            raise ConfigError(f"the number of samples must be at least 1, got {n}")
        prompt_len = 0
        if self.spec.modality == "text":
            tokens = [self.tokenizer.eot_id] + (self.tokenizer.encode(prompt) if prompt else [])
            conditions["prompt"] = tokens
            prompt_len = len(tokens)
        elif prompt is not None:
            raise ConfigError(f"--prompt applies to text runs; {self.run.path} is an image run")
        with autocast(self.device, self.amp_dtype):
            out = self.family.sample(n, generator=self._generator(seed), **conditions)
        return (out.float() if out.is_floating_point() else out), prompt_len

    def sample(self, n: int = 16, seed: int = 0, prompt: str | None = None, **conditions: Any):
        """Images as a float tensor in [-1, 1] (n, C, H, W), or a list of generated texts (prompt included)."""
        out, prompt_len = self.sample_tensors(n, seed, prompt, **conditions)
        if self.spec.modality == "text":
            return self.codec.decode_all(out, prompt_len=prompt_len)
        return out

    def save_samples(self, n: int, out: str | Path, seed: int = 0, prompt: str | None = None, **conditions: Any) -> list[Path]:
        """Write one file per sample into ``out`` (plus grid.png for images and settings.json)."""
        items, prompt_len = self.sample_tensors(n, seed, prompt, **conditions)
        params = {"family": self.run.config.family, "run": str(self.run.path), "seed": seed, "n": n,
                  **({"prompt": prompt} if prompt else {}),
                  **{k: (v if isinstance(v, (int, float, str, bool)) or v is None else str(v)) for k, v in conditions.items()}}
        if self.spec.modality == "text":
            return self.codec.save(items, out, params, prompt_len=prompt_len)
        return self.codec.save(items, out, params)


def load(run: str | Path, device: str = "auto") -> Model:
    """Load a trained run for sampling."""
    return Model(Run.open(run), device=device)
