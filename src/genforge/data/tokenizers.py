"""Tokenizers: text <-> token ids, saved as one JSON file whose "type" field says which class reads it.

Two kinds, one small interface (``Tokenizer`` below):

- ``CharTokenizer``: one id per character seen in the corpus. Small corpora, exact, no training.
- ``BPETokenizer``: byte-level BPE trained on the corpus with HF ``tokenizers``. Every byte is in its
  vocabulary, so it encodes any text, including text it never saw; fewer tokens per character.

Both carry the same special tokens: ``<|endoftext|>`` (id 0) separates documents, and
``<|fim_prefix|>``, ``<|fim_middle|>``, ``<|fim_suffix|>`` mark fill-in-the-middle examples (a BPE made
elsewhere, such as an imported GPT-2's, has them at its own ids, the FIM tokens perhaps not at all).
Special tokens exist only as ids: encoding text never produces them (the string "<|endoftext|>" in a
user's file is ordinary characters), and decoding drops them.

Files that are not valid UTF-8 reach the tokenizers as Python's "surrogateescape" text (see
``text.read_pieces``): each undecodable byte 0xXX is the lone surrogate U+DCXX. Both tokenizers encode
such an escaped byte as that one byte, so ``decode_bytes(encode(text))`` gives back the file's exact
bytes, while ``decode`` (for display) shows bytes that are not UTF-8 as U+FFFD.
"""

from __future__ import annotations

import functools
import json
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Iterable, Mapping, Protocol, Sequence

import numpy as np
from genforge.errors import DataError
from genforge.io import atomic_write_json

if TYPE_CHECKING:
    from tokenizers import Tokenizer as HFTokenizer

EOT = "<|endoftext|>"
FIM_PREFIX = "<|fim_prefix|>"
FIM_MIDDLE = "<|fim_middle|>"
FIM_SUFFIX = "<|fim_suffix|>"
FIM_TOKENS = (FIM_PREFIX, FIM_MIDDLE, FIM_SUFFIX)
SPECIAL_TOKENS = (EOT, *FIM_TOKENS)
DEFAULT_SPECIAL_IDS = {name: i for i, name in enumerate(SPECIAL_TOKENS)}  # where genforge's BPE puts them
MAX_CODE_POINT = 0x10FFFF
MIN_BPE_VOCAB = 256 + len(SPECIAL_TOKENS)  # every byte, plus the special tokens
MAX_BPE_VOCAB = 2**32 - 1  # ids are stored as uint32 at most
ESCAPE_BASE = 0xDC00  # "surrogateescape" reads an undecodable byte 0xXX as U+DCXX (0x80 <= XX <= 0xFF)
_ESCAPED_RUNS = re.compile("([\udc80-\udcff]+)")  # a capturing group: re.split keeps the runs, at odd indices
_OTHER_SURROGATES = re.compile("[\ud800-\udc7f\udd00-\udfff]")  # lone surrogates that are not escaped bytes


class Tokenizer(Protocol):
    """What the rest of genforge relies on. ``load_tokenizer`` returns one of these."""

    type: ClassVar[str]

    @property
    def vocab_size(self) -> int: ...

    @property
    def eot_id(self) -> int: ...

    @property
    def special_ids(self) -> dict[str, int]:
        """Special token name -> id, e.g. {"<|endoftext|>": 0, "<|fim_prefix|>": ..., ...}."""
        ...

    def fim_ids(self) -> tuple[int, int, int] | None:
        """(prefix, middle, suffix) ids for fill-in-the-middle; None when the tokenizer has none (old char files)."""
        ...

    def encode(self, text: str) -> list[int]: ...

    def encode_batch(self, texts: Sequence[str]) -> list[np.ndarray]:
        """Token ids of each text as int64 arrays: the fast path for whole corpora."""
        ...

    def decode(self, ids: Iterable[int]) -> str:
        """The text of the ids, for display: special tokens dropped, bytes that are not UTF-8 shown as U+FFFD."""
        ...

    def decode_bytes(self, ids: Iterable[int]) -> bytes:
        """The exact bytes of the ids: their ``token_bytes`` joined (special tokens give none). For text read
        from a file, ``decode_bytes(encode(text)).decode("utf-8", "surrogateescape") == text``."""
        ...

    def token_bytes(self, token_id: int) -> bytes:
        """The bytes one token stands for (b"" for special tokens): UTF-8, and an escaped byte U+DCXX is the
        one raw byte 0xXX. What bits-per-byte should count, since decoding a single BPE token may give
        U+FFFD for a part of a character."""
        ...

    def save(self, path: str | os.PathLike) -> None: ...

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Tokenizer": ...


def has_surrogates(text: str) -> bool:
    """Whether ``text`` holds a lone surrogate, e.g. an escaped byte of a file that is not UTF-8. Free for
    ASCII text; otherwise about the cost of encoding it."""
    if text.isascii():
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _to_code_points(text: str) -> np.ndarray:
    # surrogatepass: Python strings may hold lone surrogates; they round-trip like any other character
    return np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)


def _as_ids(ids: Any, vocab_size: int) -> np.ndarray:
    """Any id sequence (list, numpy array, torch tensor on any device) as a flat int64 array, range-checked."""
    if hasattr(ids, "detach"):  # a torch tensor, possibly on an accelerator
        ids = ids.detach().cpu().numpy()
    ids = np.asarray(ids if isinstance(ids, (np.ndarray, list, tuple)) else list(ids), dtype=np.int64).reshape(-1)
    if ids.size and (ids.min() < 0 or ids.max() >= vocab_size):
        bad = ids[(ids < 0) | (ids >= vocab_size)][0]
        raise DataError(f"token id {int(bad)} is outside the vocabulary (0..{vocab_size - 1})")
    return ids


class CharTokenizer:
    """One id per character (Unicode code point) seen in the corpus.

    Ids: 0 is ``<|endoftext|>``; 1..n the characters in code-point order (so the same corpus always gives
    the same ids); then the three FIM tokens. FIM tokens come last so that files written before they
    existed keep their ids: such files (no "specials" field) still load, with ``fim_ids()`` None.
    Encoding is a table look-up over the UTF-32 code points (numpy), not a Python loop.

    Any character is kept as it is, lone surrogates included; an escaped byte U+DC80..U+DCFF (a byte of
    a file that is not UTF-8) stands for that one raw byte in ``token_bytes`` and ``decode_bytes``.
    """

    type: ClassVar[str] = "char"

    def __init__(self, chars: Iterable[str], fim: bool = True):
        chars = list(chars)
        if any(not isinstance(c, str) or len(c) != 1 for c in chars):
            raise DataError("a character tokenizer's vocabulary must be single characters")
        code_points = np.array(sorted({ord(c) for c in chars}), dtype=np.uint32)
        if len(code_points) != len(chars):
            raise DataError("a character tokenizer's vocabulary has duplicate characters")
        self._code_points = code_points  # id i + 1 -> code point
        self._fim = bool(fim)
        self._lookup: np.ndarray | None = None  # code point -> id, built on first encode

    # ---- construction ----------------------------------------------------------------------
    @classmethod
    def from_text(cls, text: str) -> "CharTokenizer":
        return cls.from_code_points(np.unique(_to_code_points(text)))

    @classmethod
    def from_texts(cls, texts: Iterable[str]) -> "CharTokenizer":
        """From a corpus given piece by piece (see ``text.py``), never holding more than one piece."""
        present = np.zeros(MAX_CODE_POINT + 1, dtype=bool)
        for text in texts:
            present[_to_code_points(text)] = True
        return cls.from_code_points(np.flatnonzero(present))

    @classmethod
    def from_code_points(cls, code_points: np.ndarray) -> "CharTokenizer":
        raw = np.asarray(code_points, dtype=np.uint32).tobytes()
        return cls(raw.decode("utf-32-le", "surrogatepass"))

    @classmethod
    def train(cls, texts: Iterable[str], vocab_size: int | None = None, progress: bool = True) -> "CharTokenizer":
        """The ``train_tokenizer`` entry point. The vocabulary is whatever characters occur, so ``vocab_size``
        is unused; reading the corpus is the only slow part, and the corpus shows its own progress."""
        return cls.from_texts(texts)

    # ---- the Tokenizer interface -----------------------------------------------------------
    @property
    def vocab_size(self) -> int:
        return len(self._code_points) + 1 + (len(FIM_TOKENS) if self._fim else 0)

    @property
    def eot_id(self) -> int:
        return 0

    @property
    def special_ids(self) -> dict[str, int]:
        ids = {EOT: 0}
        if self._fim:
            first = len(self._code_points) + 1
            ids.update({name: first + i for i, name in enumerate(FIM_TOKENS)})
        return ids

    def fim_ids(self) -> tuple[int, int, int] | None:
        if not self._fim:
            return None
        first = len(self._code_points) + 1
        return first, first + 1, first + 2

    @property
    def chars(self) -> str:
        return self._code_points.tobytes().decode("utf-32-le", "surrogatepass")

    def encode(self, text: str) -> list[int]:
        return self.encode_array(text).tolist()

    def encode_array(self, text: str) -> np.ndarray:
        """Token ids as an int64 array; never a special token's id."""
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

    def encode_batch(self, texts: Sequence[str]) -> list[np.ndarray]:
        return [self.encode_array(t) for t in texts]

    def decode(self, ids: Iterable[int]) -> str:
        """The text of the character ids; special tokens are dropped. Ids outside the vocabulary raise DataError.

        Escaped bytes (U+DC80..U+DCFF) are shown as a byte-level BPE would show them: the bytes they make
        up decoded as UTF-8, with U+FFFD where they are not UTF-8, so the result can be printed and saved.
        """
        code_points = self._char_code_points(ids)
        if ((code_points >= ESCAPE_BASE + 0x80) & (code_points <= ESCAPE_BASE + 0xFF)).any():
            return self._bytes_of(code_points).decode("utf-8", "replace")
        return code_points.tobytes().decode("utf-32-le", "surrogatepass")

    def decode_bytes(self, ids: Iterable[int]) -> bytes:
        """The exact bytes of the ids (see ``Tokenizer.decode_bytes``); special tokens are dropped."""
        return self._bytes_of(self._char_code_points(ids))

    def token_bytes(self, token_id: int) -> bytes:
        if not 0 <= token_id < self.vocab_size:
            raise DataError(f"token id {token_id} is outside the vocabulary (0..{self.vocab_size - 1})")
        if token_id == 0 or token_id > len(self._code_points):
            return b""
        return _char_bytes(int(self._code_points[token_id - 1]))

    def _char_code_points(self, ids: Iterable[int]) -> np.ndarray:
        ids = _as_ids(ids, self.vocab_size)
        return self._code_points[ids[(ids >= 1) & (ids <= len(self._code_points))] - 1]

    @staticmethod
    def _bytes_of(code_points: np.ndarray) -> bytes:
        text = code_points.tobytes().decode("utf-32-le", "surrogatepass")
        try:
            return text.encode("utf-8", "surrogateescape")
        except UnicodeEncodeError:  # lone surrogates that are not escaped bytes: their 3-byte "surrogatepass" form
            return b"".join(_char_bytes(c) for c in code_points.tolist())

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"type": self.type, "eot": EOT, "vocab": list(self.chars)}
        if self._fim:
            d["specials"] = self.special_ids
        return d

    def save(self, path: str | os.PathLike) -> None:
        atomic_write_json(path, self.to_dict())

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "CharTokenizer":
        if d.get("type") != cls.type or not isinstance(d.get("vocab"), list):
            raise ValueError("not a character tokenizer (expected type 'char' and a 'vocab' list)")
        tokenizer = cls(d["vocab"], fim="specials" in d)
        if "specials" in d and d["specials"] != tokenizer.special_ids:
            raise ValueError(f"'specials' is {d['specials']!r}, expected {tokenizer.special_ids!r}")
        return tokenizer

    @classmethod
    def load(cls, path: str | os.PathLike) -> "CharTokenizer":
        return _load_as(cls, path)

    def __repr__(self) -> str:
        return f"CharTokenizer(vocab_size={self.vocab_size})"

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, CharTokenizer) and self._fim == other._fim
                and np.array_equal(self._code_points, other._code_points))

    def _table(self) -> np.ndarray:
        # a dense code point -> id table (4.4 MB): one gather per encode, whatever the text length
        if self._lookup is None:
            table = np.full(MAX_CODE_POINT + 1, -1, dtype=np.int32)
            table[self._code_points] = np.arange(1, len(self._code_points) + 1, dtype=np.int32)
            self._lookup = table
        return self._lookup


def _char_bytes(code_point: int) -> bytes:
    if ESCAPE_BASE + 0x80 <= code_point <= ESCAPE_BASE + 0xFF:
        return bytes([code_point - ESCAPE_BASE])
    return chr(code_point).encode("utf-8", "surrogatepass")


class BPETokenizer:
    """Byte-level BPE (GPT-2 style) trained with HF ``tokenizers``; ids 0..3 are the special tokens.

    A BPE made elsewhere (an imported model's: GPT-2 has ``<|endoftext|>`` at id 50256 and no FIM tokens)
    carries its special tokens where it has them: ``specials`` maps their names to ids, end-of-text
    required, the three FIM tokens all or none (``fim_ids()`` is None without them).

    Text is split into UTF-8 bytes before merging, so any Python string encodes, whatever its script,
    and decodes back exactly. An escaped byte U+DC80..U+DCFF (a byte of a file that is not UTF-8, see
    the module docstring) encodes to the single-byte token of that byte; other lone surrogates raise
    DataError. A single token may hold part of a character's bytes, so an arbitrary id sequence (say, a
    model's sample cut short) may not be valid UTF-8: ``decode`` never raises for ids in the
    vocabulary, and such bytes become U+FFFD (the replacement character); ``decode_bytes`` gives the
    bytes themselves.
    """

    type: ClassVar[str] = "bpe"

    def __init__(self, hf: "HFTokenizer", specials: Mapping[str, int] | None = None):
        self._specials = dict(DEFAULT_SPECIAL_IDS if specials is None else specials)
        _check_specials(hf, self._specials)
        # match special tokens' strings in text as ordinary bytes, never as the special ids
        # (not saved in HF's JSON, so set on every construction)
        hf.encode_special_tokens = True
        self._hf = hf
        self._byte_ids: np.ndarray | None = None  # byte -> id of its single-byte token, built when first needed
        self._id_bytes: list[bytes] | None = None  # id -> token_bytes, built when first needed

    @classmethod
    def train(cls, texts: Iterable[str], vocab_size: int, progress: bool = True) -> "BPETokenizer":
        """Learn merges from ``texts`` (any iterable: files are read lazily) up to ``vocab_size`` ids in all.

        A small corpus may run out of pairs to merge first; the vocabulary is then smaller. Escaped bytes
        (U+DC80..U+DCFF) in ``texts`` are left out of the merges: they always encode byte by byte.
        """
        from tokenizers import Tokenizer as HFTokenizer
        from tokenizers import decoders, models, pre_tokenizers, trainers

        check_bpe_vocab_size(vocab_size)
        hf = HFTokenizer(models.BPE())
        hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
        hf.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size,
            special_tokens=list(SPECIAL_TOKENS),  # ids 0..3, in this order
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),  # all 256 bytes, seen in the corpus or not
            show_progress=progress,
        )
        hf.train_from_iterator(_without_escaped_bytes(texts), trainer=trainer)
        return cls(hf)

    # ---- the Tokenizer interface -----------------------------------------------------------
    @property
    def vocab_size(self) -> int:
        return self._hf.get_vocab_size(with_added_tokens=True)

    @property
    def eot_id(self) -> int:
        return self._specials[EOT]

    @property
    def special_ids(self) -> dict[str, int]:
        return dict(self._specials)

    def fim_ids(self) -> tuple[int, int, int] | None:
        if FIM_PREFIX not in self._specials:
            return None
        return self._specials[FIM_PREFIX], self._specials[FIM_MIDDLE], self._specials[FIM_SUFFIX]

    def encode(self, text: str) -> list[int]:
        return self.encode_batch([text])[0].tolist()

    def encode_array(self, text: str) -> np.ndarray:
        return self.encode_batch([text])[0]

    def encode_batch(self, texts: Sequence[str]) -> list[np.ndarray]:
        encode = getattr(self._hf, "encode_batch_fast", self._hf.encode_batch)  # _fast (no offsets): tokenizers>=0.20
        texts = list(texts)
        try:
            encodings = encode(texts, add_special_tokens=False)
        except TypeError:  # HF takes no lone surrogates: a text holds escaped bytes (or is not valid text)
            return self._encode_with_escaped_bytes(texts, encode)
        return [np.array(e.ids, dtype=np.int64) for e in encodings]

    def _encode_with_escaped_bytes(self, texts: list[str], encode) -> list[np.ndarray]:
        """The slow path: each text split into runs of escaped bytes, which become single-byte tokens, and
        runs of other text, which HF encodes (all of the batch's runs in one call)."""
        byte_ids = self._byte_id_table().tolist()
        runs: list[str] = []
        layouts: list[list[int | list[int]]] = []  # per text: an index into runs, or the ids of escaped bytes
        for text in texts:
            _check_encodable(text)
            layout: list[int | list[int]] = []
            for i, run in enumerate(_ESCAPED_RUNS.split(text)):
                if i % 2:
                    layout.append([byte_ids[ord(c) - ESCAPE_BASE] for c in run])
                elif run:
                    layout.append(len(runs))
                    runs.append(run)
            layouts.append(layout)
        encodings = encode(runs, add_special_tokens=False) if runs else []
        out = []
        for layout in layouts:
            ids: list[int] = []
            for part in layout:
                ids.extend(encodings[part].ids if isinstance(part, int) else part)
            out.append(np.array(ids, dtype=np.int64))
        return out

    def decode(self, ids: Iterable[int]) -> str:
        """The text of the ids, for display; special tokens are dropped, and bytes that are not valid UTF-8
        (a cut-off character, an escaped byte of a file that is not UTF-8) become U+FFFD."""
        return self._hf.decode(_as_ids(ids, self.vocab_size).tolist(), skip_special_tokens=True)

    def decode_bytes(self, ids: Iterable[int]) -> bytes:
        """The exact bytes of the ids (see ``Tokenizer.decode_bytes``); special tokens are dropped."""
        table = self._token_bytes_table()
        return b"".join([table[i] for i in _as_ids(ids, self.vocab_size).tolist()])

    def token_bytes(self, token_id: int) -> bytes:
        if not 0 <= token_id < self.vocab_size:
            raise DataError(f"token id {token_id} is outside the vocabulary (0..{self.vocab_size - 1})")
        return self._token_bytes_table()[token_id]

    def _token_bytes_table(self) -> list[bytes]:
        if self._id_bytes is None:
            table = _byte_level_decoder()
            specials = set(self._specials.values())
            self._id_bytes = [b"" if i in specials else bytes(table[c] for c in self._hf.id_to_token(i))
                              for i in range(self.vocab_size)]
        return self._id_bytes

    def _byte_id_table(self) -> np.ndarray:
        if self._byte_ids is None:
            ids = np.zeros(256, dtype=np.int64)
            for char, byte in _byte_level_decoder().items():
                token_id = self._hf.token_to_id(char)
                if token_id is None:
                    raise DataError(f"this BPE tokenizer has no token for the byte 0x{byte:02x}; expected a byte-level BPE "
                                    "with all 256 bytes, as genforge trains")
                ids[byte] = token_id
            self._byte_ids = ids
        return self._byte_ids

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.type, "eot": EOT, "specials": self.special_ids, "hf_tokenizer": self._hf.to_str()}

    def save(self, path: str | os.PathLike) -> None:
        atomic_write_json(path, self.to_dict())

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "BPETokenizer":
        from tokenizers import Tokenizer as HFTokenizer

        if d.get("type") != cls.type or not isinstance(d.get("hf_tokenizer"), str):
            raise ValueError("not a BPE tokenizer (expected type 'bpe' and an 'hf_tokenizer' JSON string)")
        try:
            hf = HFTokenizer.from_str(d["hf_tokenizer"])
        except Exception as e:  # the Rust side raises plain Exception
            raise ValueError(f"'hf_tokenizer' is not a tokenizers JSON ({str(e).splitlines()[0] if str(e) else e!r})") from None
        specials = d.get("specials")
        if specials is not None and not (isinstance(specials, dict) and all(
                isinstance(i, int) and not isinstance(i, bool) for i in specials.values())):
            raise ValueError(f"'specials' is {specials!r}, expected special token names -> integer ids")
        return cls(hf, specials)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "BPETokenizer":
        return _load_as(cls, path)

    def __repr__(self) -> str:
        return f"BPETokenizer(vocab_size={self.vocab_size})"

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, BPETokenizer) and self._specials == other._specials
                and self._hf.to_str() == other._hf.to_str())


def _check_specials(hf: "HFTokenizer", specials: dict[str, int]) -> None:
    """DataError unless ``specials`` names end-of-text (and all three FIM tokens or none), each at the id the HF
    tokenizer gives it, as a special token there: HF then drops it when decoding, as genforge's decode does."""
    unknown = [name for name in specials if name not in SPECIAL_TOKENS]
    if unknown:
        raise DataError(f"a BPE tokenizer's special tokens are {', '.join(SPECIAL_TOKENS)}; got {', '.join(unknown)}")
    if EOT not in specials:
        raise DataError(f"a BPE tokenizer needs the end-of-text token {EOT}; its special tokens are "
                        f"{', '.join(specials) or 'none'}")
    if 0 < sum(name in specials for name in FIM_TOKENS) < len(FIM_TOKENS):
        raise DataError(f"a BPE tokenizer has all three fill-in-the-middle tokens ({', '.join(FIM_TOKENS)}) or none")
    added = hf.get_added_tokens_decoder()
    for name, i in specials.items():
        if hf.token_to_id(name) != i:
            raise DataError(f"a BPE tokenizer needs {name} at id {i}, found id {hf.token_to_id(name)}")
        if i not in added or not added[i].special:
            raise DataError(f"a BPE tokenizer needs {name} (id {i}) to be a special token of its HF tokenizer")


@functools.cache
def _byte_level_decoder() -> dict[str, int]:
    """The byte-level alphabet's character -> byte (GPT-2's table: printable bytes stand for themselves,
    the others are shifted to U+0100 and up, so every token is a printable string)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    shifted = [b for b in range(256) if b not in printable]
    table = {chr(b): b for b in printable}
    table.update({chr(256 + i): b for i, b in enumerate(shifted)})
    return table


def _check_encodable(text: str) -> None:
    """DataError naming the first lone surrogate in ``text`` that is not an escaped byte (U+DC80..U+DCFF)."""
    bad = _OTHER_SURROGATES.search(text)
    if bad:
        raise DataError(
            f"text holds a lone surrogate (U+{ord(bad.group()):04X} at index {bad.start()}), which UTF-8 cannot encode "
            "and is not an escaped byte (U+DC80..U+DCFF); expected valid Unicode text"
        )


def _without_escaped_bytes(texts: Iterable[str]) -> Iterable[str]:
    """``texts`` for the BPE trainer (which takes no lone surrogates): a text holding escaped bytes is passed
    on as the runs between them, so no merge spans one."""
    for text in texts:
        if not has_surrogates(text):
            yield text
            continue
        _check_encodable(text)
        yield from (run for run in _ESCAPED_RUNS.split(text)[::2] if run)


def check_bpe_vocab_size(vocab_size: Any) -> None:
    if isinstance(vocab_size, bool) or not isinstance(vocab_size, int) or not MIN_BPE_VOCAB <= vocab_size <= MAX_BPE_VOCAB:
        raise DataError(
            f"a BPE vocabulary size must be an integer from {MIN_BPE_VOCAB} (256 bytes + {len(SPECIAL_TOKENS)} special "
            f"tokens) to {MAX_BPE_VOCAB}, got {vocab_size!r}"
        )


# "type" field in tokenizer.json -> class
TOKENIZER_TYPES: dict[str, type] = {"char": CharTokenizer, "bpe": BPETokenizer}


def train_tokenizer(kind: str, texts: Iterable[str], vocab_size: int | None = None, progress: bool = True) -> Tokenizer:
    """A new tokenizer of type ``kind`` ("char" or "bpe") fitted to ``texts``, read once, lazily."""
    if kind not in TOKENIZER_TYPES:
        raise DataError(f"unknown tokenizer type {kind!r}; expected one of {', '.join(TOKENIZER_TYPES)}")
    return TOKENIZER_TYPES[kind].train(texts, vocab_size, progress=progress)


def load_tokenizer(path: str | os.PathLike, types: dict[str, Callable[[dict], Tokenizer]] | None = None) -> Tokenizer:
    """Read a tokenizer.json written by any tokenizer class, dispatching on its "type" field; ``types`` adds
    readers of types that are not trained on text (a modality's own, e.g. a VQ-VAE's codes)."""
    extra = types or {}
    path = Path(path)
    if not path.is_file():
        raise DataError(f"tokenizer file {path} is missing; expected the tokenizer.json written by genforge")
    try:
        d = json.loads(path.read_text(encoding="utf-8"))
        kind = d.get("type") if isinstance(d, dict) else None
        if kind in extra:
            return extra[kind](d)
        if kind not in TOKENIZER_TYPES:
            raise ValueError(f"unknown tokenizer type {kind!r}; known: {', '.join([*TOKENIZER_TYPES, *extra])}")
        return TOKENIZER_TYPES[kind].from_dict(d)
    except (OSError, UnicodeDecodeError, ValueError, TypeError, KeyError, DataError) as e:
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise DataError(f"tokenizer file {path} is corrupt ({reason}); rebuild it with `genforge data prepare`") from None


def _load_as(cls: type, path: str | os.PathLike):
    tokenizer = load_tokenizer(path)
    if not isinstance(tokenizer, cls):
        raise DataError(f"tokenizer file {path} holds a '{tokenizer.type}' tokenizer, not a '{cls.type}' tokenizer")
    return tokenizer
