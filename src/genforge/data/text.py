"""Text sources: files read lazily as UTF-8 documents, a tokenizer fitted to them, and a deterministic
train/validation split written to disk as two token streams.

A file that is not valid UTF-8 (Latin-1, cp1252, a stray byte) is kept, not refused: each byte that does
not decode is carried as Python's "surrogateescape" character U+DCXX, which both tokenizers encode as
that raw byte. Only files holding NUL bytes are taken for binary data and skipped.

Nothing here holds a corpus in memory. A ``TextCorpus`` re-reads its files for each pass (one to fit
the tokenizer, one to tokenise), in pieces of a few MiB that end at line breaks, and
``write_token_streams`` appends each piece's ids to ``train.bin`` / ``val.bin`` as it goes; the cache
maps those files back as memmaps.

In a stream every document is preceded by the end-of-text token, so a model learns what follows it:
the start of a document. Sampling can then begin from that token alone.
"""

from __future__ import annotations

import codecs
import hashlib
import os
import shutil
import sysconfig
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
from tqdm.auto import tqdm

from genforge.data.images import image_extensions
from genforge.data.tokenizers import Tokenizer, has_surrogates
from genforge.errors import DataError

# folders of the standard library that are not representative library code (or not Python 3 at all)
PYCODE_EXCLUDED_DIRS = {
    "site-packages", "dist-packages", "test", "tests", "idlelib", "lib2to3", "encodings", "pydoc_data", "__pycache__",
}
# files in a text folder that are surely not text: skipped without reading or warning
BINARY_EXTENSIONS = {
    ".pyc", ".pyo", ".so", ".dll", ".dylib", ".exe", ".o", ".a", ".bin", ".npy", ".npz", ".pt", ".pth",
    ".safetensors", ".zip", ".gz", ".tgz", ".bz2", ".xz", ".7z", ".tar", ".rar", ".pdf", ".mp3", ".wav", ".flac",
    ".ogg", ".mp4", ".mov", ".avi", ".mkv", ".woff", ".woff2", ".ttf", ".otf", ".db", ".sqlite", ".pkl", ".pickle",
}
PIECE_BYTES = 4 << 20  # files are read in pieces of about this size: big files never sit in memory whole
BATCH_CHARS = 1 << 20  # text handed to the tokenizer's encode_batch at once


# ---- finding files -----------------------------------------------------------------------------
def stdlib_root() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


def is_python_source(source: str) -> bool:
    """Whether a text source is Python code (``pycode``, or ``text:`` of a .py file): where samples are
    scored by the share that parses, and where code stops set to "auto" end samples at top-level boundaries."""
    return source == "pycode" or source.endswith(".py")


def stdlib_files() -> list[Path]:
    """The standard library's own .py files, minus tests and tools, in a fixed order."""
    root = stdlib_root()
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in PYCODE_EXCLUDED_DIRS and not d.startswith("."))
        found.extend(Path(dirpath) / f for f in sorted(filenames) if f.endswith(".py"))
    return sorted(found, key=lambda p: p.relative_to(root).as_posix())


def text_files(root: Path) -> list[Path]:
    """``root`` itself when it is a file, else the files under it, skipping hidden ones and known binaries."""
    if root.is_file():
        return [root]
    skip = BINARY_EXTENSIONS | image_extensions()
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and d != "__pycache__")
        for name in sorted(filenames):
            if not name.startswith(".") and os.path.splitext(name)[1].lower() not in skip:
                found.append(Path(dirpath) / name)
    return found


# ---- reading -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Document:
    name: str  # path relative to the source root, with "/" separators: the split hashes it
    path: Path

    def pieces(self) -> Iterator[str]:
        return read_pieces(self.path)

    def read(self) -> str:
        return "".join(self.pieces())


def read_pieces(path: Path, piece_bytes: int | None = None) -> Iterator[str]:
    """A text file's text in pieces of about ``piece_bytes``, each ending at a line break where there is one.

    The file is decoded as UTF-8, incrementally (a character split between two reads decodes whole).
    Bytes that are not valid UTF-8 are kept: each undecodable byte 0xXX becomes the lone surrogate
    U+DCXX (Python's "surrogateescape"), so ``"".join(pieces).encode("utf-8", "surrogateescape")`` gives
    the file's bytes back, less the two changes below. Raises ValueError when the file holds NUL bytes:
    binary data, not text. A byte-order mark is dropped and Windows line ends become "\\n", so they do not
    double the vocabulary.
    """
    piece_bytes = piece_bytes or PIECE_BYTES
    decoder = codecs.getincrementaldecoder("utf-8")("surrogateescape")
    pending, started = "", False
    with open(path, "rb") as f:
        while True:
            raw = f.read(piece_bytes)
            final = not raw
            if b"\x00" in raw:  # UTF-8 decodes NUL bytes happily, but files holding them are binary
                raise ValueError("binary data: contains NUL bytes")
            decoded = decoder.decode(raw, final=final)
            if not started and decoded:
                # a byte-order mark some editors write (EF BB BF, which decodes to U+FEFF): not text
                started, decoded = True, decoded.removeprefix("\ufeff")
            text = (pending + decoded).replace("\r\n", "\n")
            if not final:
                # keep what follows the last line break for the next piece (a "\r" may be half of "\r\n")
                cut = text.rfind("\n") + 1
                if cut == 0 or len(text) - cut > piece_bytes:
                    cut = len(text) - text.endswith("\r")
                text, pending = text[:cut], text[cut:]
            if text:
                yield text
            if final:
                return


class TextCorpus:
    """The documents of a text source, read from disk afresh on every pass.

    The first pass (``texts()``) checks every file as it reads it: a single file must be non-empty text
    (else DataError); in a folder, binary files (NUL bytes) are skipped with one warning at the end, and
    empty ones silently. A file found to be binary part-way through has already shown its first pieces
    to that pass (which fits the tokenizer); they can only add vocabulary. Files that are not valid UTF-8
    are kept, their undecodable bytes escaped (see ``read_pieces``), and named in one warning at the end
    of the pass. Later passes read only the files that passed, as ``documents``.
    """

    def __init__(self, where: str, root: Path, files: list[Path], progress: bool = True):
        self.where, self.root, self.files, self.progress = where, root, list(files), progress
        self._documents: list[Document] | None = None
        self.characters = 0

    def texts(self, show_progress: bool = True) -> Iterator[str]:
        """Every document's text, piece by piece; the first call is the checking pass (with a bar over the
        files unless ``show_progress`` is False, e.g. while a BPE trainer draws its own)."""
        if self._documents is None:
            yield from self._first_pass(show_progress)
        else:
            for doc in self._documents:
                yield from doc.pieces()

    @property
    def documents(self) -> list[Document]:
        if self._documents is None:
            for _ in self._first_pass():
                pass
        return self._documents

    def _first_pass(self, show_progress: bool = True) -> Iterator[str]:
        single = self.root.is_file()
        documents, failures, not_utf8, characters = [], [], [], 0
        files = tqdm(self.files, desc=f"reading {self.root.name or self.root}", unit="file",
                     disable=not (self.progress and show_progress), leave=False)
        for path in files:
            name = path.name if single else path.relative_to(self.root).as_posix()
            blank, length, escaped = True, 0, False
            try:
                for piece in read_pieces(path):
                    blank = blank and not piece.strip()
                    length += len(piece)
                    escaped = escaped or has_surrogates(piece)  # read_pieces makes no surrogates but escaped bytes
                    yield piece
            except (ValueError, OSError) as e:
                reason = str(e).splitlines()[0] if str(e) else type(e).__name__
                if single:
                    raise DataError(f"{self.where} is not readable as text ({reason}); expected a text file") from None
                failures.append((name, reason))
                continue
            if blank:
                if single:
                    raise DataError(f"{self.where} is empty; expected a text file with some text in it")
                continue
            documents.append(Document(name, path))
            characters += length
            if escaped:
                not_utf8.append(name)

        if failures:
            shown = "; ".join(f"{name} ({why})" for name, why in failures[:10])
            more = f"; and {len(failures) - 10} more" if len(failures) > 10 else ""
            warnings.warn(f"{self.where}: skipped {len(failures)} file(s) that are not text: {shown}{more}", stacklevel=2)
        if not_utf8:
            shown = ", ".join(not_utf8[:10]) + (f", and {len(not_utf8) - 10} more" if len(not_utf8) > 10 else "")
            warnings.warn(
                f"{self.where}: {len(not_utf8)} file(s) hold bytes that are not UTF-8 ({shown}); they are kept as raw "
                "bytes, one token each (re-encode such files as UTF-8 for their characters to be learnt as characters)",
                stacklevel=2,
            )
        if not documents:
            raise DataError(
                f"{self.where} has no usable text: {len(self.files)} file(s) found, none of them non-empty text; "
                "expected text files (.txt, .md, .py, .json, .csv, ...)"
            )
        self._documents, self.characters = documents, characters


# ---- tokenising and splitting ------------------------------------------------------------------
def in_validation(name: str, val_fraction: float) -> bool:
    """A stable hash of the document's relative path: the same file always lands in the same split."""
    h = int.from_bytes(hashlib.sha256(name.encode("utf-8")).digest()[:8], "big")
    return h / 2**64 < val_fraction


def token_dtype(vocab_size: int) -> np.dtype:
    """uint16 while every id fits (half the disk and page cache of uint32), else uint32."""
    return np.dtype(np.uint16 if vocab_size <= 65535 else np.uint32)


def write_token_streams(documents: list[Document], tokenizer: Tokenizer, folder: Path, val_fraction: float,
                        progress: bool = True, characters: int | None = None) -> dict:
    """Tokenise ``documents`` into ``folder``/train.bin and val.bin (raw ids, ``token_dtype``), each document
    preceded by the end-of-text id; returns the counts and how the split was made, for the manifest.

    Documents go to a split by a hash of their name. When that leaves a split empty (one file, or
    few), the end of the token stream is held out instead. Ids are appended to the files as they
    are made: memory holds one batch of text and its ids, whatever the corpus size.
    """
    dtype = token_dtype(tokenizer.vocab_size)
    eot = np.array([tokenizer.eot_id], dtype=dtype).tobytes()
    paths = {"train": folder / "train.bin", "val": folder / "val.bin"}
    counts = {"train": 0, "val": 0}
    docs_in = {"train": 0, "val": 0}
    bar = tqdm(total=characters, desc="tokenizing", unit="char", unit_scale=True, disable=not progress, leave=False)
    with open(paths["train"], "wb") as train_f, open(paths["val"], "wb") as val_f:
        files = {"train": train_f, "val": val_f}
        batch: list[tuple[str, bool, str]] = []  # (split, starts a document, text)

        def flush() -> None:
            for (split, starts, text), ids in zip(batch, tokenizer.encode_batch([t for _, _, t in batch])):
                if starts:
                    files[split].write(eot)
                    counts[split] += 1
                files[split].write(np.asarray(ids).astype(dtype).tobytes())
                counts[split] += len(ids)
                bar.update(len(text))
            batch.clear()

        size = 0
        for doc in documents:
            split = "val" if in_validation(doc.name, val_fraction) else "train"
            docs_in[split] += 1
            for i, piece in enumerate(doc.pieces()):
                batch.append((split, i == 0, piece))
                size += len(piece)
                if size >= BATCH_CHARS:
                    flush()
                    size = 0
        flush()
    bar.close()

    info = {"documents": len(documents)}
    if docs_in["train"] and docs_in["val"]:
        info.update(split="documents", train_documents=docs_in["train"], val_documents=docs_in["val"])
    else:
        # too few documents for a split by document: hold out the end of the token stream instead
        whole = "train" if docs_in["train"] else "val"
        if whole == "val":
            os.replace(paths["val"], paths["train"])
        total = counts[whole]
        n_val = min(max(1, round(val_fraction * total)), total - 1)
        with open(paths["train"], "r+b") as f, open(paths["val"], "wb") as out:
            f.seek((total - n_val) * dtype.itemsize)
            shutil.copyfileobj(f, out)
            f.truncate((total - n_val) * dtype.itemsize)
        counts = {"train": total - n_val, "val": n_val}
        info.update(split="end of stream", train_documents=len(documents), val_documents=0)
    info.update(tokens=counts, token_dtype=dtype.name)
    return info
