"""Data: a source name -> cached compact arrays -> train/validation datasets and a DataSpec.

    prepared = genforge.data.prepare("mnist")
    batch = prepared.train.batch(64, torch.Generator().manual_seed(0))   # {"x": ..., "y": ...}

Sources are the built-in names (``list_sources()``) or ``folder:PATH`` / ``text:PATH``. Each is
decoded once into $GENFORGE_CACHE (see ``cache.py``); later calls only map the arrays back in. Text is
tokenised by a character tokenizer (``data.tokenizer="char"``, the default) or a byte-level BPE trained
on the corpus (``"bpe"``, ``data.vocab_size`` ids); see ``tokenizers.py``.
Codecs (``codecs.py``) turn model outputs back into files.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from genforge.config import DataConfig
from genforge.data import cache
from genforge.data.cache import cache_dir
from genforge.data.datasets import ImageDataset, TextDataset
from genforge.data.images import DEFAULT_IMAGE_SIZE, MAX_IMAGE_SIZE
from genforge.data.sources import BUILTIN_SOURCES, Source, parse_source
from genforge.data.spec import DataSpec
from genforge.data.tokenizers import (
    MAX_BPE_VOCAB, MIN_BPE_VOCAB, TOKENIZER_TYPES, BPETokenizer, CharTokenizer, Tokenizer, load_tokenizer, train_tokenizer,
)
from genforge.errors import ConfigError, DataError

from genforge.data.codes import CodeTokenizer  # importing it registers the "codes" tokenizer and codec

__all__ = [
    "prepare", "Prepared", "list_sources", "cache_dir", "DataSpec", "ImageDataset", "TextDataset",
    "Tokenizer", "CharTokenizer", "BPETokenizer", "CodeTokenizer", "load_tokenizer",
]


@dataclass
class Prepared:
    spec: DataSpec
    train: ImageDataset | TextDataset
    val: ImageDataset | TextDataset
    tokenizer: Tokenizer | None  # text sources only
    manifest: dict
    path: Path  # the cache entry

    @property
    def modality(self) -> str:
        return self.spec.modality


def prepare(source: str, cfg: DataConfig | None = None, progress: bool = True) -> Prepared:
    """Decode ``source`` into the cache (once) and return its datasets and spec.

    ``source`` wins over ``cfg.source``; the rest of ``cfg`` says how to prepare it (image_size,
    channels, val_fraction; tokenizer and vocab_size for text) and how to cut text (block_size, which
    does not touch the cache).
    """
    cfg = cfg if cfg is not None else DataConfig(source=source)
    check_config(cfg)
    src = parse_source(source)
    if src.modality != "text" and cfg.fim_rate:
        raise ConfigError(f"data.fim_rate (--fim-rate) applies to text sources; '{source}' is {src.modality} data")
    if src.modality != "text" and cfg.tokenizer != "char":
        raise ConfigError(
            f"data.tokenizer '{cfg.tokenizer}' (--tokenizer) applies to text sources; '{source}' is {src.modality} data"
        )
    if src.kind == "codes" and (cfg.fim_rate or cfg.tokenizer != "char"):
        raise ConfigError(f"'{source}' is a VQ-VAE's code grids: its tokens are the codes, so --tokenizer and "
                          "--fim-rate do not apply")
    params = preparation_params(src, cfg)
    path = cache.entry_path(src, params)
    entry = cache.open_entry(path)
    if entry is None:
        cache.build(path, lambda tmp: _write(tmp, src, params, progress))
        try:
            entry = cache.read_entry(path)
        except cache.CorruptEntry as e:
            raise DataError(f"the cache entry just built at {path} cannot be read back ({e}); check the disk") from None
    return _assemble(entry, src, cfg)


def list_sources() -> list[dict]:
    """The built-in sources: name, modality, one-line description, and whether they are cached with default settings."""
    out = []
    for name, builtin in BUILTIN_SOURCES.items():
        src = parse_source(name)
        path = cache.entry_path(src, preparation_params(src, DataConfig(source=name)))
        out.append({"name": name, "modality": builtin.modality, "description": builtin.description,
                    "cached": (path / "manifest.json").is_file()})
    return out


def check_config(cfg: DataConfig) -> None:
    def is_int(v) -> bool:
        return isinstance(v, int) and not isinstance(v, bool)

    if cfg.image_size is not None and not (is_int(cfg.image_size) and 1 <= cfg.image_size <= MAX_IMAGE_SIZE):
        raise ConfigError(f"data.image_size (--image-size) must be an integer from 1 to {MAX_IMAGE_SIZE} pixels or null, "
                          f"got {cfg.image_size!r}")
    if cfg.channels not in (None, 1, 3) or isinstance(cfg.channels, bool):
        raise ConfigError(f"data.channels must be 1 (grayscale), 3 (RGB) or null (as the files are), got {cfg.channels!r}")
    if not (is_int(cfg.block_size) and cfg.block_size >= 1):
        raise ConfigError(f"data.block_size must be a positive integer, got {cfg.block_size!r}")
    if isinstance(cfg.val_fraction, bool) or not isinstance(cfg.val_fraction, (int, float)) or not 0 < cfg.val_fraction < 1:
        raise ConfigError(f"data.val_fraction must be a number between 0 and 1 (exclusive), got {cfg.val_fraction!r}")
    from genforge.data.fim import check_rate

    check_rate(cfg.fim_rate)
    if cfg.tokenizer not in TOKENIZER_TYPES:
        raise ConfigError(f"data.tokenizer must be one of {', '.join(TOKENIZER_TYPES)}, got {cfg.tokenizer!r}")
    if not (is_int(cfg.vocab_size) and MIN_BPE_VOCAB <= cfg.vocab_size <= MAX_BPE_VOCAB):
        raise ConfigError(
            f"data.vocab_size must be an integer from {MIN_BPE_VOCAB} (256 bytes + special tokens) to {MAX_BPE_VOCAB}, "
            f"got {cfg.vocab_size!r}"
        )


def preparation_params(src: Source, cfg: DataConfig) -> dict:
    """The settings that change what lands in the cache (part of its key)."""
    if src.modality == "image":
        image_size = cfg.image_size
        if image_size is None and src.kind == "folder":
            image_size = DEFAULT_IMAGE_SIZE
        return {"image_size": image_size, "channels": cfg.channels, "val_fraction": float(cfg.val_fraction)}
    if src.kind == "codes":  # the VQ-VAE's own split and code book decide everything
        return {"codes": True}
    params = {"val_fraction": float(cfg.val_fraction), "tokenizer": cfg.tokenizer}
    if cfg.tokenizer == "bpe":  # a character vocabulary is whatever the text holds: no size to key on
        params["vocab_size"] = cfg.vocab_size
    return params


def _write(tmp: Path, src: Source, params: dict, progress: bool) -> dict:
    if src.kind == "codes":
        from genforge.data.codes import write_codes

        return write_codes(tmp, src, params, progress)
    if src.modality == "image":
        data = src.load_images(params["image_size"], params["channels"], progress)
        return cache.write_images(tmp, src, params, data, params["val_fraction"])
    corpus = src.text_corpus(progress)
    kind = params["tokenizer"]
    # one progress display at a time: HF's BPE trainer draws its own bars while it reads the corpus
    tokenizer = train_tokenizer(kind, corpus.texts(show_progress=kind != "bpe"), params.get("vocab_size"), progress)
    return cache.write_text(tmp, src, params, tokenizer, corpus, progress)


def _assemble(entry: cache.Entry, src: Source, cfg: DataConfig) -> Prepared:
    m, a = entry.manifest, entry.arrays
    if m["modality"] == "image":
        names = m["class_names"]
        train = ImageDataset(a["train_images"], a["train_labels"], names, name=f"the training split of {src.canonical}")
        val = ImageDataset(a["val_images"], a["val_labels"], names, name=f"the validation split of {src.canonical}")
        spec = DataSpec("image", tuple(m["shape"]), num_classes=m["num_classes"], class_names=list(names))
        return Prepared(spec, train, val, None, m, entry.path)
    grid = m.get("grid")
    if grid is not None and cfg.block_size < grid[0] * grid[1] + 1:
        raise ConfigError(f"data.block_size must be at least {grid[0] * grid[1] + 1} for codes:{src.path} "
                          f"(one {grid[0]}x{grid[1]} code grid plus the end-of-text token), got {cfg.block_size}")
    fim_ids = None
    if cfg.fim_rate:
        from genforge.data.fim import FimIds

        if entry.tokenizer.fim_ids() is None:
            raise DataError("this tokenizer has no fill-in-the-middle tokens; prepare the data again to use data.fim_rate")
        fim_ids = FimIds(*entry.tokenizer.fim_ids(), end=entry.tokenizer.eot_id)
    train = TextDataset(a["train"], cfg.block_size, name=f"the training split of {src.canonical}",
                        fim_rate=cfg.fim_rate, fim_ids=fim_ids)
    val = TextDataset(a["val"], cfg.block_size, name=f"the validation split of {src.canonical}",
                      hint="a larger data.val_fraction")
    spec = DataSpec("text", (cfg.block_size,), vocab_size=entry.tokenizer.vocab_size)
    return Prepared(spec, train, val, entry.tokenizer, m, entry.path)
