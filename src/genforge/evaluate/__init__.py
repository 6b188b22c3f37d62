"""Evaluation: scorers per modality, feature extractors, metrics, results and the comparison report.

    result = genforge.evaluate("runs/gan", n=1000)        # also written to runs/gan/eval.json
    genforge.evaluate.compare(["runs/gan", "runs/vae"], "report.html")

The path-taking forms above are ``genforge.api.evaluate`` and ``genforge.api.compare``; this package's
``Evaluator`` takes prepared data and a family. ``genforge.evaluate`` is this package and, for the
notebook form, also callable: calling it calls ``genforge.api.evaluate``.
"""

from __future__ import annotations

import sys
import types


def evaluate(*args, **kwargs):
    """See ``genforge.api.evaluate``."""
    from genforge.api import evaluate as _evaluate

    return _evaluate(*args, **kwargs)


def compare(*args, **kwargs):
    """See ``genforge.api.compare``."""
    from genforge.api import compare as _compare

    return _compare(*args, **kwargs)


class _CallablePackage(types.ModuleType):
    def __call__(self, *args, **kwargs):
        return evaluate(*args, **kwargs)

    def __setattr__(self, name: str, value) -> None:
        # Importing the submodule genforge.evaluate.compare sets the package's attribute `compare` to that
        # module; the function above must stay what `genforge.evaluate.compare(...)` calls.
        if name == "compare" and isinstance(value, types.ModuleType):
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _CallablePackage
