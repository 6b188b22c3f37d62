"""Family registry: a new family is one file plus one line here."""

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


def get_family(name: str):
    """The Family class registered under ``name``."""
    if name not in FAMILIES:
        raise ConfigError(f"unknown family '{name}'; expected one of: {', '.join(FAMILIES)}")
    module, cls = FAMILIES[name].split(":")
    return getattr(importlib.import_module(module), cls)
