"""Data: what every modality shares. The cache (``cache.py``), in-memory datasets (``datasets.py``),
image decoding (``images.py``), text reading (``text.py``), tokenizers (``tokenizers.py``),
fill-in-the-middle (``fim.py``), augmentation (``augment.py``), codecs (``codecs.py``: tensors <-> files)
and the ``DataSpec`` a family is built for.

Which sources exist and how each kind of data is prepared belongs to the modalities
(``genforge.modalities``); ``genforge.data.prepare`` is kept as a name for ``genforge.modalities.prepare``.
"""

from __future__ import annotations

from genforge.data.cache import cache_dir
from genforge.data.datasets import ImageDataset, TextDataset
from genforge.data.spec import DataSpec
from genforge.data.tokenizers import BPETokenizer, CharTokenizer, Tokenizer, load_tokenizer

__all__ = [
    "prepare", "Prepared", "list_sources", "cache_dir", "DataSpec", "ImageDataset", "TextDataset",
    "Tokenizer", "CharTokenizer", "BPETokenizer", "load_tokenizer",
]


def __getattr__(name: str):
    # the preparation of sources lives a layer up, with the modalities that read them
    if name in ("prepare", "Prepared", "list_sources"):
        import genforge.modalities

        return getattr(genforge.modalities, name)
    raise AttributeError(f"module 'genforge.data' has no attribute {name!r}")
