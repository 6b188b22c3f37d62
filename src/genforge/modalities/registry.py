"""The modalities by name, and the sources they read.

    MODALITIES["image"]  -> genforge.modalities.image:ImageModality

A new modality is a file with a ``Modality`` subclass plus one line in ``MODALITIES``; a plug-in outside
genforge calls ``register(MyModality)`` instead. Its built-in sources and ``kind:PATH`` forms become
valid ``--data`` values at once, and every front end (train, sample, eval, compare, info) serves it.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

from genforge.data.sources import Source
from genforge.data.spec import DataSpec
from genforge.errors import DataError, RunError
from genforge.modalities.base import Modality

MODALITIES: dict[str, Any] = {  # name -> "module:Class" (imported on first use) or the class itself
    "image": "genforge.modalities.image:ImageModality",
    "text": "genforge.modalities.text:TextModality",
    "codes": "genforge.modalities.codes:CodesModality",
    "table": "genforge.modalities.table:TableModality",
    "music": "genforge.modalities.music:MusicModality",
    "audio": "genforge.modalities.audio:AudioModality",
}
_instances: dict[str, Modality] = {}


def register(modality: type[Modality] | str, name: str | None = None) -> None:
    """Add a modality (a class, or "module:Class" with ``name``); a later one of the same name replaces it."""
    if isinstance(modality, str):
        if name is None:
            raise ValueError("register('module:Class') needs the modality's name")
    else:
        name = name or modality.name
    MODALITIES[name] = modality
    _instances.pop(name, None)


def get_modality(name: str) -> Modality:
    """The modality registered under ``name``; a one-line error naming the known ones otherwise."""
    if name not in _instances:
        if name not in MODALITIES:
            raise DataError(f"unknown modality '{name}'; known: {', '.join(MODALITIES)}")
        target = MODALITIES[name]
        if isinstance(target, str):
            module, cls = target.split(":")
            target = getattr(importlib.import_module(module), cls)
        _instances[name] = target()
    return _instances[name]


def all_modalities() -> list[Modality]:
    return [get_modality(name) for name in MODALITIES]


def modality_of(spec: DataSpec, run_path: str | Path | None = None) -> Modality:
    """The modality of data with ``spec`` (of the run at ``run_path``, when given). A run recorded under an
    older name that a modality ``adopts`` is that modality's: its spec is updated in memory (not on disk)."""
    if run_path is not None:
        for modality in all_modalities():
            if modality.name != spec.modality and modality.adopts(spec, Path(run_path)):
                spec.modality = modality.name
                return modality
    try:
        return get_modality(spec.modality)
    except DataError:
        where = f"run {run_path}" if run_path is not None else "this data"
        raise RunError(f"{where} holds '{spec.modality}' data, which no installed modality reads; "
                       f"known: {', '.join(MODALITIES)}") from None


# ---- sources ------------------------------------------------------------------------------------
def data_defaults(source: str, accepts: tuple[str, ...] = ()) -> dict:
    """The data.* values new runs on ``source`` start from, for a family accepting the kinds ``accepts``
    (its modality's ``defaults_for``), read from the source's name alone: nothing is opened or checked here
    (``parse_source`` does that when it is prepared)."""
    match = _named(source.strip()) if isinstance(source, str) else None
    return {} if match is None else match[0].defaults_for(tuple(accepts))


def model_defaults(source: str, family: str) -> dict:
    """The model.* values new runs of ``family`` on ``source`` start from besides the family's own (its modality's
    ``family_defaults``), read from the source's name alone."""
    match = _named(source.strip()) if isinstance(source, str) else None
    return {} if match is None else dict(match[0].family_defaults.get(family, {}))


def parse_source(source: str) -> tuple[Source, Modality]:
    """``"mnist"`` or ``"folder:~/pictures"`` -> (Source, its modality); a DataError listing the choices otherwise."""
    if not isinstance(source, str) or not source.strip():
        raise DataError(f"a data source must be a non-empty string; {choices()}")
    source = source.strip()
    match = _named(source)
    if match is None:
        forms = [kind for m in all_modalities() for kind in m.path_forms]
        hint = ""
        if Path(source).expanduser().exists():
            suffix = Path(source).suffix.lstrip(".").lower()
            forms.sort(key=lambda kind: kind != suffix)  # a form named like the file's suffix first: csv:, parquet:
            hint = f" (did you mean {' or '.join(f'{kind}:{source}' for kind in forms[:2])}?)"
        raise DataError(f"unknown data source '{source}'{hint}; {choices()}")
    modality, kind, rest = match
    if kind is None:
        return Source(source, modality.name), modality
    if not rest.strip():
        raise DataError(f"data source '{source}' has no path; expected {kind}:PATH")
    path = Path(rest.strip()).expanduser().resolve()
    if not path.exists():
        raise DataError(f"data source '{source}': {path} does not exist")
    parsed = Source(kind, modality.name, path)
    modality.check_path(parsed)
    return parsed, modality


def _named(source: str) -> tuple[Modality, str | None, str] | None:
    """The modality a source's name belongs to, by name alone: (modality, None, "") for a built-in source,
    (modality, kind, the rest) for a ``kind:PATH`` form; None when no modality knows it."""
    modalities = all_modalities()
    for modality in modalities:
        if source in modality.builtin_sources:
            return modality, None, ""
    kind, sep, rest = source.partition(":")
    for modality in modalities:
        if sep and kind in modality.path_forms:
            return modality, kind, rest
    return None


def builtin_sources() -> dict[str, tuple[Modality, str]]:
    """Every built-in source name -> (its modality, a one-line description)."""
    return {name: (m, text) for m in all_modalities() for name, text in m.builtin_sources.items()}


def choices() -> str:
    modalities = all_modalities()
    forms = ", ".join(form for m in modalities for form in m.path_forms.values())
    return f"built-in sources: {', '.join(builtin_sources())}; or a path: {forms}"


def run_modality(run) -> tuple[Modality, Any]:
    """The modality of a run (``runs.Run``) and its tokenizer (None for modalities without one)."""
    from genforge.errors import GenforgeError

    modality = modality_of(run.spec, run.path)
    try:
        return modality, modality.load_tokenizer(run.tokenizer_path)
    except GenforgeError as e:
        raise RunError(f"run {run.path}: {e}") from None
