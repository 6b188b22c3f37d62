"""genforge's text tokenizers as Hugging Face tokenizer files, and such files read back as genforge tokenizers.

Out: ``tokenizer.json`` (a ``tokenizers`` model that gives genforge's ids), ``tokenizer_config.json`` and
``special_tokens_map.json``, which ``transformers.AutoTokenizer`` loads as a ``PreTrainedTokenizerFast``.

- A ``BPETokenizer`` already is an HF byte-level BPE: its own JSON is written as it is.
- A ``CharTokenizer`` becomes a WordLevel vocabulary of its characters at their genforge ids, with a
  pre-tokenizer that isolates every character (newlines included) and a decoder that joins them with nothing
  between. A character UTF-8 cannot hold (a lone surrogate: a byte of a file that was not UTF-8) cannot be a
  ``tokenizers`` token; it keeps its id as the placeholder ``<|U+DC80|>``, which text never encodes to.

genforge never turns the strings of its special tokens in text into their ids; ``split_special_tokens`` makes
transformers do the same, so the two encode every text alike.

In: ``read_tokenizer`` takes a folder's ``tokenizer.json`` (or GPT-2's ``vocab.json`` + ``merges.txt``) and gives
the genforge tokenizer with the same ids: a byte-level BPE (special tokens where the file has them), or the
character tokenizer this module writes. Anything else has no genforge equivalent and is refused in one line.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from genforge.data.tokenizers import EOT, FIM_TOKENS, SPECIAL_TOKENS, BPETokenizer, CharTokenizer
from genforge.errors import DataError, ExportError
from genforge.io import atomic_write_json

if TYPE_CHECKING:
    from tokenizers import Tokenizer as HFTokenizer

TOKENIZER_JSON = "tokenizer.json"
TOKENIZER_CONFIG = "tokenizer_config.json"
SPECIAL_TOKENS_MAP = "special_tokens_map.json"
GPT2_VOCAB, GPT2_MERGES = "vocab.json", "merges.txt"
ANY_CHARACTER = r"[\s\S]"  # one code point, newlines included (Oniguruma's "." stops at "\n")
_PLACEHOLDER = re.compile(r"<\|U\+([0-9A-F]{4})\|>")
_SURROGATES = range(0xD800, 0xE000)


def is_text_tokenizer(tokenizer: Any) -> bool:
    """Whether ``tokenizer`` turns text into ids (and so has Hugging Face tokenizer files): not music's events or
    a VQ-VAE's codes, whose ids only genforge's codecs turn into files."""
    return isinstance(tokenizer, (CharTokenizer, BPETokenizer))


def write_tokenizer(tokenizer: CharTokenizer | BPETokenizer, out: Path, block_size: int) -> list[str]:
    """Write the tokenizer files for ``transformers.AutoTokenizer`` into ``out``; returns their names."""
    hf_backend(tokenizer).save(str(out / TOKENIZER_JSON))
    specials: dict[str, Any] = {name: EOT for name in ("bos_token", "eos_token", "unk_token", "pad_token")}
    specials["additional_special_tokens"] = [name for name in FIM_TOKENS if name in tokenizer.special_ids]
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        **specials,
        "model_max_length": block_size,
        "split_special_tokens": True,  # "<|endoftext|>" in text is its characters, as in genforge
        "clean_up_tokenization_spaces": False,  # decoding gives the text back as it was, spaces included
    }
    atomic_write_json(out / TOKENIZER_CONFIG, config)
    atomic_write_json(out / SPECIAL_TOKENS_MAP, specials)
    return [TOKENIZER_JSON, TOKENIZER_CONFIG, SPECIAL_TOKENS_MAP]


def hf_backend(tokenizer: CharTokenizer | BPETokenizer) -> "HFTokenizer":
    """The ``tokenizers.Tokenizer`` that gives the same ids as ``tokenizer``."""
    from tokenizers import Tokenizer as HFTokenizer

    if isinstance(tokenizer, BPETokenizer):
        return HFTokenizer.from_str(tokenizer.to_dict()["hf_tokenizer"])
    return _char_backend(tokenizer)


def _char_backend(tokenizer: CharTokenizer) -> "HFTokenizer":
    from tokenizers import AddedToken, Regex, decoders, models, pre_tokenizers
    from tokenizers import Tokenizer as HFTokenizer

    vocab = {_char_token(c): i for i, c in enumerate(tokenizer.chars, start=1)}
    vocab.update(tokenizer.special_ids)
    # an unknown character becomes end-of-text (genforge refuses it): HF tokenizers map what they lack to unk
    hf = HFTokenizer(models.WordLevel(vocab, unk_token=EOT))
    hf.pre_tokenizer = pre_tokenizers.Split(Regex(ANY_CHARACTER), behavior="isolated")
    hf.decoder = decoders.Fuse()
    hf.add_special_tokens([AddedToken(name, special=True, normalized=False) for name in tokenizer.special_ids])
    return hf


def _char_token(char: str) -> str:
    return f"<|U+{ord(char):04X}|>" if ord(char) in _SURROGATES else char


def _token_char(token: str) -> str | None:
    """The character a WordLevel token stands for, or None when it is no single character."""
    match = _PLACEHOLDER.fullmatch(token)
    if match and int(match.group(1), 16) in _SURROGATES:
        return chr(int(match.group(1), 16))
    return token if len(token) == 1 else None


# ---- reading a folder's tokenizer ------------------------------------------------------------------------
def read_tokenizer(folder: Path) -> CharTokenizer | BPETokenizer:
    """The genforge tokenizer of a transformers folder: from tokenizer.json, or GPT-2's vocab.json + merges.txt."""
    path = folder / TOKENIZER_JSON
    if path.is_file():
        hf, layout = _load_json_tokenizer(path)
        kind = (layout.get("model") or {}).get("type")
        if kind == "WordLevel":
            return _char_tokenizer(hf, layout, path)
        if kind == "BPE":
            return _bpe_tokenizer(hf, layout, path)
        raise ExportError(f"{path} holds a {kind} tokenizer, which has no genforge equivalent; genforge imports "
                          "byte-level BPE tokenizers (GPT-2's kind) and its own character tokenizers")
    if (folder / GPT2_VOCAB).is_file() and (folder / GPT2_MERGES).is_file():
        hf = _gpt2_backend(folder)
        return _bpe_tokenizer(hf, json.loads(hf.to_str()), folder / GPT2_VOCAB)
    raise ExportError(f"{folder} has no tokenizer; expected {TOKENIZER_JSON} (or GPT-2's {GPT2_VOCAB} + {GPT2_MERGES})")


def _load_json_tokenizer(path: Path) -> tuple["HFTokenizer", dict]:
    from tokenizers import Tokenizer as HFTokenizer

    try:
        text = path.read_text(encoding="utf-8")
        return HFTokenizer.from_str(text), json.loads(text)
    except Exception as e:  # tokenizers' Rust side raises plain Exception
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ExportError(f"{path} is not a readable tokenizers file ({reason})") from None


def _gpt2_backend(folder: Path) -> "HFTokenizer":
    """GPT-2's byte-level BPE from its vocab.json and merges.txt, as GPT-2's own tokenizer builds it."""
    from tokenizers import AddedToken, decoders, models, pre_tokenizers
    from tokenizers import Tokenizer as HFTokenizer

    try:
        hf = HFTokenizer(models.BPE.from_file(str(folder / GPT2_VOCAB), str(folder / GPT2_MERGES)))
    except Exception as e:  # tokenizers' Rust side raises plain Exception
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ExportError(f"{folder}: {GPT2_VOCAB} + {GPT2_MERGES} are not a readable BPE ({reason})") from None
    config_path = folder / TOKENIZER_CONFIG
    config = json.loads(config_path.read_text(encoding="utf-8")) if config_path.is_file() else {}
    hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=bool(config.get("add_prefix_space", False)))
    hf.decoder = decoders.ByteLevel()
    # as transformers' GPT2Tokenizer: end-of-text is a special token, after the vocabulary when it is not in it
    vocab = hf.get_vocab()
    names = [EOT, *(name for name in FIM_TOKENS if name in vocab)]
    hf.add_special_tokens([AddedToken(name, special=True, normalized=False) for name in names])
    return hf


def _bpe_tokenizer(hf: "HFTokenizer", layout: dict, path: Path) -> BPETokenizer:
    """A genforge BPE of ``hf`` when it is byte-level through and through (every token a run of bytes, every
    byte a token, no text normalisation), so genforge's exact bytes-per-token hold."""
    from tokenizers import pre_tokenizers

    def refuse(why: str) -> ExportError:
        return ExportError(f"{path}: {why}, which has no genforge equivalent; genforge imports byte-level BPE "
                           "tokenizers (GPT-2's kind)")

    if layout.get("normalizer") is not None:
        raise refuse(f"the tokenizer normalises text first ({layout['normalizer'].get('type')})")
    if (layout.get("decoder") or {}).get("type") != "ByteLevel":
        raise refuse(f"the tokenizer's decoder is {(layout.get('decoder') or {}).get('type')}, not ByteLevel")
    added = hf.get_added_tokens_decoder()
    others = [token.content for token in added.values() if token.content not in SPECIAL_TOKENS]
    if others:
        raise refuse(f"it has added tokens genforge cannot carry ({', '.join(others[:5])})")
    alphabet = set(pre_tokenizers.ByteLevel.alphabet())
    vocab = hf.get_vocab(with_added_tokens=False)
    if not alphabet <= vocab.keys():
        raise refuse("its vocabulary lacks some of the 256 byte tokens")
    strays = [token for token, i in vocab.items() if i not in added and not set(token) <= alphabet]
    if strays:
        raise refuse(f"its token {strays[0]!r} is not a run of byte-level characters")
    try:
        return BPETokenizer(hf, {token.content: i for i, token in added.items()})
    except DataError as e:
        raise ExportError(f"{path}: {e}") from None


def _char_tokenizer(hf: "HFTokenizer", layout: dict, path: Path) -> CharTokenizer:
    """The CharTokenizer that ``write_tokenizer`` wrote as this WordLevel tokenizer, checked to give the same ids."""
    vocab = hf.get_vocab(with_added_tokens=True)
    chars = [char for char in map(_token_char, vocab) if char is not None]
    mine = CharTokenizer(chars, fim=all(name in vocab for name in FIM_TOKENS))
    written = json.loads(hf_backend(mine).to_str())
    same = all(written.get(part) == layout.get(part) for part in ("normalizer", "pre_tokenizer", "decoder", "model"))
    if not same:
        raise ExportError(f"{path} holds a WordLevel tokenizer that is not a genforge character tokenizer's, which has "
                          "no genforge equivalent; genforge imports byte-level BPE tokenizers (GPT-2's kind) and its "
                          "own character tokenizers")
    return mine
