"""The Python API under the command line: ``genforge.train``, ``genforge.load``, ``genforge.evaluate`` and
``genforge.compare``; the loaded runs themselves are in ``genforge.models``."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, Sequence

from genforge.config import (TRAIN_CHOICES, TRAIN_RANGES, DataConfig, RunConfig, apply_overrides, check_choices,
                             check_ranges, check_types)
from genforge.errors import ConfigError, RunError
from genforge.families import get_family
from genforge.models import MODELS, ImageModel, Model, TextModel
from genforge.runs import Run, complete_model_config
from genforge.train.device import autocast_dtype, resolve_device

__all__ = ["train", "make_config", "load", "evaluate", "compare", "Model", "ImageModel", "TextModel"]


def make_config(
    family: str,
    data: str,
    *,
    steps: int | None = None,
    overrides: Sequence[str] = (),
    **train: Any,
) -> RunConfig:
    """A full run config: TrainConfig defaults, then the family's defaults, then the caller's values."""
    from genforge.modalities.registry import data_defaults, model_defaults

    kind = data_kind(family, data)
    while True:  # twice at most: when the data's settings (a representation) give another variant of the family
        family_cls = get_family(family, kind)
        d: dict[str, Any] = {"family": family, "data": {**data_defaults(data, family_cls.accepts), "source": data},
                             "train": dict(family_cls.train_defaults),
                             "model": {**getattr(family_cls, "model_defaults", {}), **model_defaults(data, family)}}
        if steps is not None:
            d["train"]["steps"] = steps
        d["train"].update({k: v for k, v in train.items() if v is not None})
        apply_overrides(d, list(overrides))
        config = RunConfig.from_dict(d)
        chosen = data_kind(family, data, config.data)
        if chosen == kind:
            break
        kind = chosen
    check_types(config.train, "train")
    check_types(config.data, "data")
    validate_train(config)
    complete_model_config(config, kind)
    return config


def data_kind(family: str, source: str, cfg: DataConfig | None = None) -> str | None:
    """The kind of tensors ``source`` gives a family (DataSpec.kind) under the data settings ``cfg`` (default: the
    modality's defaults), where the family's class depends on it (``families.VARIANTS``); None otherwise (the
    source is then checked when it is prepared)."""
    from genforge.families import has_variants
    from genforge.modalities import parse_source

    return parse_source(source)[1].kind_of(cfg) if has_variants(family) else None


def validate_train(config: RunConfig) -> None:
    """Every train.* value within its range (``config.TRAIN_RANGES``), and a known feature extractor."""
    check_ranges(config.train, TRAIN_RANGES, "train")
    check_choices(config.train, TRAIN_CHOICES, "train.")
    family_cls = get_family(config.family, data_kind(config.family, config.data.source, config.data))
    if config.train.activation_checkpointing:
        family_cls.check_activation_checkpointing()
    if config.train.fsdp:
        family_cls.check_fsdp()
    family_cls.check_training(config.model, config.train)
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

    Started by torchrun (``genforge train --nproc N``), each process calls this: rank 0 prepares the data
    and creates the run first, the others follow, and they train together (``train/distributed.py``).
    """
    from genforge.io import atomic_write_json, atomic_write_text, load_module, load_tensors, remove_stale_temps
    from genforge.modalities import modality_of, prepare
    from genforge.runlock import RunLock
    from genforge.train import distributed
    from genforge.train.memory import out_of_memory
    from genforge.train.trainer import Trainer

    if out is None:
        raise ConfigError("an output run directory (--out) is required")
    if not resume and restarted_launch_of(out):  # torchrun restarted the group that created this run
        resume = True
        if log is not None and os.environ.get("RANK", "0") == "0":
            log(f"note: restarted by torchrun; {out} continues from its last checkpoint")
    lock = None
    if resume:
        opened = Run.open(out)  # a clear error for a folder that is not a run, before anything is created
        dist = distributed.setup(resolve_device(train_options.get("device") or opened.config.train.device))
        if dist.main:
            lock = RunLock(out, "train").acquire()
    else:
        if family is None or data is None:
            raise ConfigError("training needs --family and --data")
        config = make_config(family, data, steps=steps, overrides=overrides, **train_options)
        dist = distributed.setup(resolve_device(config.train.device))
        if dist.main:
            Run.check_free(out)  # before preparing data; checked again under the lock, in Run.create
        with distributed.main_first(dist):  # one process builds the cache entry; the others read it
            prepared = prepare(config.data.source, config.data, progress=progress and dist.main)
        get_family(family, prepared.spec.kind).check_accepts(prepared.spec, data)
        check_scorable(config, prepared.spec)
        check_fits_in_memory(config, prepared.spec, dist.world)
        if dist.main:
            lock = RunLock(out, "train").acquire()
    try:
        if resume:
            run = Run.open(out)
            modality_of(run.spec, run.path)  # an older run's spec brought up to date (in memory)
            if family is not None and family != run.config.family:
                raise ConfigError(f"{out} is a '{run.config.family}' run; cannot resume it as '{family}'")
            imported_without_data = not run.config.data.source
            if data is not None and data != run.config.data.source:
                if not imported_without_data:
                    raise ConfigError(f"{out} trains on '{run.config.data.source}'; --resume keeps a run's data "
                                      f"(start a new run for '{data}')")
                run.config.data.source = data  # an imported run gets its data when it is first trained
            if not run.config.data.source:
                raise ConfigError(f"{out} was imported without data; give it some to train on: genforge train "
                                  f"--out {out} --resume --data SOURCE --steps N")
            if steps is not None:
                run.config.train.steps = steps
            for key, value in train_options.items():
                if value is not None:
                    setattr(run.config.train, key, value)
            validate_train(run.config)
            with distributed.main_first(dist):
                prepared = prepare(run.config.data.source, run.config.data, progress=progress and dist.main)
            if imported_without_data:  # the model fixes the shape, vocabulary and classes; the data must fit them
                from genforge.data.spec import check_fits

                check_fits(run.spec, prepared.spec, run.config.data.source)
                run.spec = prepared.spec
                if dist.main:
                    atomic_write_json(run.path / "spec.json", run.spec.to_dict())
            if prepared.spec.to_dict() != run.spec.to_dict():
                raise RunError(f"the data source '{run.config.data.source}' changed since {out} was created; resume needs the same data")
            check_scorable(run.config, run.spec)
            check_fits_in_memory(run.config, run.spec, dist.world)
            if dist.main:
                remove_stale_temps(run.path)
                remove_stale_temps(run.samples_dir)
            if not run.state_path.is_file() and log is not None and dist.main:
                log(f"note: {out} has no checkpoint yet; training starts from step 0 with its imported weights"
                    if run.model_path.is_file() else f"note: {out} has no checkpoint yet (it stopped before its "
                    f"first one); training starts from step 0 with its saved config")
        else:
            with distributed.main_first(dist):  # the others open the run rank 0 created
                if dist.main:
                    run = Run.create(out, config, prepared.spec, prepared.tokenizer)
                    if distributed.launch_id() is not None:  # what lets torchrun's restarts resume it
                        atomic_write_text(run.path / distributed.LAUNCH_FILE, distributed.launch_id())
                else:
                    run = Run.open(out)
        model = run.build_family(seed=run.config.train.seed)  # the same initial weights in every process
        if resume and not run.state_path.is_file() and run.model_path.is_file():  # an imported model: fine-tune it
            load_module(model, load_tensors(run.model_path), run.model_path)
        trainer = Trainer(run, model, prepared, progress=progress and dist.main, on_step=on_step, dist=dist)
        try:
            return trainer.fit(resume=resume)
        except (RuntimeError, MemoryError) as e:
            if not (isinstance(e, MemoryError) or out_of_memory(e)):
                raise
            raise ConfigError(f"out of memory at step {trainer.global_step} on {trainer.device}; choose a smaller --batch-size "
                              f"or model, then continue with --resume from the last checkpoint") from None
    finally:
        if lock is not None:
            lock.release()


def restarted_launch_of(out: str | Path) -> bool:
    """Whether this process is a torchrun restart (``--max-restarts``) of the launch that created the run
    ``out``: then the same command continues the run instead of refusing a folder that exists."""
    from genforge.train import distributed

    if not distributed.restarted():
        return False
    try:
        return (Path(out) / distributed.LAUNCH_FILE).read_text().strip() == distributed.launch_id()
    except OSError:
        return False


def check_scorable(config: RunConfig, spec) -> None:
    """Refuse ``train.eval_every`` for data whose modality has no scorer, before a run folder is made."""
    from genforge.modalities import get_modality

    if config.train.eval_every and get_modality(spec.modality).scorer is None:
        raise ConfigError(f"--eval-every: {spec.modality} data has no scorer yet; leave train.eval_every at 0")


def check_fits_in_memory(config: RunConfig, spec, processes: int = 1) -> None:
    """Refuse, before anything is allocated, a model or batch that cannot fit in the training device's memory
    (with ``train.fsdp``, each of the ``processes`` holds its share of the model's state)."""
    from genforge.train.memory import check_training_fits

    shards = processes if config.train.fsdp else 1
    check_training_fits(config, spec, resolve_device(config.train.device), shards=shards)


def load(run: str | Path, device: str = "auto") -> Model:
    """Load a trained run for sampling and refinement: an ``ImageModel``, a ``TextModel`` or a ``Model``,
    as the run's modality names (``genforge.models``)."""
    from genforge.modalities import modality_of

    opened = Run.open(run)
    return MODELS[modality_of(opened.spec, opened.path).model_kind](opened, device=device)


def evaluate(run: str | Path | Model, *, n: int | None = None, features: str = "auto", weights: str | Path | None = None,
             seed: int = 0, device: str = "auto", progress: bool = True, save: bool = True,
             reference: bool = False, likelihood_samples: int | None = None) -> dict:
    """Evaluate a trained run (a run directory, or a loaded ``Model``); the result is also written to the
    run's eval.json when ``save``, with the figures its modality's report shows (table runs: column histograms
    and the pair-trend heat map) as PNG files in ``RUN/eval_figures/``, listed in ``result["figures"]``. With
    ``reference``, the real-data floor is attached as ``result["reference_result"]``.

    ``genforge.evaluate("runs/gan", n=1000)["metrics"]["fd"]``
    """
    from genforge.evaluate.evaluator import Evaluator
    from genforge.evaluate.results import save_figures, save_result
    from genforge.modalities import modality_of, prepare

    if isinstance(run, Model):  # a loaded Model: its run, weights, device and precision
        opened, family, target, amp_dtype = run.run, run.family, run.device, run.amp_dtype
    else:  # a directory: its sampling weights, on the chosen device
        opened = Run.open(run)
        modality_of(opened.spec, opened.path)
        target = resolve_device(device)
        family, amp_dtype = opened.load_family(target), autocast_dtype(target, opened.config.train.precision)
    prepared = prepare(opened.config.data.source, opened.config.data, progress=progress)
    evaluator = Evaluator(prepared, data=opened.config.data.source, features=features, weights=weights, n=n,
                          seed=seed, device=target, progress=progress, likelihood_samples=likelihood_samples,
                          figures=save)
    scores = evaluator(family, amp_dtype)
    result = evaluator.result(opened, scores)
    if reference:
        result["reference_result"] = evaluator.reference_result(opened)
    if save:
        result["figures"] = save_figures(opened.path, result, scores["figures"])
        save_result(opened.path, result)
    return result


def compare(runs: Sequence[str | Path], out: str | Path, *, n: int | None = None, n_text: int | None = None,
            features: str = "auto", weights: str | Path | None = None, seed: int = 0, device: str = "auto",
            progress: bool = True, title: str = "genforge report", subtitle: str | None = None,
            log: Callable[[str], None] = lambda _: None, likelihood_samples: int | None = None) -> Path:
    """Score what is missing and write the comparison report to ``out``; returns its path.

    Each run is scored (or its kept score in eval.json reused, when it was made at the same step, n and
    extractor) with ``n`` samples per run (images, rows) and ``n_text`` per text run (defaults:
    each modality's ``default_eval_n``), ``likelihood_samples`` per image for likelihood bounds (default:
    each family's reporting default). Results measured alike share a table, with real held-out data as the
    reference row; then sample grids or texts, training curves, speeds and sizes.
    """
    from genforge.evaluate.compare import metrics_table, report_run
    from genforge.evaluate.evaluator import Evaluator
    from genforge.evaluate.report import write_report
    from genforge.evaluate.results import check_comparable, find_result, has_figures
    from genforge.evaluate.scorers import scorer_class
    from genforge.modalities import get_modality, modality_of, prepare

    if not runs:
        raise ConfigError("compare needs at least one run directory")
    if Path(out).is_dir():
        raise ConfigError(f"--out {out} is a directory; expected the HTML file to write, e.g. {Path(out) / 'report.html'}")
    opened = [Run.open(r) for r in runs]
    names = [r.path.name for r in opened]
    if len(set(names)) != len(names):
        raise ConfigError(f"runs must have distinct directory names to be told apart; got {', '.join(names)}")
    modalities = [modality_of(run.spec, run.path) for run in opened]
    scorers = [scorer_class(modality) for modality in modalities]
    run_features = [features if scorer.uses_features else "auto" for scorer in scorers]  # text has no extractor
    results = []
    for run, modality, scorer, run_feature in zip(opened, modalities, scorers, run_features):
        chosen = n_text if modality.sized_by_n_text else n  # texts, or images, rows and what decodes to them
        want_n = chosen if chosen is not None else modality.default_eval_n
        result = find_result(run.path, scorer.extractor_name(run_feature, run), want_n)
        if (result is None or result.get("step") != run.model_step()
                or result.get("likelihood_samples", likelihood_samples) != likelihood_samples
                or (modality.report.figures and not has_figures(run.path, result))):  # kept before figures, or lost
            log(f"evaluating {run.path} ({want_n} samples)")
            result = evaluate(run.path, n=want_n, features=run_feature, weights=weights, seed=seed,
                              device=device, progress=progress, likelihood_samples=likelihood_samples)
        results.append(result)

    tables = []
    for kind in dict.fromkeys(r["modality"] for r in results):  # results filed alike, in the order runs were given
        members = [i for i, r in enumerate(results) if r["modality"] == kind]
        group = [results[i] for i in members]
        check_comparable(group)
        first = members[0]  # its data gives the real-data reference row
        run = opened[first]
        prepared = prepare(run.config.data.source, run.config.data, progress=progress)
        evaluator = Evaluator(prepared, data=run.config.data.source, features=run_features[first],
                              weights=weights if scorers[first].uses_features else None, n=group[0]["n"], seed=seed,
                              device=resolve_device(device), progress=progress)
        tables.append(metrics_table(get_modality(kind).report, group, evaluator.reference_result(run)))
    report_runs = [report_run(run, result, modality) for run, result, modality in zip(opened, results, modalities)]
    return write_report(out, report_runs, tables, title=title, subtitle=subtitle)
