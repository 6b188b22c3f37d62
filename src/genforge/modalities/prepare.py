"""A source name -> cached compact arrays -> train/validation datasets and a DataSpec, for any modality.

    prepared = genforge.modalities.prepare("mnist")
    batch = prepared.train.batch(64, torch.Generator().manual_seed(0))   # {"x": ..., "y": ...}

Each source is decoded once into $GENFORGE_CACHE (``data/cache.py``) by its modality; later calls only
map the arrays back in.
"""

from __future__ import annotations

import dataclasses

from genforge.config import DataConfig
from genforge.data import cache
from genforge.data.images import MAX_IMAGE_SIZE
from genforge.data.tokenizers import MAX_BPE_VOCAB, MIN_BPE_VOCAB, TOKENIZER_TYPES
from genforge.errors import ConfigError, DataError
from genforge.modalities.base import Prepared
from genforge.modalities.registry import builtin_sources, parse_source


def prepare(source: str, cfg: DataConfig | None = None, progress: bool = True) -> Prepared:
    """Decode ``source`` into the cache (once) and return its datasets and spec.

    ``source`` wins over ``cfg.source``; the rest of ``cfg`` says how to prepare it (image_size,
    channels, val_fraction; tokenizer and vocab_size for text) and how to cut token streams
    (block_size, which does not touch the cache).
    """
    cfg = cfg if cfg is not None else DataConfig(source=source)
    check_config(cfg)
    src, modality = parse_source(source)
    modality.check_config(src, cfg)
    check_applies(cfg, src, modality)
    params = modality.preparation_params(src, cfg)
    path = cache.entry_path(src, params, modality.source_files(src), modality.source_root(src))
    entry = cache.open_entry(path, modality.read)
    if entry is None:
        cache.build(path, lambda tmp: {**cache.manifest_header(src, params, modality.name),
                                       **modality.write(tmp, src, params, progress)})
        try:
            entry = cache.read_entry(path, modality.read)
        except cache.CorruptEntry as e:
            raise DataError(f"the cache entry just built at {path} cannot be read back ({e}); check the disk") from None
    return modality.assemble(entry, src, cfg)


def list_sources() -> list[dict]:
    """The built-in sources: name, modality, one-line description, and whether they are cached with default settings."""
    out = []
    for name, (modality, description) in builtin_sources().items():
        src, _ = parse_source(name)
        params = modality.preparation_params(src, DataConfig(source=name))
        path = cache.entry_path(src, params, modality.source_files(src), modality.source_root(src))
        out.append({"name": name, "modality": modality.name, "description": description,
                    "cached": (path / "manifest.json").is_file()})
    return out


def check_applies(cfg: DataConfig, src, modality) -> None:
    """Options declared for one kind of data (a DataConfig field's metadata "applies_to") left at their defaults
    for other kinds: ``--set data.numeric=quantile`` on images is a mistake, not a no-op."""
    defaults = DataConfig()
    for f in dataclasses.fields(DataConfig):
        kinds = f.metadata.get("applies_to") or ()
        kinds = (kinds,) if isinstance(kinds, str) else kinds
        if kinds and not {modality.data_kind, modality.name} & set(kinds) and getattr(cfg, f.name) != getattr(defaults, f.name):
            raise ConfigError(f"data.{f.name} applies to {' and '.join(kinds)} sources; '{src.canonical}' is "
                              f"{modality.name} data")


def check_config(cfg: DataConfig) -> None:
    """Every data.* value within its range (whatever the source)."""
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
    if isinstance(cfg.doc_starts, bool) or not isinstance(cfg.doc_starts, (int, float)) or not 0 <= cfg.doc_starts <= 1:
        raise ConfigError(f"data.doc_starts (--doc-starts) must be a number in [0, 1], got {cfg.doc_starts!r}")
    if cfg.tokenizer not in TOKENIZER_TYPES and not (isinstance(cfg.tokenizer, str) and cfg.tokenizer.startswith("file:")
                                                     and len(cfg.tokenizer) > len("file:")):
        raise ConfigError(f"data.tokenizer must be one of {', '.join(TOKENIZER_TYPES)} or file:PATH (a tokenizer.json "
                          f"to use as it is), got {cfg.tokenizer!r}")
    if not (is_int(cfg.vocab_size) and MIN_BPE_VOCAB <= cfg.vocab_size <= MAX_BPE_VOCAB):
        raise ConfigError(
            f"data.vocab_size must be an integer from {MIN_BPE_VOCAB} (256 bytes + special tokens) to {MAX_BPE_VOCAB}, "
            f"got {cfg.vocab_size!r}"
        )
