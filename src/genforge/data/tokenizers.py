"""Tokenizers: text <-> token ids, saved as one JSON file whose "type" field says which class reads it.

Every tokenizer offers the same small interface (``Tokenizer`` below), so a BPE tokenizer (HF
``tokenizers``) can be added later as one more class plus one line in ``TOKENIZER_TYPES``.
Id 0 is always the end-of-text token that separates documents.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, ClassVar, Iterable, Protocol

import numpy as np

from genforge.errors import DataError
from genforge.io import atomic_write_json

EOT = "<|endoftext|>"
MAX_CODE_POINT = 0x10FFFF


class Tokenizer(Protocol):
    """What the rest of genforge relies on. ``load_tokenizer`` returns one of these."""

    type: ClassVar[str]

    @property
    def vocab_size(self) -> int: ...

    @property
    def eot_id(self) -> int: ...

    def encode(self, text: str) -> list[int]: ...

    def decode(self, ids: Iterable[int]) -> str: ...

    def save(self, path: str | os.PathLike) -> None: ...

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Tokenizer": ...


def _to_code_points(text: str) -> np.ndarray:
    # surrogatepass: Python strings may hold lone surrogates; they round-trip like any other character
    return np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)


class CharTokenizer:
    """One id per character (Unicode code point) seen in the corpus; id 0 is ``<|endoftext|>``.

    Character ids are assigned in code-point order, so the same corpus always gives the same ids.
    Encoding is a table look-up over the UTF-32 code points (numpy), not a Python loop.
    """

    type: ClassVar[str] = "char"

    def __init__(self, chars: Iterable[str]):
        chars = list(chars)
        if any(len(c) != 1 for c in chars):
            raise DataError("a character tokenizer's vocabulary must be single characters")
        code_points = np.array(sorted({ord(c) for c in chars}), dtype=np.uint32)
        if len(code_points) != len(chars):
            raise DataError("a character tokenizer's vocabulary has duplicate characters")
        self._code_points = code_points  # id i + 1 -> code point
        self._lookup: np.ndarray | None = None  # code point -> id, built on first encode

    # ---- construction ----------------------------------------------------------------------
    @classmethod
    def from_text(cls, text: str) -> "CharTokenizer":
        return cls.from_code_points(np.unique(_to_code_points(text)))

    @classmethod
    def from_code_points(cls, code_points: np.ndarray) -> "CharTokenizer":
        """From the distinct code points of a corpus (see ``text.py``, which gathers them document by document)."""
        raw = np.asarray(code_points, dtype=np.uint32).tobytes()
        return cls(raw.decode("utf-32-le", "surrogatepass"))

    # ---- the Tokenizer interface -----------------------------------------------------------
    @property
    def vocab_size(self) -> int:
        return len(self._code_points) + 1

    @property
    def eot_id(self) -> int:
        return 0

    @property
    def chars(self) -> str:
        return self._code_points.tobytes().decode("utf-32-le", "surrogatepass")

    def encode(self, text: str) -> list[int]:
        return self.encode_array(text).tolist()

    def encode_array(self, text: str) -> np.ndarray:
        """Token ids as an int64 array; the fast path for whole corpora."""
        code_points = _to_code_points(text)
        if code_points.size == 0:
            return np.zeros(0, dtype=np.int64)
        ids = self._table()[code_points]
        unknown = ids < 0
        if unknown.any():
            missing = sorted(set(code_points[unknown].tolist()))
            shown = ", ".join(repr(chr(c)) for c in missing[:10]) + (", ..." if len(missing) > 10 else "")
            raise DataError(
                f"text has {len(missing)} character(s) not in the tokenizer's vocabulary: {shown}; "
                "use only characters from the training data"
            )
        return ids.astype(np.int64)

    def decode(self, ids: Iterable[int]) -> str:
        if hasattr(ids, "detach"):  # a torch tensor, possibly on an accelerator
            ids = ids.detach().cpu().numpy()
        ids = np.asarray(ids if isinstance(ids, (np.ndarray, list, tuple)) else list(ids), dtype=np.int64).reshape(-1)
        if ids.size and (ids.min() < 0 or ids.max() >= self.vocab_size):
            bad = ids[(ids < 0) | (ids >= self.vocab_size)][0]
            raise DataError(f"token id {int(bad)} is outside the vocabulary (0..{self.vocab_size - 1})")
        ids = ids[ids != self.eot_id]
        return self._code_points[ids - 1].tobytes().decode("utf-32-le", "surrogatepass")

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.type, "eot": EOT, "vocab": list(self.chars)}

    def save(self, path: str | os.PathLike) -> None:
        atomic_write_json(path, self.to_dict())

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "CharTokenizer":
        if d.get("type") != cls.type or not isinstance(d.get("vocab"), list):
            raise ValueError("not a character tokenizer (expected type 'char' and a 'vocab' list)")
        return cls(d["vocab"])

    @classmethod
    def load(cls, path: str | os.PathLike) -> "CharTokenizer":
        tokenizer = load_tokenizer(path)
        if not isinstance(tokenizer, cls):
            raise DataError(f"tokenizer file {path} holds a '{tokenizer.type}' tokenizer, not a character tokenizer")
        return tokenizer

    def __repr__(self) -> str:
        return f"CharTokenizer(vocab_size={self.vocab_size})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, CharTokenizer) and np.array_equal(self._code_points, other._code_points)

    def _table(self) -> np.ndarray:
        # a dense code point -> id table (4.4 MB): one gather per encode, whatever the text length
        if self._lookup is None:
            table = np.full(MAX_CODE_POINT + 1, -1, dtype=np.int32)
            table[self._code_points] = np.arange(1, len(self._code_points) + 1, dtype=np.int32)
            self._lookup = table
        return self._lookup


# "type" field in tokenizer.json -> class; a BPE tokenizer adds its line here
TOKENIZER_TYPES: dict[str, type] = {"char": CharTokenizer}


def load_tokenizer(path: str | os.PathLike) -> Tokenizer:
    """Read a tokenizer.json written by any tokenizer class, dispatching on its "type" field."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"tokenizer file {path} is missing; expected the tokenizer.json written by genforge")
    try:
        d = json.loads(path.read_text(encoding="utf-8"))
        kind = d.get("type") if isinstance(d, dict) else None
        if kind not in TOKENIZER_TYPES:
            raise ValueError(f"unknown tokenizer type {kind!r}; known: {', '.join(TOKENIZER_TYPES)}")
        return TOKENIZER_TYPES[kind].from_dict(d)
    except (OSError, UnicodeDecodeError, ValueError, TypeError, DataError) as e:
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise DataError(f"tokenizer file {path} is corrupt ({reason}); rebuild it with `genforge data prepare`") from None
