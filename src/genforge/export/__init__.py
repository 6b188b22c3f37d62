"""Models out of genforge and into it: `genforge export`, `genforge import` and model cards.

    from genforge.export import export_run, import_folder
    export_run("runs/gpt", "hf", "exports/gpt")       # transformers' AutoModelForCausalLM loads exports/gpt
    export_run("runs/diffusion", "onnx", "exports/unet-onnx")
    import_folder("exports/gpt", "runs/gpt-again")   # sample it, or fine-tune it with genforge's trainer

Formats are declared by the families (``Family.exports``) and written by the code ``registry.EXPORTERS`` names;
the peer libraries are optional (the ``export`` extra) and a missing one is a one-line error (``peers.py``).
"""

from __future__ import annotations

from genforge.export.run_export import export_run, write_card
from genforge.export.run_import import import_folder, read_folder

__all__ = ["export_run", "write_card", "import_folder", "read_folder"]
