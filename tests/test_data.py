"""Data sources, the cache, splits and batches."""

from __future__ import annotations

import itertools
import json
import os
import time

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

import genforge.data
import genforge.modalities.image
from genforge.config import DataConfig
from genforge.data import cache_dir
from genforge.modalities import list_sources, prepare
from genforge.data import cache as data_cache
from genforge.data.datasets import ImageDataset, TextDataset
from genforge.data.images import split_indices
from genforge.data import text as data_text
from genforge.data.text import (
    PYCODE_EXCLUDED_DIRS, Document, in_validation, read_pieces, stdlib_files, stdlib_root, write_token_streams,
)
from genforge.data.tokenizers import EOT, SPECIAL_TOKENS, BPETokenizer, CharTokenizer
from genforge.errors import ConfigError, DataError

pytestmark = pytest.mark.usefixtures("one_thread")


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def write_image(path, size=(20, 30), mode="RGB", seed=0):
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    channels = {"RGB": 3, "L": 1}[mode]
    a = rng.integers(0, 256, (size[1], size[0], channels), dtype=np.uint8)
    Image.fromarray(a[..., 0] if channels == 1 else a, mode).save(path)


def no_rebuild(monkeypatch):
    """Make any cache build fail, so a passing prepare() proves the cache was reused."""
    def refuse(*args, **kwargs):
        raise AssertionError("the cache entry was rebuilt")

    monkeypatch.setattr(data_cache, "build", refuse)


# ---- built-in sources --------------------------------------------------------------------------
def test_digits_builds_and_reuses_cache(monkeypatch):
    p = prepare("digits", progress=False)
    assert p.spec.modality == "image" and p.spec.shape == (1, 8, 8)
    assert p.spec.num_classes == 10 and p.spec.class_names == [str(i) for i in range(10)]
    assert len(p.train) + len(p.val) == 1797
    assert len(p.val) == round(0.1 * 1797)
    assert p.train.images.dtype == torch.uint8 and int(p.train.images.max()) == 255
    assert p.path.parent == cache_dir() and (p.path / "manifest.json").is_file()
    assert p.tokenizer is None
    m = p.manifest
    assert m["source"] == "digits" and m["sizes"] == {"train": len(p.train), "val": len(p.val)}
    assert m["shape"] == [1, 8, 8] and len(m["pixel_mean"]) == 1 and 0 < m["pixel_mean"][0] < 1
    assert m["created"]

    no_rebuild(monkeypatch)
    again = prepare("digits", progress=False)
    assert again.path == p.path and again.manifest == m
    assert torch.equal(again.val.images, p.val.images)


def test_mnist_builds():
    p = prepare("mnist", DataConfig(source="mnist"), progress=False)
    assert p.spec.shape == (1, 28, 28) and p.spec.num_classes == 10
    assert len(p.train) + len(p.val) == 5000
    assert p.train.labels.dtype == torch.int64 and set(p.train.labels.tolist()) == set(range(10))
    b = p.train.batch(16, gen())
    assert b["x"].shape == (16, 1, 28, 28) and b["x"].dtype == torch.float32
    assert b["x"].min() >= -1 and b["x"].max() <= 1 and b["x"].min() == -1


def test_pycode_builds_and_reuses_cache(monkeypatch):
    t0 = time.perf_counter()
    p = prepare("pycode", DataConfig(source="pycode", block_size=64), progress=False)
    first = time.perf_counter() - t0
    assert p.spec.modality == "text" and p.spec.shape == (64,)
    assert p.spec.vocab_size == p.tokenizer.vocab_size > 90
    m = p.manifest
    assert m["split"] == "documents" and m["val_documents"] > 0 and m["train_documents"] > 0
    assert m["tokens"]["train"] + m["tokens"]["val"] == m["characters"] + m["documents"]
    assert m["tokens"]["train"] > 1_000_000 and m["token_dtype"] == "uint16"
    assert isinstance(p.train.tokens, np.memmap) and p.train.tokens.dtype == np.uint16
    assert p.train.tokens[0] == p.tokenizer.eot_id  # every document starts after an end-of-text token
    head = p.tokenizer.decode(p.train.tokens[:200_000])
    assert "def " in head and "import " in head

    no_rebuild(monkeypatch)
    t0 = time.perf_counter()
    again = prepare("pycode", DataConfig(source="pycode", block_size=32), progress=False)  # block_size is not cached
    assert again.path == p.path and again.spec.shape == (32,)
    assert time.perf_counter() - t0 < first
    assert again.tokenizer == p.tokenizer


def test_pycode_files_exclude_tests_and_tools():
    files = stdlib_files()
    rels = [f.relative_to(stdlib_root()).as_posix() for f in files]
    assert rels == sorted(rels) and len(rels) > 100
    assert "os.py" in rels and "json/decoder.py" in rels
    for rel in rels:
        assert not set(rel.split("/")[:-1]) & PYCODE_EXCLUDED_DIRS, rel


def test_builtin_images_can_be_resized_and_coloured():
    p = prepare("digits", DataConfig(source="digits", image_size=16, channels=3), progress=False)
    assert p.spec.shape == (3, 16, 16)
    x = p.val.get([0])["x"]
    assert torch.equal(x[:, 0], x[:, 1])  # grayscale replicated into RGB


def test_list_sources():
    prepare("digits", progress=False)
    sources = {s["name"]: s for s in list_sources()}
    assert set(sources) == {"digits", "mnist", "pycode", "breast_cancer", "wine", "randhie", "heart", "grunfeld",
                            "macrodata", "bach", "spoken-digits"}
    assert sources["digits"]["cached"] is True and sources["pycode"]["modality"] == "text"
    assert sources["bach"]["modality"] == "music"
    assert all(s["description"] for s in sources.values())


# ---- folder:PATH -------------------------------------------------------------------------------
def test_folder_labels_from_subfolders(tmp_path):
    for i in range(4):
        write_image(tmp_path / "imgs" / "dogs" / f"d{i}.png", seed=i)
        write_image(tmp_path / "imgs" / "cats" / f"c{i}.jpg", size=(40, 25), seed=10 + i)
    p = prepare(f"folder:{tmp_path / 'imgs'}", DataConfig(image_size=16), progress=False)
    assert p.spec.shape == (3, 16, 16)
    assert p.spec.num_classes == 2 and p.spec.class_names == ["cats", "dogs"]
    labels = torch.cat([p.train.labels, p.val.labels])
    assert sorted(labels.tolist()) == [0] * 4 + [1] * 4
    assert len(p.val) == 1  # 5% of 8 rounds to 0: at least one validation image
    b = p.train.batch(5, gen())
    assert b["x"].shape == (5, 3, 16, 16) and b["y"].dtype == torch.int64


def test_folder_grayscale_detected_and_default_size(tmp_path):
    for i in range(3):
        write_image(tmp_path / "g" / f"{i}.png", size=(70, 90), mode="L", seed=i)
    p = prepare(f"folder:{tmp_path / 'g'}", progress=False)
    assert p.spec.shape == (1, 64, 64)  # image_size defaults to 64 for folders
    assert p.spec.num_classes is None and "y" not in p.train.batch(2, gen())


def test_folder_mixed_modes_become_rgb_unless_asked(tmp_path):
    write_image(tmp_path / "m" / "a.png", mode="L")
    write_image(tmp_path / "m" / "b.png", mode="RGB")
    Image.new("RGBA", (12, 12), (255, 0, 0, 0)).save(tmp_path / "m" / "c.png")  # transparent -> white
    p = prepare(f"folder:{tmp_path / 'm'}", DataConfig(image_size=8), progress=False)
    assert p.spec.shape == (3, 8, 8)
    everything = torch.cat([p.train.images, p.val.images])
    assert any(bool((img == 255).all()) for img in everything)
    gray = prepare(f"folder:{tmp_path / 'm'}", DataConfig(image_size=8, channels=1), progress=False)
    assert gray.spec.shape == (1, 8, 8)


def test_folder_skips_corrupt_image_with_warning(tmp_path):
    for i in range(3):
        write_image(tmp_path / "c" / f"ok{i}.png", seed=i)
    (tmp_path / "c" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not really a png")
    (tmp_path / "c" / "notes.txt").write_text("not an image, and not an image extension either")
    with pytest.warns(UserWarning, match=r"skipped 1 of 4 .*broken\.png"):
        p = prepare(f"folder:{tmp_path / 'c'}", DataConfig(image_size=8), progress=False)
    assert len(p.train) + len(p.val) == 3
    assert p.manifest["skipped"] == ["broken.png"]


def test_folder_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no image files"):
        prepare(f"folder:{tmp_path / 'empty'}", progress=False)
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "x.jpg").write_bytes(b"garbage")
    with pytest.raises(DataError, match="no readable images"):
        prepare(f"folder:{tmp_path / 'bad'}", progress=False)
    with pytest.raises(DataError, match="does not exist"):
        prepare(f"folder:{tmp_path / 'missing'}", progress=False)
    (tmp_path / "file.png").write_bytes(b"x")
    with pytest.raises(DataError, match="not a folder"):
        prepare(f"folder:{tmp_path / 'file.png'}", progress=False)


def test_folder_cache_follows_file_changes(tmp_path, monkeypatch):
    for i in range(3):
        write_image(tmp_path / "f" / f"{i}.png", seed=i)
    src = f"folder:{tmp_path / 'f'}"
    first = prepare(src, DataConfig(image_size=8), progress=False)
    write_image(tmp_path / "f" / "3.png", seed=3)
    second = prepare(src, DataConfig(image_size=8), progress=False)
    assert second.path != first.path and len(second.train) + len(second.val) == 4
    no_rebuild(monkeypatch)
    assert prepare(src, DataConfig(image_size=8), progress=False).path == second.path


# ---- text:PATH ---------------------------------------------------------------------------------
def test_text_file_splits_at_end_of_stream(tmp_path):
    body = "hello world, this is a small corpus.\n" * 40
    (tmp_path / "a.txt").write_text(body, encoding="utf-8")
    p = prepare(f"text:{tmp_path / 'a.txt'}", DataConfig(block_size=16), progress=False)
    m = p.manifest
    assert m["split"] == "end of stream" and m["documents"] == 1
    assert p.train.num_tokens + p.val.num_tokens == len(body) + 1
    assert p.val.num_tokens == round(0.1 * (len(body) + 1))
    stream = np.concatenate([np.asarray(p.train.tokens), np.asarray(p.val.tokens)])
    assert p.tokenizer.decode(stream) == body
    assert p.spec.vocab_size == len(set(body)) + len(SPECIAL_TOKENS)
    assert m["tokenizer"] == "char" and m["special_ids"][EOT] == 0


def test_text_folder_splits_by_document(tmp_path):
    names = [f"doc{i:02d}.md" for i in range(40)]
    for i, name in enumerate(names):
        (tmp_path / "t" / "sub").mkdir(parents=True, exist_ok=True)
        (tmp_path / "t" / "sub" / name).write_text(f"# note {i}\n" + "some words here. " * 5, encoding="utf-8")
    (tmp_path / "t" / "picture.png").write_bytes(b"\x89PNG not text")  # known binary: ignored silently
    p = prepare(f"text:{tmp_path / 't'}", DataConfig(block_size=8, val_fraction=0.2), progress=False)
    m = p.manifest
    expected_val = sum(in_validation(f"sub/{n}", 0.2) for n in names)
    assert m["split"] == "documents" and m["documents"] == 40
    assert m["val_documents"] == expected_val > 0 and m["train_documents"] == 40 - expected_val
    val_text = p.tokenizer.decode(np.asarray(p.val.tokens))
    train_text = p.tokenizer.decode(np.asarray(p.train.tokens))
    for i, name in enumerate(names):
        in_val, in_train = f"# note {i}\n" in val_text, f"# note {i}\n" in train_text
        assert in_val != in_train and in_val == in_validation(f"sub/{name}", 0.2)


def test_text_errors(tmp_path):
    (tmp_path / "empty.txt").write_text("")
    with pytest.raises(DataError, match=r"empty\.txt is empty"):
        prepare(f"text:{tmp_path / 'empty.txt'}", progress=False)
    (tmp_path / "binary.txt").write_bytes(b"text\x00\x01\x02")
    with pytest.raises(DataError, match=r"binary\.txt is not readable as text \(binary data: contains NUL bytes\)"):
        prepare(f"text:{tmp_path / 'binary.txt'}", progress=False)
    with pytest.raises(DataError, match="does not exist"):
        prepare(f"text:{tmp_path / 'nope.txt'}", progress=False)
    (tmp_path / "short.txt").write_text("just a few characters")
    with pytest.raises(DataError, match="smaller data.block_size"):
        prepare(f"text:{tmp_path / 'short.txt'}", DataConfig(block_size=256), progress=False)


def test_text_folder_skips_binary_with_warning(tmp_path):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "good.txt").write_text("plain text " * 50, encoding="utf-8")
    (tmp_path / "d" / "data.raw").write_bytes(b"\x00\x01\x02 header" * 20)
    with pytest.warns(UserWarning, match=r"skipped 1 file\(s\) that are not text: data\.raw \(binary data"):
        p = prepare(f"text:{tmp_path / 'd'}", DataConfig(block_size=8), progress=False)
    assert p.manifest["documents"] == 1
    (tmp_path / "only_bad").mkdir()
    (tmp_path / "only_bad" / "x.txt").write_bytes(b"\xff\xfe\x00bad")
    with pytest.warns(UserWarning), pytest.raises(DataError, match="no usable text"):
        prepare(f"text:{tmp_path / 'only_bad'}", progress=False)


def test_bpe_reading_errors_are_the_same_as_char(tmp_path):
    """Files are checked while the BPE trainer reads them: the same warnings and errors as for characters."""
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "good.txt").write_text("plain text " * 50, encoding="utf-8")
    (tmp_path / "d" / "old.bin.txt").write_bytes(b"\x00\xe9t\xe9" * 20)
    (tmp_path / "d" / "blank.txt").write_text("  \n\n")
    cfg = DataConfig(block_size=8, tokenizer="bpe", vocab_size=260)
    with pytest.warns(UserWarning, match=r"skipped 1 file\(s\).*old\.bin\.txt"):
        p = prepare(f"text:{tmp_path / 'd'}", cfg, progress=False)
    assert p.manifest["documents"] == 1 and p.tokenizer.decode(np.asarray(p.train.tokens)).startswith("plain text")
    (tmp_path / "empty.txt").write_text("")
    with pytest.raises(DataError, match=r"empty\.txt is empty"):
        prepare(f"text:{tmp_path / 'empty.txt'}", cfg, progress=False)


def test_unknown_source_and_bad_config(tmp_path):
    with pytest.raises(DataError, match=r"unknown data source 'cifar'.*digits, mnist, pycode.*folder:PATH.*text:PATH"):
        prepare("cifar", progress=False)
    with pytest.raises(DataError, match=r"did you mean folder:"):
        prepare(str(tmp_path), progress=False)
    with pytest.raises(ConfigError, match="val_fraction"):
        prepare("digits", DataConfig(val_fraction=0.0), progress=False)
    with pytest.raises(ConfigError, match="channels"):
        prepare("digits", DataConfig(channels=2), progress=False)


# ---- tokenizers and token streams ---------------------------------------------------------------
def write_corpus(folder, n: int = 12) -> dict[str, str]:
    """Documents in several scripts, one holding the end-of-text marker as plain text."""
    docs = {}
    for i in range(n):
        docs[f"doc{i:02d}.txt"] = f"# {i}\ndef f{i}(x):\n    return x * {i}  # π≈3.14 Привет 你好 🎉\n" * (3 + i % 4)
    docs["doc00.txt"] += f"plain text {EOT} in a file\n"
    folder.mkdir(parents=True, exist_ok=True)
    for name, body in docs.items():
        (folder / name).write_text(body, encoding="utf-8")
    return docs


@pytest.mark.parametrize("kind", ["char", "bpe"])
def test_token_stream_is_documents_joined_by_eot(kind, tmp_path):
    docs = write_corpus(tmp_path / "corpus")
    cfg = DataConfig(block_size=8, val_fraction=0.3, tokenizer=kind, vocab_size=300)
    p = prepare(f"text:{tmp_path / 'corpus'}", cfg, progress=False)
    tok, m = p.tokenizer, p.manifest
    assert tok.type == kind == m["tokenizer"] and m["vocab_size"] == tok.vocab_size
    assert m["split"] == "documents" and m["characters"] == sum(len(d) for d in docs.values())
    for split, ds in (("train", p.train), ("val", p.val)):
        names = [n for n in sorted(docs) if in_validation(n, 0.3) == (split == "val")]
        expected = np.concatenate([np.array([tok.eot_id] + tok.encode(docs[n])) for n in names])
        assert isinstance(ds.tokens, np.memmap) and ds.tokens.dtype == np.uint16
        assert np.array_equal(np.asarray(ds.tokens), expected), split
    specials = set(tok.special_ids.values())
    train = np.asarray(p.train.tokens)
    assert int(np.isin(train, list(specials)).sum()) == (train == tok.eot_id).sum() == m["train_documents"]
    if kind == "bpe":
        assert m["tokens"]["train"] + m["tokens"]["val"] < m["characters"]  # merges: fewer tokens than characters


def test_long_documents_stream_in_pieces(tmp_path, monkeypatch):
    """A file larger than a read piece (and a tokenizer batch) gives the same ids as encoding it whole."""
    body = "".join(f"line {i} ünï 🎉\r\n" for i in range(400))
    (tmp_path / "big.txt").write_bytes(body.encode("utf-8"))
    monkeypatch.setattr(data_text, "PIECE_BYTES", 256)
    monkeypatch.setattr(data_text, "BATCH_CHARS", 1000)
    pieces = list(read_pieces(tmp_path / "big.txt"))
    assert len(pieces) > 10 and all(piece.endswith("\n") for piece in pieces)
    assert "".join(pieces) == body.replace("\r\n", "\n")
    tok = CharTokenizer.from_text(body.replace("\r\n", "\n"))
    info = write_token_streams([Document("big.txt", tmp_path / "big.txt")], tok, tmp_path, 0.1, progress=False)
    stream = np.concatenate([np.fromfile(tmp_path / f"{s}.bin", dtype=np.uint16) for s in ("train", "val")])
    assert info["split"] == "end of stream" and sum(info["tokens"].values()) == len(stream)
    assert stream.tolist() == [0] + tok.encode(body.replace("\r\n", "\n"))


def test_read_pieces_escapes_bytes_that_are_not_utf8(tmp_path):
    (tmp_path / "bom.txt").write_bytes(b"\xef\xbb\xbfhi\r\nthere")
    assert "".join(read_pieces(tmp_path / "bom.txt", piece_bytes=3)) == "hi\nthere"  # "\r" and "\n" in different reads
    assert "".join(read_pieces(tmp_path / "bom.txt", piece_bytes=1)) == "hi\nthere"  # the mark itself in three reads
    (tmp_path / "bad.txt").write_bytes(b"ok\n" * 10 + b"caf\xe9")
    assert "".join(read_pieces(tmp_path / "bad.txt", piece_bytes=4)) == "ok\n" * 10 + "caf\udce9"
    # a multi-byte character cut by a read boundary decodes whole: "é" is c3 a9, "🎉" f0 9f 8e 89
    (tmp_path / "cut.txt").write_bytes("aé🎉\n".encode() + b"\xe9\xc3" + "é".encode())
    for size in range(1, 8):
        assert "".join(read_pieces(tmp_path / "cut.txt", piece_bytes=size)) == "aé🎉\n\udce9\udcc3é", size
    (tmp_path / "nul.txt").write_bytes(b"ok\n" * 10 + b"\x00")
    with pytest.raises(ValueError, match="binary data"):
        list(read_pieces(tmp_path / "nul.txt", piece_bytes=4))


@pytest.fixture(scope="module")
def scratch(tmp_path_factory):
    return tmp_path_factory.mktemp("scratch")


@settings(max_examples=150, deadline=None)
@given(st.lists(st.binary(max_size=5) | st.sampled_from([b"\r", b"\n", b"\r\n", b"\xef\xbb\xbf", "é🎉".encode(), b"\xe9"]),
                max_size=20).map(b"".join).map(lambda b: b.replace(b"\x00", b"")),
       st.integers(1, 9))
def test_read_pieces_keeps_any_bytes(scratch, b, piece_bytes):
    """Whatever the bytes and the read size: the file's bytes back, less a leading byte-order mark and "\\r"s of "\\r\\n"."""
    (scratch / "f.txt").write_bytes(b)
    text = "".join(read_pieces(scratch / "f.txt", piece_bytes=piece_bytes))
    assert text.encode("utf-8", "surrogateescape") == b.removeprefix(b"\xef\xbb\xbf").replace(b"\r\n", b"\n")


@pytest.mark.parametrize("kind", ["char", "bpe"])
def test_text_folder_keeps_latin1_files_byte_for_byte(kind, tmp_path):
    """A Latin-1 file is prepared, not skipped: its bytes come back from the token stream, and one warning names it."""
    files = {
        "notes.txt": "plain UTF-8 text, naïve café\n".encode() * 12,
        "old.txt": "caf\xe9 cr\xe8me br\xfbl\xe9e, na\xefve\n".encode("latin-1") * 12,
        "old2.txt": b"\xff\xfe not UTF-16, just two bytes\n" * 12,
    }
    (tmp_path / "d").mkdir()
    for name, body in files.items():
        (tmp_path / "d" / name).write_bytes(body)
    cfg = DataConfig(block_size=8, val_fraction=0.3, tokenizer=kind, vocab_size=300)
    with pytest.warns(UserWarning, match=r"2 file\(s\) hold bytes that are not UTF-8 \(old\.txt, old2\.txt\)"):
        p = prepare(f"text:{tmp_path / 'd'}", cfg, progress=False)
    tok = p.tokenizer
    assert p.manifest["documents"] == 3
    stream = np.concatenate([np.asarray(p.train.tokens), np.asarray(p.val.tokens)]).astype(np.int64)
    starts = np.flatnonzero(stream == tok.eot_id).tolist() + [len(stream)]
    docs = {tok.decode_bytes(stream[a + 1:b]) for a, b in itertools.pairwise(starts)}
    assert docs == set(files.values())
    assert sum(len(tok.token_bytes(int(i))) for i in stream) == sum(len(b) for b in files.values())


class WideTokenizer:
    """Stands in for a tokenizer with 70,000 ids without training one."""

    vocab_size, eot_id = 70_000, 0

    def encode_batch(self, texts):
        return [np.array([69_999 - ord(c) % 5 for c in t], dtype=np.int64) for t in texts]


def test_vocabularies_over_65535_are_stored_as_uint32(tmp_path):
    for i in range(2):
        (tmp_path / f"{i}.txt").write_text("abcde" * 10)
    docs = [Document(f"{i}.txt", tmp_path / f"{i}.txt") for i in range(2)]
    info = write_token_streams(docs, WideTokenizer(), tmp_path, 0.5, progress=False)
    assert info["token_dtype"] == "uint32"
    stream = np.concatenate([np.fromfile(tmp_path / f"{s}.bin", dtype=np.uint32) for s in ("train", "val")])
    assert len(stream) == 102 and stream.max() == 69_999 and (stream == 0).sum() == 2

    # end to end: a corpus of 69,996 distinct characters makes a 70,000-id character vocabulary
    chars = "".join(chr(c) for c in range(0x20000, 0x20000 + 69_996))
    (tmp_path / "wide.txt").write_text(chars * 2, encoding="utf-8")
    p = prepare(f"text:{tmp_path / 'wide.txt'}", DataConfig(block_size=8), progress=False)
    assert p.tokenizer.vocab_size == 70_000 and p.manifest["token_dtype"] == "uint32"
    assert isinstance(p.train.tokens, np.memmap) and p.train.tokens.dtype == np.uint32
    assert int(p.train.tokens.max()) == 69_996 and p.train.batch(2, gen())["x"].max() < 70_000


def test_cache_key_follows_the_tokenizer(tmp_path, monkeypatch):
    write_corpus(tmp_path / "c", n=4)
    src = f"text:{tmp_path / 'c'}"
    char = prepare(src, DataConfig(block_size=8), progress=False)
    bpe = prepare(src, DataConfig(block_size=8, tokenizer="bpe", vocab_size=300), progress=False)
    bpe2 = prepare(src, DataConfig(block_size=8, tokenizer="bpe", vocab_size=320), progress=False)
    assert len({char.path, bpe.path, bpe2.path}) == 3
    assert isinstance(bpe.tokenizer, BPETokenizer) and bpe.tokenizer.vocab_size == 300
    no_rebuild(monkeypatch)
    assert prepare(src, DataConfig(block_size=8, vocab_size=999), progress=False).path == char.path  # char: size unused
    again = prepare(src, DataConfig(block_size=4, tokenizer="bpe", vocab_size=300), progress=False)
    assert again.path == bpe.path and again.tokenizer == bpe.tokenizer


def test_tokenizer_config_errors(tmp_path):
    (tmp_path / "a.txt").write_text("some text " * 20)
    with pytest.raises(ConfigError, match="data.tokenizer must be one of char, bpe or file:PATH .*, got 'word'"):
        prepare(f"text:{tmp_path / 'a.txt'}", DataConfig(tokenizer="word"), progress=False)
    for bad in (100, 259, 2**32, "big", True):
        with pytest.raises(ConfigError, match="data.vocab_size must be an integer from 260"):
            prepare(f"text:{tmp_path / 'a.txt'}", DataConfig(tokenizer="bpe", vocab_size=bad), progress=False)
    with pytest.raises(ConfigError, match="applies to text sources; 'digits' is image data"):
        prepare("digits", DataConfig(tokenizer="bpe"), progress=False)


# ---- splits, batches and the cache's robustness ------------------------------------------------
def test_image_split_is_deterministic_and_disjoint():
    for n, frac in [(2, 0.05), (10, 0.3), (1797, 0.05)]:
        train, val = split_indices(n, frac)
        again_train, again_val = split_indices(n, frac)
        assert np.array_equal(train, again_train) and np.array_equal(val, again_val)
        assert not set(train) & set(val) and sorted([*train, *val]) == list(range(n))
        assert len(val) == max(1, round(frac * n))
    assert len(split_indices(1, 0.5)[1]) == 0


def test_prepare_split_is_the_same_in_a_fresh_cache(tmp_path, monkeypatch):
    first = prepare("digits", progress=False)
    monkeypatch.setenv("GENFORGE_CACHE", str(tmp_path / "other-cache"))
    second = prepare("digits", progress=False)
    assert second.path.parent == tmp_path / "other-cache"
    assert torch.equal(first.val.images, second.val.images) and torch.equal(first.train.labels, second.train.labels)


def test_image_batches_are_seeded():
    p = prepare("digits", progress=False)
    a, b, c = p.train.batch(8, gen(1)), p.train.batch(8, gen(1)), p.train.batch(8, gen(2))
    assert torch.equal(a["x"], b["x"]) and torch.equal(a["y"], b["y"])
    assert not torch.equal(a["x"], c["x"])
    assert a["x"].shape == (8, 1, 8, 8) and a["x"].dtype == torch.float32 and a["y"].shape == (8,)
    assert a["x"].min() >= -1 and a["x"].max() <= 1
    got = p.val.get([0, 2])
    assert got["x"].shape == (2, 1, 8, 8) and torch.equal(got["y"], p.val.labels[[0, 2]])
    assert torch.equal(got["x"][0], p.val.images[0].float() / 127.5 - 1)


def test_text_batches_are_windows_shifted_by_one():
    tokens = np.arange(100, dtype=np.uint16)
    ds = TextDataset(tokens, block_size=10)
    assert len(ds) == 90
    a, b = ds.batch(6, gen(3)), ds.batch(6, gen(3))
    assert torch.equal(a["x"], b["x"]) and a["x"].shape == a["y"].shape == (6, 10)
    assert a["x"].dtype == a["y"].dtype == torch.int64
    assert torch.equal(a["y"][:, :-1], a["x"][:, 1:]) and torch.equal(a["y"][:, -1], a["x"][:, -1] + 1)
    assert torch.equal(a["x"][:, 1:] - a["x"][:, :-1], torch.ones(6, 9, dtype=torch.int64))  # contiguous windows
    assert a["y"].is_contiguous() and a["y"].view(-1).numel() == 60
    assert ds.get([89])["y"][0, -1] == 99
    with pytest.raises(DataError, match="smaller data.block_size"):
        TextDataset(tokens[:10], block_size=10)


def test_image_dataset_without_labels():
    ds = ImageDataset(np.zeros((3, 1, 4, 4), np.uint8))
    b = ds.batch(2, gen())
    assert set(b) == {"x"} and torch.all(b["x"] == -1)


def test_corrupt_cache_entry_is_rebuilt():
    p = prepare("digits", progress=False)
    (p.path / "val_images.npy").write_bytes(b"truncated")
    with pytest.warns(UserWarning, match="corrupt"):
        again = prepare("digits", progress=False)
    assert again.path == p.path and torch.equal(again.val.images, p.val.images)
    (p.path / "manifest.json").write_text("{not json")
    with pytest.warns(UserWarning, match="corrupt"):
        assert len(prepare("digits", progress=False).val) == len(p.val)


def test_interrupted_build_leaves_no_entry(monkeypatch, tmp_path):
    monkeypatch.setenv("GENFORGE_CACHE", str(tmp_path / "c"))

    def killed(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(genforge.modalities.image, "write_images", killed)
    with pytest.raises(KeyboardInterrupt):
        prepare("digits", progress=False)
    assert os.listdir(tmp_path / "c") == []
    # a build folder abandoned by a dead process is cleaned up by the next build
    stale = tmp_path / "c" / ".build-digits-x-abc"
    stale.mkdir()
    (stale / "owner.json").write_text(json.dumps({"host": __import__("socket").gethostname(), "pid": 2**22 + 12345}))
    monkeypatch.undo()
    monkeypatch.setenv("GENFORGE_CACHE", str(tmp_path / "c"))
    prepare("digits", progress=False)
    assert not stale.exists()


def test_the_data_package_still_names_prepare():
    """``genforge.data.prepare`` (the name older notebooks use) is the modalities' prepare."""
    import genforge.modalities

    assert genforge.data.prepare is genforge.modalities.prepare
    assert genforge.data.list_sources is genforge.modalities.list_sources
    assert genforge.prepare is genforge.modalities.prepare
