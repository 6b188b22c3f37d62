"""`genforge import DIR --out RUN`: a model made elsewhere becomes a genforge run, where it is exact.

Each importer (``registry.IMPORTERS``) says whether it reads a folder and turns it into an ``Imported``: the
family, its model config, the data it is for and the weights under the family's own names. This file makes the
run from that: config.yaml, spec.json, the tokenizer and model.safetensors at step 0. The run samples at once;
``genforge train --out RUN --resume --data SOURCE --steps N`` fine-tunes it with genforge's trainer (the
trainer starts from model.safetensors when a run has no checkpoint yet).
"""

from __future__ import annotations

import importlib
from pathlib import Path

from genforge.config import DataConfig, RunConfig, TrainConfig
from genforge.data.spec import check_fits
from genforge.errors import DataError, ExportError, GenforgeError
from genforge.export.registry import IMPORTERS, Imported

IMPORTED_TOKENIZER = "file:{}"  # data.tokenizer of an imported token model: its own tokenizer.json, never retrained
TOKENIZER = "tokenizer.json"  # where a run keeps it (Run.tokenizer_path)


def read_folder(folder: str | Path) -> Imported:
    """The model in ``folder`` as an ``Imported``, by the first importer that reads it; a one-line error otherwise."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ExportError(f"{folder} is not a folder; expected a transformers or diffusers model folder")
    for name in IMPORTERS:
        module = importlib.import_module(name)
        if module.detect(folder):
            return module.read(folder)
    raise ExportError(f"{folder} holds no model genforge imports; expected a transformers GPT-2 or Llama folder "
                      "(config.json + model.safetensors + tokenizer) or a diffusers UNet2DModel folder "
                      "(model_index.json with unet/, or a UNet2DModel config.json + diffusion_pytorch_model.safetensors)")


def import_folder(folder: str | Path, out: str | Path, *, data: str | None = None, progress: bool = True):
    """Import the model in ``folder`` as a new genforge run in ``out`` (a ``Run``); with ``data``, the run's data
    source (checked to fit the model, so the run can be fine-tuned and evaluated)."""
    from genforge.io import save_tensors, unique_state, load_module
    from genforge.runs import Run, complete_model_config

    imported = with_saved_settings(read_folder(folder), Path(folder))
    out = Path(out)
    Run.check_free(out)
    config = _config(imported, data, out)
    spec = imported.spec
    if data is not None:
        spec = _fitting_spec(config, imported, data, out, progress)
    complete_model_config(config, spec.kind)
    run = Run.create(out, config, spec, imported.tokenizer)
    family = run.build_family()
    load_module(family, imported.tensors, Path(folder))
    meta = {"family": config.family, "step": "0", "format": "genforge-model-1", "imported": imported.description}
    save_tensors(unique_state(family), run.model_path, metadata=meta)
    return run


def with_saved_settings(imported: Imported, folder: Path) -> Imported:
    """``imported`` with the model settings of the genforge run it was exported from (the export's genforge.json:
    sampling defaults and the exact schedule values, which the other tool's files do not hold), when that file is
    there, is the same family and its settings build a model the weights fit name for name and shape for shape;
    else ``imported`` as it is."""
    import json

    import torch

    from genforge.data.spec import DataSpec
    from genforge.export.run_export import SETTINGS, SETTINGS_FORMAT
    from genforge.runs import build_family

    try:
        saved = json.loads((folder / SETTINGS).read_text(encoding="utf-8"))
        if saved.get("format") != SETTINGS_FORMAT or saved.get("family") != imported.family:
            return imported
        model = {**imported.model, **saved["config"]["model"]}
        config = RunConfig(family=imported.family, model=model)
        with torch.device("meta"):
            shapes = {k: tuple(v.shape) for k, v in build_family(config, imported.spec).state_dict().items()}
        DataSpec.from_dict(saved["spec"])  # readable, or the file is not what it says
    except (OSError, ValueError, TypeError, KeyError, AttributeError, GenforgeError):
        return imported
    if shapes != {k: tuple(v.shape) for k, v in imported.tensors.items()}:
        return imported
    imported.model = model
    return imported


def _config(imported: Imported, data: str | None, out: Path) -> RunConfig:
    from genforge.families import get_family

    family_cls = get_family(imported.family, imported.spec.kind)
    data_cfg = DataConfig(source=data or "", **imported.data)
    if imported.tokenizer is not None:  # its data is tokenized with the model's own tokenizer, kept in the run
        data_cfg.tokenizer = IMPORTED_TOKENIZER.format((out / TOKENIZER).resolve())
    train = TrainConfig(**family_cls.train_defaults)
    return RunConfig(family=imported.family, data=data_cfg, train=train, model=dict(imported.model))


def _fitting_spec(config: RunConfig, imported: Imported, data: str, out: Path, progress: bool):
    """The prepared data's spec, when the imported model fits it (same item shape, vocabulary and classes). A token
    model's data is tokenized with its tokenizer, saved first where the run keeps it, so that this preparation and
    the run's later ones (``--resume``) share one cache entry; a misfit leaves nothing behind."""
    from genforge.io import ensure_dir
    from genforge.modalities import parse_source, prepare

    kind = parse_source(data)[1].kind_of(config.data)
    if kind is not None and kind != imported.spec.kind:  # before preparing it with settings meant for another kind
        raise DataError(f"the data '{data}' does not fit the imported model: its kind of data is {kind}, the model's "
                        f"is {imported.spec.kind}")
    created = not out.exists()
    if imported.tokenizer is not None:
        imported.tokenizer.save(ensure_dir(out) / TOKENIZER)
    try:
        prepared = prepare(data, config.data, progress=progress)
        check_fits(imported.spec, prepared.spec, data)
    except BaseException:
        (out / TOKENIZER).unlink(missing_ok=True)
        if created and out.is_dir() and not any(out.iterdir()):
            out.rmdir()
        raise
    return prepared.spec
