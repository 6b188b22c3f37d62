"""The character tokenizer and tokenizer files."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from genforge.data.tokenizers import EOT, CharTokenizer, load_tokenizer
from genforge.errors import DataError


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=200).filter(lambda s: EOT not in s))
def test_round_trip_any_unicode(s):
    tok = CharTokenizer.from_text(s)
    ids = tok.encode(s)
    assert len(ids) == len(s) and all(1 <= i < tok.vocab_size for i in ids)
    assert tok.decode(ids) == s
    assert tok.vocab_size == len(set(s)) + 1


@settings(max_examples=100, deadline=None)
@given(st.lists(st.text(min_size=1, max_size=30), min_size=1, max_size=5))
def test_documents_joined_by_eot_decode_without_it(docs):
    tok = CharTokenizer.from_text("".join(docs))
    ids = []
    for d in docs:
        ids += [tok.eot_id] + tok.encode(d)
    assert tok.decode(ids) == "".join(docs)


def test_ids_are_deterministic_and_eot_is_zero():
    a, b = CharTokenizer.from_text("banana!"), CharTokenizer.from_text("!nab")
    assert a == b and a.eot_id == 0 and a.vocab_size == 5
    assert a.encode("!abn") == [1, 2, 3, 4]  # code-point order
    assert a.decode(np.array([0, 2, 0, 3])) == "ab"
    assert a.decode(torch.tensor([[2, 4]])) == "an"


def test_unknown_characters_and_ids_are_named():
    tok = CharTokenizer.from_text("abc")
    with pytest.raises(DataError, match=r"2 character\(s\) not in the tokenizer's vocabulary: 'x', 'z'"):
        tok.encode("azbxc")
    with pytest.raises(DataError, match="outside the vocabulary"):
        tok.decode([1, 9])


def test_encode_is_vectorised_on_large_text():
    text = "".join(chr(c) for c in range(32, 1000)) * 2000  # ~1.9 M characters
    tok = CharTokenizer.from_text(text)
    ids = tok.encode_array(text)
    assert ids.dtype == np.int64 and len(ids) == len(text)
    assert tok.decode(ids) == text


def test_save_load_round_trip(tmp_path):
    tok = CharTokenizer.from_text("héllo wörld ✓ \n\t 🎉")
    tok.save(tmp_path / "tokenizer.json")
    d = json.loads((tmp_path / "tokenizer.json").read_text())
    assert d["type"] == "char" and d["eot"] == EOT
    loaded = CharTokenizer.load(tmp_path / "tokenizer.json")
    assert loaded == tok and loaded.encode("wörld 🎉") == tok.encode("wörld 🎉")
    assert load_tokenizer(tmp_path / "tokenizer.json") == tok


def test_load_errors_are_one_line(tmp_path):
    with pytest.raises(DataError, match="missing") as e:
        load_tokenizer(tmp_path / "nope.json")
    assert "\n" not in str(e.value)
    (tmp_path / "bad.json").write_text("{broken")
    with pytest.raises(DataError, match="corrupt") as e:
        CharTokenizer.load(tmp_path / "bad.json")
    assert "\n" not in str(e.value)
    (tmp_path / "other.json").write_text(json.dumps({"type": "wordpiece"}))
    with pytest.raises(DataError, match="unknown tokenizer type 'wordpiece'"):
        load_tokenizer(tmp_path / "other.json")
    (tmp_path / "dup.json").write_text(json.dumps({"type": "char", "vocab": ["a", "a"]}))
    with pytest.raises(DataError, match="corrupt"):
        load_tokenizer(tmp_path / "dup.json")
