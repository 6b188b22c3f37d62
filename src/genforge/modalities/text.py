"""Text and code: the Python standard library's own source (``pycode``), or ``text:PATH`` (a file or a
folder of text files).

Tokenised once (characters, or a byte-level BPE trained on the corpus; ``data/tokenizers.py``) into
uint16/uint32 token streams; batches are random windows of ``data.block_size`` tokens (with
fill-in-the-middle when ``data.fim_rate`` is set); samples are written as .txt files; scored by
held-out likelihood (bits per byte) and the diversity of samples (``evaluate/scorers/text.py``).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from genforge.config import DataConfig
from genforge.data import text
from genforge.data.cache import CorruptEntry, Entry, load_token_stream
from genforge.data.codecs import TextCodec
from genforge.data.datasets import TextDataset
from genforge.data.sources import Source
from genforge.data.spec import DataSpec
from genforge.data.tokenizers import Tokenizer, load_tokenizer, train_tokenizer
from genforge.errors import DataError
from genforge.modalities.base import Modality, Prepared, ReportStyle

# data.tokenizer "file:PATH": tokenize with that tokenizer.json as it is (an imported model's), never train one
GIVEN_TOKENIZER = "file:"


def file_digest(path: Path) -> str:
    """The SHA-256 of a given tokenizer file, which keys the data's cache entry; a one-line error when it is missing."""
    import hashlib

    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError as e:
        raise DataError(f"data.tokenizer file {path} cannot be read ({e.strerror or e}); expected the tokenizer.json "
                        "of the run the data is for") from None


class TokenStreams(Modality):
    """What every modality of token streams shares: the cache layout (train.bin, val.bin, tokenizer.json),
    windows of ``data.block_size`` tokens, and rates counted in tokens."""

    data_kind = "tokens"
    unit = "tok"

    def load_tokenizer(self, path: Path) -> Tokenizer:
        return load_tokenizer(path)

    def read(self, path: Path, manifest: dict) -> Entry:
        try:
            tokenizer = self.load_tokenizer(path / "tokenizer.json")
        except (DataError, OSError, ValueError, KeyError, TypeError) as e:
            raise CorruptEntry(f"tokenizer.json unreadable ({e})") from None
        if tokenizer.vocab_size != manifest["vocab_size"]:
            raise CorruptEntry(f"tokenizer.json has {tokenizer.vocab_size} tokens, the manifest says {manifest['vocab_size']}")
        if manifest["token_dtype"] not in ("uint16", "uint32"):
            raise CorruptEntry(f"token_dtype is {manifest['token_dtype']!r}, expected 'uint16' or 'uint32'")
        dtype = np.dtype(manifest["token_dtype"])
        arrays = {split: load_token_stream(path / f"{split}.bin", manifest["tokens"][split], dtype, tokenizer.vocab_size)
                  for split in ("train", "val")}
        return Entry(path, manifest, arrays, tokenizer)

    def windows(self, entry: Entry, source: Source, cfg: DataConfig, fim_ids=None) -> tuple[TextDataset, TextDataset]:
        train = TextDataset(entry.arrays["train"], cfg.block_size, name=f"the training split of {source.canonical}",
                            fim_rate=cfg.fim_rate, fim_ids=fim_ids, doc_starts=cfg.doc_starts,
                            eot_id=entry.tokenizer.eot_id)
        val = TextDataset(entry.arrays["val"], cfg.block_size, name=f"the validation split of {source.canonical}",
                          hint="a larger data.val_fraction")
        return train, val

    def items_per_step(self, spec: DataSpec, batch_size: int) -> int:
        return batch_size * spec.shape[0]


class TextModality(TokenStreams):
    name = "text"
    sized_by_n_text = True
    builtin_sources = {"pycode": "the Python standard library's own source code (~9 MB)"}
    path_forms = {"text": "text:PATH (a text file, or a folder of text files; UTF-8, other bytes kept raw)"}
    model_kind = "text"
    scorer = "genforge.evaluate.scorers.text:TextScorer"
    default_eval_n = 100
    training_eval_n = 50
    report = ReportStyle(
        title="Text",
        columns=("val_loss", "perplexity", "bits_per_byte", "distinct_1", "distinct_2", "distinct_3", "self_bleu",
                 "parse_share"),
        lower_is_better=frozenset({"val_loss", "perplexity", "bits_per_byte", "self_bleu"}),
        notes=(
            "val_loss (nats/token), perplexity and bits_per_byte on held-out text; distinct_n: unique word n-grams "
            "over all n-grams of the samples; self_bleu: BLEU-4 of each sample against the others (lower = more "
            "varied); parse_share: share of code samples Python's ast parses (the unfinished last line dropped).",
            "The reference row scores real held-out snippets of the same length as the samples.",
        ),
        shows="examples",
    )

    # ---- sources ----------------------------------------------------------------------------------
    def source_files(self, source: Source) -> list[Path] | None:
        return text.stdlib_files() if source.kind == "pycode" else text.text_files(source.path)

    def source_root(self, source: Source) -> Path | None:
        return text.stdlib_root() if source.kind == "pycode" else source.path

    # ---- preparation ------------------------------------------------------------------------------
    def preparation_params(self, source: Source, cfg: DataConfig) -> dict:
        params = {"val_fraction": float(cfg.val_fraction), "tokenizer": cfg.tokenizer}
        if cfg.tokenizer == "bpe":  # a character vocabulary is whatever the text holds: no size to key on
            params["vocab_size"] = cfg.vocab_size
        if cfg.tokenizer.startswith(GIVEN_TOKENIZER):  # a given tokenizer (an imported model's): keyed on its content
            path = Path(cfg.tokenizer[len(GIVEN_TOKENIZER):])
            params["tokenizer"] = GIVEN_TOKENIZER
            params["tokenizer_sha256"] = file_digest(path)
            params["tokenizer_path"] = str(path)
        return params

    def write(self, tmp: Path, source: Source, params: dict, progress: bool) -> dict:
        corpus = text.TextCorpus(source.canonical, self.source_root(source), self.source_files(source), progress)
        kind = params["tokenizer"]
        if kind == GIVEN_TOKENIZER:
            tokenizer = load_tokenizer(params["tokenizer_path"])
        else:  # one progress display at a time: HF's BPE trainer draws its own bars while it reads the corpus
            tokenizer = train_tokenizer(kind, corpus.texts(show_progress=kind != "bpe"), params.get("vocab_size"),
                                        progress)
        tokenizer.save(tmp / "tokenizer.json")
        info = text.write_token_streams(corpus.documents, tokenizer, tmp, params["val_fraction"], progress,
                                        corpus.characters)
        return {"tokenizer": tokenizer.type, "vocab_size": tokenizer.vocab_size, "special_ids": tokenizer.special_ids,
                "sizes": info["tokens"], "characters": corpus.characters, **info}

    def assemble(self, entry: Entry, source: Source, cfg: DataConfig) -> Prepared:
        fim_ids = None
        if cfg.fim_rate:
            from genforge.data.fim import FimIds

            if entry.tokenizer.fim_ids() is None:
                raise DataError("this tokenizer has no fill-in-the-middle tokens; prepare the data again to use data.fim_rate")
            fim_ids = FimIds(*entry.tokenizer.fim_ids(), end=entry.tokenizer.eot_id)
        train, val = self.windows(entry, source, cfg, fim_ids)
        spec = DataSpec(self.name, (cfg.block_size,), vocab_size=entry.tokenizer.vocab_size)
        return Prepared(spec, train, val, entry.tokenizer, entry.manifest, entry.path)

    # ---- runs -------------------------------------------------------------------------------------
    def grid_items(self, grid_size: int) -> int:
        return min(8, grid_size)  # texts are long: a few show what the run writes

    def codec(self, spec: DataSpec, tokenizer: Tokenizer | None) -> TextCodec:
        if tokenizer is None:
            raise DataError("text data needs its tokenizer to be written as files; the run's tokenizer.json is missing")
        return TextCodec(tokenizer)


def tokenizer_type(path: Path) -> str | None:
    """The "type" a tokenizer.json records, without loading it; None when there is no readable file."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8")).get("type")
    except (OSError, ValueError, AttributeError):
        return None

