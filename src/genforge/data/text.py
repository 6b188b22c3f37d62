"""Text sources: files read as UTF-8 documents, one character vocabulary for the whole corpus, and a
deterministic train/validation split into two token streams.

In a stream every document is preceded by the end-of-text token, so a model learns what follows it:
the start of a document. Sampling can then begin from that token alone.
"""

from __future__ import annotations

import hashlib
import os
import sysconfig
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from genforge.data.images import image_extensions
from genforge.data.tokenizers import MAX_CODE_POINT, CharTokenizer
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


@dataclass
class Document:
    name: str  # path relative to the source root, with "/" separators: the split hashes it
    text: str


@dataclass
class TokenizedCorpus:
    tokenizer: CharTokenizer
    train: np.ndarray  # token ids, uint16 or uint32
    val: np.ndarray
    info: dict = field(default_factory=dict)  # document counts and how the split was made


# ---- finding files -----------------------------------------------------------------------------
def stdlib_root() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


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
def read_documents(where: str, root: Path, files: list[Path], progress: bool = True) -> list[Document]:
    """Read ``files`` as UTF-8 documents. A single file must be non-empty UTF-8 text (else DataError); in a
    folder, files that are not UTF-8 are skipped with one warning and empty files are skipped silently."""
    single = root.is_file()
    documents, failures = [], []
    for path in tqdm(files, desc=f"reading {root.name or root}", unit="file", disable=not progress, leave=False):
        name = path.name if single else path.relative_to(root).as_posix()
        try:
            text = decode_text(path.read_bytes())
        except (UnicodeDecodeError, ValueError, OSError) as e:
            reason = describe_decode_error(e)
            if single:
                raise DataError(f"{where} is not readable as text ({reason}); expected a UTF-8 encoded text file") from None
            failures.append((name, reason))
            continue
        if not text.strip():
            if single:
                raise DataError(f"{where} is empty; expected a UTF-8 text file with some text in it")
            continue
        documents.append(Document(name, text))

    if failures:
        shown = "; ".join(f"{name} ({why})" for name, why in failures[:10])
        more = f"; and {len(failures) - 10} more" if len(failures) > 10 else ""
        warnings.warn(f"{where}: skipped {len(failures)} file(s) that are not UTF-8 text: {shown}{more}", stacklevel=2)
    if not documents:
        raise DataError(
            f"{where} has no usable text: {len(files)} file(s) found, none of them non-empty UTF-8 text; "
            "expected UTF-8 text files (.txt, .md, .py, .json, .csv, ...)"
        )
    return documents


def decode_text(raw: bytes) -> str:
    if b"\x00" in raw:  # UTF-8 decodes NUL bytes happily, but files holding them are binary
        raise ValueError("binary data: contains NUL bytes")
    text = raw.decode("utf-8-sig")  # -sig: drop a byte-order mark that some editors write
    # one newline convention, so Windows files do not double the vocabulary's line endings
    return text.replace("\r\n", "\n")


def describe_decode_error(e: Exception) -> str:
    if isinstance(e, UnicodeDecodeError):
        return f"not UTF-8: byte 0x{e.object[e.start]:02x} at offset {e.start}"
    return str(e).splitlines()[0] if str(e) else type(e).__name__


# ---- tokenising and splitting ------------------------------------------------------------------
def in_validation(name: str, val_fraction: float) -> bool:
    """A stable hash of the document's relative path: the same file always lands in the same split."""
    h = int.from_bytes(hashlib.sha256(name.encode("utf-8")).digest()[:8], "big")
    return h / 2**64 < val_fraction


def token_dtype(vocab_size: int) -> np.dtype:
    return np.dtype(np.uint16 if vocab_size <= 65535 else np.uint32)


def tokenize_corpus(documents: list[Document], val_fraction: float, progress: bool = True) -> TokenizedCorpus:
    # the vocabulary comes from the whole corpus, so validation text never holds unknown characters
    present = np.zeros(MAX_CODE_POINT + 1, dtype=bool)
    for doc in documents:
        present[np.frombuffer(doc.text.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)] = True
    tokenizer = CharTokenizer.from_code_points(np.flatnonzero(present))
    dtype = token_dtype(tokenizer.vocab_size)
    eot = np.array([tokenizer.eot_id], dtype=dtype)

    pieces = []  # per document: [eot, ids...]
    for doc in tqdm(documents, desc="tokenizing", unit="doc", disable=not progress, leave=False):
        pieces.append(np.concatenate([eot, tokenizer.encode_array(doc.text).astype(dtype)]))

    is_val = [in_validation(doc.name, val_fraction) for doc in documents]
    info = {"documents": len(documents), "characters": int(sum(len(d.text) for d in documents))}
    if any(is_val) and not all(is_val):
        train = np.concatenate([p for p, v in zip(pieces, is_val) if not v])
        val = np.concatenate([p for p, v in zip(pieces, is_val) if v])
        info.update(split="documents", train_documents=is_val.count(False), val_documents=is_val.count(True))
    else:
        # too few documents for a split by document: hold out the end of the token stream instead
        stream = np.concatenate(pieces)
        n_val = min(max(1, round(val_fraction * len(stream))), len(stream) - 1)
        train, val = stream[: len(stream) - n_val], stream[len(stream) - n_val :]
        info.update(split="end of stream", train_documents=len(documents), val_documents=0)
    return TokenizedCorpus(tokenizer, train, val, info)
