"""Scorers: what ``genforge eval`` measures for each modality. A modality names its scorer
(``Modality.scorer``: a class, or "module:Class"); the ``Evaluator`` builds it once per run and data.

A scorer provides ``score(family, amp_dtype) -> (metrics, sampling, examples)``, ``reference_metrics()``
(real held-out data scored exactly like samples, or None), ``reference_info()`` and ``extractor_info()``
(what the scores were measured against), and the class methods ``uses_features`` and
``extractor_name(features, run)`` (the name a kept result is filed under). The scorer of a modality whose
``ReportStyle.figures`` is set also provides ``figures() -> list[Figure]`` (``evaluate/figures.py``): figures of
the samples its latest ``score`` drew, asked for by `genforge eval` (never during training).
"""

from __future__ import annotations

import importlib
from typing import Any


def scorer_class(modality) -> Any:
    """The scorer class a modality declares."""
    target = modality.scorer
    if target is None:
        from genforge.errors import ConfigError

        raise ConfigError(f"{modality.name} data has no scorer: genforge eval cannot score it")
    if isinstance(target, str):
        module, cls = target.split(":")
        target = getattr(importlib.import_module(module), cls)
    return target
