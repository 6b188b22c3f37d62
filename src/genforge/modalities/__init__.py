"""Modalities: one plug-in per kind of data (``image``, ``text``, ``codes``), each owning its sources,
cache layout, datasets, DataSpec, codec, scorer and report style; ``registry.py`` names them.

    from genforge.modalities import prepare, get_modality
    prepared = prepare("mnist")
    get_modality(prepared.modality).codec(prepared.spec, prepared.tokenizer)
"""

from genforge.modalities.base import Modality, Prepared, ReportStyle
from genforge.modalities.prepare import list_sources, prepare
from genforge.modalities.registry import (
    MODALITIES, all_modalities, get_modality, modality_of, parse_source, register, run_modality,
)

__all__ = ["Modality", "Prepared", "ReportStyle", "prepare", "list_sources", "MODALITIES", "all_modalities",
           "get_modality", "modality_of", "parse_source", "register", "run_modality"]
