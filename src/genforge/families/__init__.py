"""Family registry: a new family is one file plus one line here, and so is a family's form for another kind
of data (``VARIANTS``: the VAE on tables is TVAE's recipe, not the image VAE's)."""

from __future__ import annotations

import importlib

from genforge.errors import ConfigError

FAMILIES: dict[str, str] = {
    "diffusion": "genforge.families.diffusion:Diffusion",
    "gan": "genforge.families.gan:GAN",
    "vae": "genforge.families.vae:VAE",
    "transformer": "genforge.families.transformer:Transformer",
    "vqvae": "genforge.families.vqvae:VQVAE",
}

# (family name, DataSpec.kind) -> "module:Class": the family on that kind of data, where it is a class of its own
VARIANTS: dict[tuple[str, str], str] = {
    ("vae", "table"): "genforge.families.table_vae:TableVAE",
    ("transformer", "table"): "genforge.families.table_transformer:TableTransformer",
    ("gan", "table"): "genforge.families.table_gan:TableGAN",
    ("diffusion", "table"): "genforge.families.table_diffusion:TableDiffusion",
    ("diffusion", "waveform"): "genforge.families.wave_diffusion:WaveDiffusion",
}


def has_variants(name: str) -> bool:
    """Whether the class of family ``name`` depends on the kind of data (so callers must say which)."""
    return any(family == name for family, _ in VARIANTS)


def get_family(name: str, kind: str | None = None):
    """The Family class registered under ``name``, for data of ``kind`` (DataSpec.kind) when given."""
    if name not in FAMILIES:
        raise ConfigError(f"unknown family '{name}'; expected one of: {', '.join(FAMILIES)}")
    module, cls = VARIANTS.get((name, kind), FAMILIES[name]).split(":")
    return getattr(importlib.import_module(module), cls)
