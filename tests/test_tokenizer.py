"""The character and byte-level BPE tokenizers, their special tokens, and tokenizer files."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from genforge.data.tokenizers import (
    EOT, FIM_MIDDLE, FIM_PREFIX, FIM_SUFFIX, SPECIAL_TOKENS, BPETokenizer, CharTokenizer, load_tokenizer, train_tokenizer,
)
from genforge.errors import DataError

pytestmark = pytest.mark.usefixtures("one_thread")


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=200).filter(lambda s: EOT not in s))
def test_round_trip_any_unicode(s):
    tok = CharTokenizer.from_text(s)
    ids = tok.encode(s)
    assert len(ids) == len(s) and all(1 <= i < tok.vocab_size for i in ids)
    assert tok.decode(ids) == s
    assert tok.vocab_size == len(set(s)) + len(SPECIAL_TOKENS)


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
    assert a == b and a.eot_id == 0 and a.vocab_size == 8
    assert a.encode("!abn") == [1, 2, 3, 4]  # code-point order
    assert a.decode(np.array([0, 2, 0, 3, 5, 6, 7])) == "ab"  # special tokens are dropped
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


# ---- special tokens of the character tokenizer ---------------------------------------------------
def test_char_special_tokens_come_after_the_characters():
    tok = CharTokenizer.from_text("abc")
    assert tok.special_ids == {EOT: 0, FIM_PREFIX: 4, FIM_MIDDLE: 5, FIM_SUFFIX: 6}
    assert tok.fim_ids() == (4, 5, 6) and tok.vocab_size == 7
    assert tok.decode([4, 1, 5, 2, 6, 3, 0]) == "abc"


def test_old_char_files_keep_their_ids(tmp_path):
    """A tokenizer.json written before the FIM tokens existed: same ids, no FIM tokens."""
    (tmp_path / "old.json").write_text(json.dumps({"type": "char", "eot": EOT, "vocab": ["a", "b", "c"]}))
    old = load_tokenizer(tmp_path / "old.json")
    assert old.vocab_size == 4 and old.fim_ids() is None and old.special_ids == {EOT: 0}
    assert old.encode("cab") == [3, 1, 2] and old.decode([0, 3, 1, 2]) == "cab"
    assert old != CharTokenizer.from_text("abc")
    old.save(tmp_path / "again.json")
    assert "specials" not in json.loads((tmp_path / "again.json").read_text())
    assert load_tokenizer(tmp_path / "again.json") == old
    (tmp_path / "bad.json").write_text(json.dumps({"type": "char", "vocab": ["a"], "specials": {EOT: 0, FIM_PREFIX: 7}}))
    with pytest.raises(DataError, match="corrupt.*specials"):
        load_tokenizer(tmp_path / "bad.json")


@pytest.mark.parametrize("kind", ["char", "bpe"])
def test_special_token_strings_in_text_are_ordinary_text(kind, bpe):
    text = f"x {EOT} y {FIM_PREFIX}{FIM_MIDDLE}{FIM_SUFFIX} z"
    tok = CharTokenizer.from_text(text) if kind == "char" else bpe
    ids = tok.encode(text)
    assert not set(ids) & set(tok.special_ids.values())
    assert tok.decode(ids) == text
    assert set(tok.special_ids) == set(SPECIAL_TOKENS) and tok.eot_id == tok.special_ids[EOT] == 0
    assert len(set(tok.fim_ids())) == 3 and set(tok.fim_ids()) <= set(tok.special_ids.values())


# ---- byte-level BPE -------------------------------------------------------------------------------
MIXED = [
    "def add(a, b):\n    return a + b\n\nclass Point:\n    x: int = 0\n",
    "The quick brown fox jumps over the lazy dog. Ünïcödé façade naïve.\n",
    "Съешь же ещё этих мягких французских булок, да выпей чаю.\n",
    "我能吞下玻璃而不伤身体。日本語のテキスト。한국어 텍스트.\n",
    "emoji: 🎉🚀👩‍👩‍👧 ✓ — العربية עברית हिन्दी ελληνικά\n",
]


@pytest.fixture(scope="module")
def bpe() -> BPETokenizer:
    """A tiny BPE trained once per module on a small mixed-script corpus."""
    return BPETokenizer.train(iter(MIXED * 5), vocab_size=300, progress=False)


def test_bpe_trains_with_every_byte_and_the_specials(bpe):
    assert bpe.vocab_size == 300 and bpe.eot_id == 0
    assert bpe.special_ids == {EOT: 0, FIM_PREFIX: 1, FIM_MIDDLE: 2, FIM_SUFFIX: 3} and bpe.fim_ids() == (1, 2, 3)
    ids = bpe.encode(MIXED[0])
    assert len(ids) < len(MIXED[0].encode("utf-8"))  # merges learnt: fewer tokens than bytes
    assert train_tokenizer("bpe", iter(MIXED * 5), 300, progress=False) == bpe  # deterministic


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=200))  # any script, emoji, control characters; hypothesis leaves out lone surrogates
def test_bpe_round_trips_any_unicode(bpe, s):
    ids = bpe.encode(s)
    assert all(4 <= i < bpe.vocab_size for i in ids)
    assert bpe.decode(ids) == s


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=299), max_size=50))
def test_bpe_decodes_any_ids_without_raising(bpe, ids):
    assert isinstance(bpe.decode(ids), str)


def test_bpe_partial_bytes_decode_to_replacement_characters(bpe):
    ids = bpe.encode("𝄞")  # U+1D11E: four UTF-8 bytes, never seen in training, so four byte tokens
    assert len(ids) == 4 and bpe.decode(ids) == "𝄞"
    assert bpe.decode(ids[:2]) == "\ufffd" and bpe.decode(ids[:2] + bpe.encode("ok")) == "\ufffdok"


def test_bpe_errors_are_one_line(bpe):
    with pytest.raises(DataError, match="outside the vocabulary"):
        bpe.decode([1, 300])
    with pytest.raises(DataError, match="lone surrogate"):
        bpe.encode("a\ud800b")
    with pytest.raises(DataError, match="from 260"):
        BPETokenizer.train(iter(["abc"]), vocab_size=100, progress=False)


def test_bpe_save_load_same_ids(bpe, tmp_path):
    bpe.save(tmp_path / "tokenizer.json")
    d = json.loads((tmp_path / "tokenizer.json").read_text())
    assert d["type"] == "bpe" and d["eot"] == EOT and d["specials"][FIM_SUFFIX] == 3
    assert json.loads(d["hf_tokenizer"])["model"]["type"] == "BPE"
    loaded = load_tokenizer(tmp_path / "tokenizer.json")
    assert isinstance(loaded, BPETokenizer) and loaded == bpe
    for text in [*MIXED, f"a {EOT} b", "never seen: ŧħïš ŵőřđ 🦜"]:
        assert loaded.encode(text) == bpe.encode(text)
        assert loaded.decode(bpe.encode(text)) == text
    assert not set(loaded.encode(f"a {EOT} b")) & {0, 1, 2, 3}  # still ordinary text after a reload
    assert BPETokenizer.load(tmp_path / "tokenizer.json") == bpe
    with pytest.raises(DataError, match="holds a 'bpe' tokenizer"):
        CharTokenizer.load(tmp_path / "tokenizer.json")
    d["hf_tokenizer"] = "{not json"
    (tmp_path / "bad.json").write_text(json.dumps(d))
    with pytest.raises(DataError, match="corrupt") as e:
        load_tokenizer(tmp_path / "bad.json")
    assert "\n" not in str(e.value)


def test_encode_batch_matches_encode(bpe):
    char = CharTokenizer.from_text("".join(MIXED))
    for tok in (char, bpe):
        batch = tok.encode_batch(MIXED)
        assert [b.tolist() for b in batch] == [tok.encode(t) for t in MIXED]
        assert all(b.dtype == np.int64 for b in batch)


# ---- runs with a BPE tokenizer --------------------------------------------------------------------
TINY_MODEL = ("data.block_size=16", "model.n_layer=1", "model.n_embd=32", "model.n_head=2", "train.grid_size=2")


@pytest.fixture(scope="module")
def code_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("code") / "corpus.py"
    path.write_text("def add(a, b):\n    return a + b\n\n# «ünïcödé» 🎉\n" * 40, encoding="utf-8")
    return path


def test_train_and_sample_a_bpe_run(code_file, tmp_path):
    import genforge
    from genforge.api import train

    run = tmp_path / "run"
    train(family="transformer", data=f"text:{code_file}", out=run, steps=2,
          overrides=("data.tokenizer=bpe", "data.vocab_size=300", *TINY_MODEL), progress=False)
    saved = load_tokenizer(run / "tokenizer.json")
    assert isinstance(saved, BPETokenizer) and 260 <= saved.vocab_size <= 300  # a small corpus may stop merging early
    model = genforge.load(run)
    assert model.spec.vocab_size == saved.vocab_size and model.tokenizer == saved
    texts = model.sample(2, prompt="def ", max_new_tokens=5)
    assert len(texts) == 2 and all(t.startswith("def ") for t in texts)
    assert model.sample(1, prompt="never seen: 𝄞", max_new_tokens=2)[0].startswith("never seen: 𝄞")  # BPE encodes anything


def test_cli_trains_with_bpe_and_rejects_it_for_images(code_file, tmp_path):
    from typer.testing import CliRunner

    from genforge.cli import app
    from genforge.errors import ConfigError

    runner = CliRunner()
    run = tmp_path / "run"
    args = ["train", "--family", "transformer", "--data", f"text:{code_file}", "--out", str(run), "--steps", "2",
            "--quiet", "--tokenizer", "bpe", "--vocab-size", "280"]
    for item in TINY_MODEL:
        args += ["--set", item]
    result = runner.invoke(app, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert load_tokenizer(run / "tokenizer.json").type == "bpe"
    import yaml

    data = yaml.safe_load((run / "config.yaml").read_text())["data"]
    assert data["tokenizer"] == "bpe" and data["vocab_size"] == 280
    result = runner.invoke(app, ["sample", str(run), "-n", "2", "--prompt", "def ", "--max-new-tokens", "4",
                                 "--out", str(tmp_path / "out")], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert all((tmp_path / "out" / f"{i:06d}.txt").read_text(encoding="utf-8").startswith("def ") for i in range(2))

    bad = {
        "image data": (["train", "--family", "vae", "--data", "digits", "--out", str(tmp_path / "img"),
                        "--tokenizer", "bpe"], "applies to text sources; 'digits' is image data"),
        "size without bpe": (["train", "--family", "transformer", "--data", f"text:{code_file}", "--out",
                              str(tmp_path / "x"), "--vocab-size", "300"], "add --tokenizer bpe"),
        "too small": (["data", "prepare", f"text:{code_file}", "--tokenizer", "bpe", "--vocab-size", "100"],
                      "data.vocab_size must be an integer from 260"),
    }
    for name, (args, expected) in bad.items():
        result = runner.invoke(app, args)
        assert isinstance(result.exception, ConfigError) and expected in str(result.exception), name
        assert "\n" not in str(result.exception)
    assert not (tmp_path / "img").exists()

    result = runner.invoke(app, ["data", "prepare", f"text:{code_file}", "--tokenizer", "bpe", "--vocab-size", "280",
                                 "--block-size", "16"],
                           catch_exceptions=False)
    assert result.exit_code == 0 and '"tokenizer": "bpe"' in result.output and '"token_dtype": "uint16"' in result.output


def test_token_bytes_add_up_to_the_utf8_text(bpe):
    char = CharTokenizer.from_text("".join(MIXED))
    for tok in (char, bpe):
        for text in MIXED:
            ids = [tok.eot_id, *tok.encode(text), *tok.fim_ids()]
            assert b"".join(tok.token_bytes(i) for i in ids) == text.encode("utf-8")
        with pytest.raises(DataError, match="outside the vocabulary"):
            tok.token_bytes(tok.vocab_size)
    assert sorted(bpe.token_bytes(i) for i in range(4, 260)) == [bytes([b]) for b in range(256)]


# ---- bytes that are not UTF-8 ("surrogateescape" text) -------------------------------------------
# any bytes, with the pieces that make UTF-8 interesting mixed in: whole and cut-off multi-byte characters,
# Latin-1 bytes, encoded surrogates (never valid UTF-8), a byte-order mark
SOME_BYTES = st.lists(
    st.binary(max_size=6) | st.sampled_from(
        [b"a", b" ", b"\n", "é".encode(), "🎉".encode(), "🎉".encode()[:2], b"\xe9", b"\xff", b"\xed\xb3\xa9",
         b"\xef\xbb\xbf"]
    ),
    max_size=30,
).map(b"".join)


def escaped(b: bytes) -> str:
    return b.decode("utf-8", "surrogateescape")


@settings(max_examples=300, deadline=None)
@given(SOME_BYTES)
def test_bpe_round_trips_any_bytes(bpe, b):
    ids = bpe.encode(escaped(b))
    assert all(4 <= i < bpe.vocab_size for i in ids)
    assert bpe.decode_bytes(ids) == b and bpe.decode_bytes([0, *ids, 3]) == b
    assert sum(len(bpe.token_bytes(i)) for i in ids) == len(b)
    assert escaped(bpe.decode_bytes(ids)) == escaped(b)
    assert bpe.decode(ids) == b.decode("utf-8", "replace")  # for display: what is not UTF-8 shows as U+FFFD


@settings(max_examples=300, deadline=None)
@given(SOME_BYTES)
def test_char_round_trips_any_bytes(b):
    text = escaped(b)
    tok = CharTokenizer.from_text(text)
    ids = tok.encode(text)
    assert len(ids) == len(text)
    assert tok.decode_bytes(ids) == b and tok.decode_bytes([0, *ids, *tok.fim_ids()]) == b
    assert sum(len(tok.token_bytes(i)) for i in ids) == len(b)
    assert tok.decode(ids) == b.decode("utf-8", "replace")


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=200))
def test_bpe_encodes_valid_text_as_hf_does(bpe, s):
    """Text without escaped bytes takes HF's own path: the same ids as before escaped bytes were handled."""
    assert bpe.encode(s) == bpe._hf.encode(s, add_special_tokens=False).ids
    assert bpe.decode_bytes(bpe.encode(s)) == s.encode("utf-8")


def test_escaped_bytes_are_single_byte_tokens(bpe):
    text = escaped("café crème\n".encode("latin-1"))  # "caf\udce9 cr\udce8me\n"
    ids = bpe.encode(text)
    assert bpe.token_bytes(ids[ids.index(bpe.encode(escaped(b"\xe9"))[0])]) == b"\xe9"
    assert bpe.decode_bytes(ids) == "café crème\n".encode("latin-1") and bpe.decode(ids) == "caf\ufffd cr\ufffdme\n"
    assert [bpe.encode(escaped(bytes([b]))) for b in range(128, 256)] == [[i] for i in bpe._byte_id_table()[128:].tolist()]
    # a batch mixing escaped and plain texts: the same ids as one by one, the plain ones as HF gives them
    batch = ["plain", text, "", escaped(b"\xff\xfe"), MIXED[2]]
    assert [a.tolist() for a in bpe.encode_batch(batch)] == [bpe.encode(t) for t in batch]
    assert bpe.encode_batch(batch)[4].tolist() == bpe._hf.encode(MIXED[2], add_special_tokens=False).ids
    # other lone surrogates (not escaped bytes: U+DC80..U+DCFF) are still refused, in a batch too
    refused = {"a\ud800b": "U+D800 at index 1", "a\udc41b": "U+DC41 at index 1", "a\udcffb\udd00": "U+DD00 at index 3"}
    for bad, where in refused.items():
        with pytest.raises(DataError, match=rf"lone surrogate \({re.escape(where)}\)") as e:
            bpe.encode_batch(["ok", text, bad])
        assert "\n" not in str(e.value)


def test_bpe_trains_on_text_with_escaped_bytes():
    corpus = [escaped("naïve café, crème brûlée\n".encode("latin-1")) * 20, *MIXED]
    tok = BPETokenizer.train(iter(corpus), vocab_size=280, progress=False)
    assert tok == BPETokenizer.train(iter(corpus), vocab_size=280, progress=False)
    assert tok.decode_bytes(tok.encode(corpus[0])) == "naïve café, crème brûlée\n".encode("latin-1") * 20
    with pytest.raises(DataError, match="lone surrogate"):
        BPETokenizer.train(iter(["ok", "a\ud800"]), vocab_size=280, progress=False)


def test_char_escaped_bytes_count_as_one_byte():
    text = escaped(b"caf\xe9 \xed\xa0\x80")  # a Latin-1 byte, and an encoded surrogate (3 invalid bytes)
    tok = CharTokenizer.from_text(text + "\ud800")  # a lone surrogate given directly keeps its 3-byte form
    assert [tok.token_bytes(i) for i in tok.encode(text)] == [b"c", b"a", b"f", b"\xe9", b" ", b"\xed", b"\xa0", b"\x80"]
    assert tok.decode_bytes(tok.encode(text + "\ud800")) == b"caf\xe9 \xed\xa0\x80" + "\ud800".encode("utf-8", "surrogatepass")
    assert tok.decode(tok.encode("\ud800a")) == "\ud800a"  # no escaped bytes: characters as they are, as before


@pytest.fixture(scope="module")
def foreign_bpe() -> BPETokenizer:
    """A BPE laid out as GPT-2's: every byte and the merges first, end-of-text the last id, no FIM tokens."""
    from tokenizers import AddedToken, decoders, models, pre_tokenizers, trainers
    from tokenizers import Tokenizer as HFTokenizer

    hf = HFTokenizer(models.BPE())
    hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    hf.decoder = decoders.ByteLevel()
    hf.train_from_iterator(MIXED * 5, trainer=trainers.BpeTrainer(
        vocab_size=290, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False))
    hf.add_special_tokens([AddedToken(EOT, special=True)])
    return BPETokenizer(hf, {EOT: 290})


def test_a_bpe_carries_special_tokens_at_other_ids(foreign_bpe, tmp_path):
    tok = foreign_bpe
    assert tok.vocab_size == 291 and tok.eot_id == 290 and tok.special_ids == {EOT: 290} and tok.fim_ids() is None
    assert tok.token_bytes(290) == b"" and tok.token_bytes(0) != b""  # id 0 is an ordinary byte here
    text = f"a {EOT} b é"
    ids = tok.encode(text)
    assert 290 not in ids and tok.decode([290, *ids, 290]) == text and tok.decode_bytes([290, *ids]) == text.encode()
    tok.save(tmp_path / "tokenizer.json")
    assert json.loads((tmp_path / "tokenizer.json").read_text())["specials"] == {EOT: 290}
    again = load_tokenizer(tmp_path / "tokenizer.json")
    assert again == tok and again.eot_id == 290 and again.fim_ids() is None and again.encode(text) == ids


def test_bpe_special_tokens_must_be_where_the_tokenizer_has_them(foreign_bpe, bpe, tmp_path):
    hf = foreign_bpe._hf
    for specials, words in (({}, "needs the end-of-text token"), ({EOT: 12}, f"needs {re.escape(EOT)} at id 12"),
                            ({EOT: 290, "<pad>": 3}, "special tokens are"),
                            ({"a": 64, EOT: 290}, "special tokens are")):
        with pytest.raises(DataError, match=words):
            BPETokenizer(hf, specials)
    with pytest.raises(DataError, match="all three fill-in-the-middle tokens"):
        BPETokenizer(bpe._hf, {EOT: 0, FIM_PREFIX: 1})
    layout = json.loads(foreign_bpe.to_dict()["hf_tokenizer"])
    layout["added_tokens"][0]["special"] = False  # HF would decode it as text, where genforge drops it
    with pytest.raises(DataError, match="to be a special token"):
        BPETokenizer.from_dict({"type": "bpe", "specials": {EOT: 290}, "hf_tokenizer": json.dumps(layout)})
    d = bpe.to_dict()
    (tmp_path / "moved.json").write_text(json.dumps({**d, "specials": {EOT: 1}}))
    with pytest.raises(DataError, match="corrupt") as e:
        load_tokenizer(tmp_path / "moved.json")
    assert "\n" not in str(e.value)
