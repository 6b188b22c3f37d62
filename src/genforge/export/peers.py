"""The peers export and import need (transformers, diffusers, onnx, onnxruntime): optional, in the ``export`` extra.
A missing one is one line saying what to install, never an ImportError traceback."""

from __future__ import annotations

import importlib
from types import ModuleType

from genforge.errors import ExportError

INSTALL = "pip install 'genforge[export]'"
# module name -> the name pip installs it under
PACKAGES = {"transformers": "transformers", "diffusers": "diffusers", "onnx": "onnx", "onnxruntime": "onnxruntime",
            "onnxscript": "onnxscript"}


def require(module: str, purpose: str) -> ModuleType:
    """``module`` imported, or a one-line ExportError: "``purpose`` needs X, which is not installed: pip install ..."."""
    try:
        return importlib.import_module(module)
    except ImportError:
        package = PACKAGES.get(module.split(".")[0], module.split(".")[0])
        raise ExportError(f"{purpose} needs the '{package}' package, which is not installed: {INSTALL} "
                          f"(or pip install {package})") from None
