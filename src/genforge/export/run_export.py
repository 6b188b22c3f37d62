"""`genforge export RUN --format F --out DIR` and `genforge info RUN --card`: the dispatch, not the formats.

The run's family declares the formats it exports to (``Family.exports``); ``registry.EXPORTERS`` names the code
that writes each. The exporter fills a temporary folder, the model card (README.md) and the run's own settings
(genforge.json: what the other tool's files have no place for, such as sampling defaults) are added, and the
folder is moved into place in one rename (``folders.building``).
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Callable

from genforge.errors import ConfigError, ExportError
from genforge.export.card import CARD, model_card
from genforge.export.folders import building, check_destination
from genforge.export.registry import EXPORTERS, FORMATS, Exported
from genforge.io import atomic_write_json, atomic_write_text

SETTINGS = "genforge.json"  # beside every export: the run's config and data spec
SETTINGS_FORMAT = "genforge-export-1"


def exporter_for(model, format: str) -> Callable:
    """The function that writes ``format`` for this run's family; a one-line error when it declares no such export."""
    if format not in FORMATS:
        raise ConfigError(f"unknown export format '{format}'; expected one of: {', '.join(FORMATS)}")
    family = type(model.family)
    if format not in family.exports:
        offered = ", ".join(family.exports) or "no format yet"
        raise ExportError(f"a {family.name} run on {model.spec.modality} data ({family.__name__}) does not export to "
                          f"'{format}'; it exports to: {offered}")
    target = EXPORTERS.get((family.name, format)) or EXPORTERS.get(("*", format))
    if target is None:
        raise ExportError(f"no exporter is registered for '{format}' (genforge.export.registry.EXPORTERS)")
    module, name = target.split(":")
    return getattr(importlib.import_module(module), name)


def export_run(run: str | Path, format: str, out: str | Path, *, overwrite: bool = False) -> tuple[Path, Exported]:
    """Export the run in folder ``run`` to ``format`` in the new folder ``out`` (with a README.md model card).

    ``genforge.export.export_run("runs/gpt", "hf", "exports/gpt")``; returns the folder and what was written.
    """
    from genforge.api import load

    out = Path(out)
    check_destination(out, overwrite, "export")
    model = load(run, device="cpu")
    write = exporter_for(model, format)
    with building(out, overwrite) as tmp:
        exported = write(model, tmp)
        atomic_write_text(tmp / CARD, model_card(model, exported))
        # the run's own settings (sampling defaults, the data it came from), which `genforge import` restores
        atomic_write_json(tmp / SETTINGS, {"format": SETTINGS_FORMAT, "family": model.run.config.family,
                                           "config": model.run.config.to_dict(), "spec": model.spec.to_dict()})
    exported.files += [CARD, SETTINGS]
    return out, exported


def write_card(run: str | Path) -> Path:
    """Write the run's own model card as RUN/README.md (`genforge info RUN --card`); returns its path."""
    from genforge.api import load

    model = load(run, device="cpu")
    path = model.run.path / CARD
    atomic_write_text(path, model_card(model))
    return path
