"""The on-disk cache: each source decoded once into compact arrays plus a manifest.

    $GENFORGE_CACHE/<slug>-<key>/      (default ~/.cache/genforge)
        manifest.json                  what is here: source, sizes, shapes, classes, vocabulary, statistics
        train_images.npy  val_images.npy    uint8 (N, C, H, W)          image sources
        train_labels.npy  val_labels.npy    int64 (N,)                  when the images have labels
        train.bin  val.bin                  uint16 token ids (uint32     text sources, read back as np.memmap
                                            past 65,535 ids)
        tokenizer.json                      char or bpe, as in a run
        train_rows.npy  val_rows.npy        float32 (N, D) encoded rows  table sources, with their transform as
                                                                         tokenizer.json

Each modality (``genforge.modalities``) writes and reads its own arrays; this module keys, builds,
checks and removes entries for all of them. The key hashes the source, the preparation parameters
(for text: the tokenizer type and, for BPE, the vocabulary size) and, for sources read from files, each file's relative path, size and mtime: edit a
file and the next run rebuilds. An entry is built in a temporary folder and renamed into place, so a
kill never leaves a half-built entry; one that fails its checks (disk damage, a hand edit) is deleted
and rebuilt.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import tempfile
import warnings
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import numpy as np

from genforge.data.sources import Source
from genforge.io import atomic_write_json, ensure_dir, storage_error

FORMAT_VERSION = 3  # bump when the layout changes: old entries then simply stop matching


class CorruptEntry(Exception):
    """A cache entry is unreadable or inconsistent; the caller rebuilds it."""


@dataclass
class Entry:
    path: Path
    manifest: dict
    arrays: dict[str, np.ndarray | None]  # "train_images", "train_labels", ... or "train", "val" token streams
    tokenizer: object | None = None


def cache_dir() -> Path:
    return Path(os.environ.get("GENFORGE_CACHE") or "~/.cache/genforge").expanduser()


def fingerprint(root: Path, files: list[Path]) -> str:
    h = hashlib.sha256()
    for path in files:
        st = path.stat()
        rel = path.name if root.is_file() else path.relative_to(root).as_posix()
        h.update(f"{rel}\t{st.st_size}\t{st.st_mtime_ns}\n".encode("utf-8", "surrogateescape"))
    return h.hexdigest()


def entry_path(source: Source, params: dict, files: list[Path] | None = None, root: Path | None = None) -> Path:
    """Where ``source`` prepared with ``params`` is cached; ``files`` (read from under ``root``) key it too."""
    key = {"format": FORMAT_VERSION, "source": source.canonical, "params": params}
    if files is not None:
        key["files"] = fingerprint(root, files)
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    return cache_dir() / f"{source.slug}-{digest}"


# ---- building ----------------------------------------------------------------------------------
def build(path: Path, write: Callable[[Path], dict]) -> None:
    """Run ``write(tmp)`` into a fresh temporary folder beside ``path``, add its manifest, rename into place."""
    ensure_dir(path.parent, "cache folder (GENFORGE_CACHE)")
    remove_abandoned_builds(path.parent)
    try:
        tmp = Path(tempfile.mkdtemp(prefix=f".build-{path.name}-", dir=path.parent))
    except OSError as e:
        raise storage_error(path.parent, e) from None
    try:
        (tmp / "owner.json").write_text(json.dumps({"host": socket.gethostname(), "pid": os.getpid()}))
        manifest = write(tmp)
        (tmp / "owner.json").unlink()
        atomic_write_json(tmp / "manifest.json", manifest)  # written last: no manifest, no entry
        try:
            os.rename(tmp, path)
        except OSError:
            if not (path / "manifest.json").is_file():
                raise
            shutil.rmtree(tmp, ignore_errors=True)  # another process built the same entry first
    except BaseException as e:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(e, OSError):  # a full or read-only disk: one line naming the cache entry
            raise storage_error(path, e) from None
        raise


def remove_abandoned_builds(parent: Path) -> None:
    """Delete temporary folders left by builds on this machine whose process has died (killed mid-build)."""
    host = socket.gethostname()
    for tmp in parent.glob(".build-*"):
        try:
            owner = json.loads((tmp / "owner.json").read_text())
            if owner["host"] != host:
                continue
            os.kill(int(owner["pid"]), 0)
        except ProcessLookupError:
            shutil.rmtree(tmp, ignore_errors=True)
        except (OSError, ValueError, KeyError, TypeError):
            continue  # still being set up, another machine's, or not ours to judge


def manifest_header(source: Source, params: dict, modality: str) -> dict:
    """The fields every manifest starts with; a modality's ``write`` adds its own."""
    from genforge import __version__

    return {
        "format": FORMAT_VERSION,
        "genforge": __version__,
        "source": source.canonical,
        "modality": modality,
        "params": params,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


# ---- reading -----------------------------------------------------------------------------------
def open_entry(path: Path, read: Callable[[Path, dict], Entry]) -> Entry | None:
    """The entry at ``path`` read by ``read(path, manifest)``; None when there is none, or when it was corrupt
    (it is then deleted, with a warning)."""
    if not path.exists():
        return None
    try:
        return read_entry(path, read)
    except CorruptEntry as e:
        warnings.warn(f"cache entry {path} is corrupt ({e}); rebuilding it", stacklevel=3)
        shutil.rmtree(path, ignore_errors=True)
        return None


def read_entry(path: Path, read: Callable[[Path, dict], Entry]) -> Entry:
    try:
        manifest = json.loads((path / "manifest.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise CorruptEntry(f"manifest.json unreadable: {type(e).__name__}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT_VERSION:
        raise CorruptEntry("manifest.json is not a genforge cache manifest of this version")
    try:
        return read(path, manifest)
    except (KeyError, TypeError) as e:
        raise CorruptEntry(f"manifest.json lacks {e}") from None


def load_npy(file: Path) -> np.ndarray:
    try:
        return np.load(file, allow_pickle=False)
    except (OSError, ValueError, EOFError) as e:
        raise CorruptEntry(f"{file.name} unreadable: {str(e).splitlines()[0] if str(e) else type(e).__name__}") from None


def load_token_stream(file: Path, n: int, dtype: np.dtype, vocab_size: int) -> np.ndarray:
    """``n`` token ids of ``dtype`` from ``file`` as a read-only memmap, checked against the vocabulary."""
    size = file.stat().st_size if file.is_file() else -1
    if size != n * dtype.itemsize:
        raise CorruptEntry(f"{file.name} has {size} bytes, expected {n * dtype.itemsize}")
    stream = np.memmap(file, dtype=dtype, mode="r", shape=(n,)) if n else np.zeros(0, dtype)
    if n and int(stream.max()) >= vocab_size:
        raise CorruptEntry(f"{file.name} holds token ids outside the vocabulary")
    return stream
