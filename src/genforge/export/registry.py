"""Which code writes each export format and reads each foreign folder: one line per exporter or importer.

A family declares the formats it exports to (``Family.exports``); ``EXPORTERS`` names the function that writes
format F for family name N, ``(N, F)``, or for any family that declares F, ``("*", F)``. An exporter is
``export(model, out) -> Exported``: it writes its files into the empty folder ``out`` (the caller makes it, adds
the model card and moves it into place atomically). ``IMPORTERS`` are modules with ``detect(folder) -> bool`` and
``read(folder) -> Imported``, tried in order.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

EXPORTERS: dict[tuple[str, str], str] = {
    ("transformer", "hf"): "genforge.export.hf_transformer:export",
    ("diffusion", "hf"): "genforge.export.hf_diffusers:export",
    ("*", "onnx"): "genforge.export.onnx_export:export",
}

IMPORTERS: tuple[str, ...] = (
    "genforge.export.hf_transformer",
    "genforge.export.hf_diffusers",
)

# every format, with what it is (for --help and one-line errors)
FORMATS: dict[str, str] = {
    "hf": "a Hugging Face folder: transformers (from_pretrained) for transformers, diffusers pipelines for diffusion",
    "onnx": "ONNX files of the networks the family samples with, for ONNX Runtime (dynamic batch size)",
}


@dataclass
class Exported:
    """What an exporter wrote, for the model card and the command's report."""

    format: str
    architecture: str  # what the files hold, e.g. "GPT2LMHeadModel", "UNet2DModel + DDIMScheduler"
    files: list[str]  # paths relative to the export folder
    load: str  # Python that loads the export and uses it (shown in the model card)
    notes: list[str] = field(default_factory=list)  # limits a user must know (shown in the card)
    library: str | None = None  # the Hugging Face library that loads it: "transformers", "diffusers", "onnx"
    pipeline_tag: str | None = None  # the Hugging Face task, e.g. "text-generation", "unconditional-image-generation"


@dataclass
class Imported:
    """A foreign model read as a genforge run: the family, its model config, the data it is for, the weights."""

    family: str
    model: dict[str, Any]  # the family's config values (config.yaml's model section)
    spec: Any  # genforge.data.spec.DataSpec
    tensors: dict[str, Any]  # the family's state dict (names as the family's own)
    tokenizer: Any = None  # genforge tokenizer for token models (saved as the run's tokenizer.json)
    data: dict[str, Any] = field(default_factory=dict)  # data settings the run needs (block_size, image_size...)
    description: str = ""  # what was imported, e.g. "transformers GPT2LMHeadModel (124M parameters)"
