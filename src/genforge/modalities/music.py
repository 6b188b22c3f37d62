"""Symbolic music: J. S. Bach's chorales from music21's bundled corpus (``bach``), or ``music:PATH`` (a MIDI
or MusicXML file, or a folder of them), as REMI event tokens for the transformer family.

Each piece is read once (``data/music.py``: symusic for MIDI, music21 for MusicXML and its other formats),
checked (pieces with no notes, or only drums, are skipped and named in one warning), assigned to a split by
a hash of its name (so a piece never straddles the split, and adding one moves no other), and tokenised by
``MusicTokenizer`` (``data/music_tokens.py``: bar, position, pitch, velocity, duration and tempo tokens,
a fixed vocabulary). Training pieces are also written transposed by every shift in
[-``data.transpose``, ``data.transpose``] semitones, the augmentation symbolic music models use to learn
every key from a corpus in a few; held-out pieces are written once, untransposed. Each piece is preceded
by the end-of-piece token, so the streams are read like text's: random windows of ``data.block_size``.

Samples start from the end-of-piece token and become .mid files, each with a piano-roll .png beside it
(and a .wav with ``genforge sample --audio``): ``data/music_codec.py``.

The same sources also come as piano rolls (``data.representation=pianoroll``, what new runs of the VAE, GAN
and diffusion families get): each piece (and its transpositions, for training) cut into segments of four
bars, 2 x 64 x 64 images of notes and onsets on a sixteenth-note grid (``data/music_rolls.py``), stored as
image data; samples are images read back as pieces and written the same way.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from genforge.config import DataConfig
from genforge.data.cache import Entry
from genforge.data.music import MUSIC_SUFFIXES
from genforge.data.sources import Source
from genforge.data.spec import DataSpec
from genforge.data.text import token_dtype
from genforge.data.tokenizers import load_tokenizer
from genforge.errors import ConfigError, DataError
from genforge.modalities.base import Prepared, ReportStyle
from genforge.modalities.text import TokenStreams

SAMPLE_TOKENS = 512  # event tokens per sampled piece: about eight bars of a four-part chorale
MAX_TRANSPOSE = 11
MAX_PIECES = 1_000_000
REPORT_AUDIO_RATE = 16_000  # the report's audio: mono 16 kHz, about 32 kB a second inside the HTML
REPRESENTATIONS = ("events", "pianoroll")
LABELS = ("none", "key")


class MusicModality(TokenStreams):
    name = "music"
    builtin_sources = {"bach": "J. S. Bach's four-part chorales, from music21's bundled corpus (~370 pieces)"}
    path_forms = {"music": "music:PATH (a MIDI or MusicXML file, or a folder of them)"}
    data_defaults = {"transpose": 3}
    model_kind = "music"  # runs load as models.MusicModel: a prompt piece to continue
    scorer = "genforge.evaluate.scorers.music:MusicScorer"
    default_eval_n = 50
    sized_by_n_text = True  # pieces are token streams to generate, as texts are: `genforge compare --n-text`
    training_eval_n = 20
    report = ReportStyle(
        title="Music",
        columns=("val_loss", "bits_per_event", "pitch_class_distance", "oa_mean", "kl_mean", "scale_consistency",
                 "empty_pieces"),
        lower_is_better=frozenset({"val_loss", "bits_per_event", "pitch_class_distance", "kl_mean", "empty_pieces"}),
        notes=(
            "val_loss (nats per event token) and bits_per_event on the held-out pieces.",
            f"Samples are compared with real held-out windows of the same length ({SAMPLE_TOKENS} tokens): "
            "pitch_class_distance is the Jensen-Shannon divergence (bits, 0-1) of the mean pitch-class histograms.",
            "oa_mean: Yang & Lerch's overlapped area (0-1, 1 best), averaged over 8 features (pitch count, range, note "
            "density, polyphony, scale consistency, empty bars, inter-onset interval, pitch-class histogram): "
            "distances between samples against distances from samples to real pieces, each smoothed by a KDE; "
            "kl_mean: their KL divergence in nats.",
            "scale_consistency: best share of notes in one major or harmonic-minor scale; empty_pieces: share of "
            "samples with no note. The real-data row scores a second set of held-out windows, from other pieces.",
        ),
        shows="grid",
    )

    def defaults_for(self, accepts: tuple[str, ...]) -> dict:
        """Event tokens for a family of token streams, piano-roll images for the others."""
        return {**self.data_defaults, "representation": "events" if "tokens" in accepts or not accepts else "pianoroll"}

    def kind_of(self, cfg: DataConfig | None) -> str | None:
        return "image" if cfg is not None and cfg.representation == "pianoroll" else "tokens"

    # ---- sources ----------------------------------------------------------------------------------
    def check_path(self, source: Source) -> None:
        if not music_files(source.path):
            raise DataError(f"data source '{source.canonical}': no music files in {source.path}; expected MIDI or "
                            f"MusicXML files ({', '.join(MUSIC_SUFFIXES)})")

    def source_files(self, source: Source) -> list[Path] | None:
        return None if source.path is None else music_files(source.path)

    # ---- preparation ------------------------------------------------------------------------------
    def check_config(self, source: Source, cfg: DataConfig) -> None:
        if cfg.tokenizer != "char" or cfg.fim_rate:
            raise ConfigError(f"'{source.canonical}' is music: its tokens are REMI events, so --tokenizer and --fim-rate "
                              "do not apply")
        if isinstance(cfg.transpose, bool) or not isinstance(cfg.transpose, int) or not 0 <= cfg.transpose <= MAX_TRANSPOSE:
            raise ConfigError(f"data.transpose must be a whole number of semitones from 0 to {MAX_TRANSPOSE}, "
                              f"got {cfg.transpose!r}")
        if isinstance(cfg.pieces, bool) or not isinstance(cfg.pieces, int) or not 0 <= cfg.pieces <= MAX_PIECES:
            raise ConfigError(f"data.pieces must be a whole number from 0 (all pieces) to {MAX_PIECES:,}, got {cfg.pieces!r}")
        if cfg.representation not in REPRESENTATIONS:
            raise ConfigError(f"data.representation must be one of {', '.join(REPRESENTATIONS)}, got {cfg.representation!r}")
        if cfg.labels not in LABELS:
            raise ConfigError(f"data.labels must be one of {', '.join(LABELS)} for music, got {cfg.labels!r}")

    def preparation_params(self, source: Source, cfg: DataConfig) -> dict:
        kind = {"tokens": "remi"} if cfg.representation == "events" else {"representation": cfg.representation}
        # the options' defaults leave the key as it was before them
        subset = {"pieces": int(cfg.pieces)} if cfg.pieces else {}
        labels = {"labels": cfg.labels} if cfg.labels != "none" else {}
        return {"val_fraction": float(cfg.val_fraction), "transpose": int(cfg.transpose), **kind, **subset, **labels}

    def write(self, tmp: Path, source: Source, params: dict, progress: bool) -> dict:
        from genforge.data.music_rolls import RollFormat
        from genforge.data.music_tokens import MusicTokenizer

        pieces = read_pieces(source, progress, limit=params.get("pieces") or None)
        if params.get("representation") == "pianoroll":
            rolls = RollFormat()
            rolls.save(tmp / "tokenizer.json")
            return write_rolls(pieces, rolls, tmp, params, progress)
        tokenizer = MusicTokenizer(keys=params.get("labels") == "key")
        tokenizer.save(tmp / "tokenizer.json")
        return write_streams(pieces, tokenizer, tmp, params, progress)

    def read(self, path: Path, manifest: dict) -> Entry:
        if manifest.get("representation") != "pianoroll":
            return super().read(path, manifest)
        from genforge.data.cache import CorruptEntry, load_npy

        arrays = {}
        for split in ("train", "val"):
            rolls = load_npy(path / f"{split}_images.npy")
            expected = (manifest["sizes"][split], *manifest["shape"])
            if rolls.dtype != np.uint8 or rolls.shape != expected:
                raise CorruptEntry(f"{split}_images.npy holds {rolls.dtype} {rolls.shape}, expected uint8 {expected}")
            arrays[split] = rolls
            if manifest.get("class_names"):
                labels = load_npy(path / f"{split}_labels.npy")
                if labels.shape != expected[:1] or labels.dtype != np.int64 or (len(labels) and not (
                        0 <= labels.min() and labels.max() < len(manifest["class_names"]))):
                    raise CorruptEntry(f"{split}_labels.npy does not hold a label per segment")
                arrays[f"{split}_labels"] = labels
        try:
            rolls_format = self.load_tokenizer(path / "tokenizer.json")
        except (DataError, OSError) as e:
            raise CorruptEntry(f"tokenizer.json unreadable ({e})") from None
        return Entry(path, manifest, arrays, rolls_format)

    def load_tokenizer(self, path: Path):
        from genforge.data.music_rolls import RollFormat
        from genforge.data.music_tokens import MusicTokenizer

        return load_tokenizer(path, {MusicTokenizer.type: MusicTokenizer.from_dict, RollFormat.type: RollFormat.from_dict})

    def assemble(self, entry: Entry, source: Source, cfg: DataConfig) -> Prepared:
        if entry.manifest.get("representation") == "pianoroll":
            from genforge.data.datasets import ImageDataset

            names = list(entry.manifest.get("class_names") or [])
            train, val = (ImageDataset(entry.arrays[split], entry.arrays.get(f"{split}_labels"), names,
                                       name=f"the {split} split of {source.canonical}") for split in ("train", "val"))
            spec = DataSpec(self.name, tuple(entry.manifest["shape"]), num_classes=len(names) or None, class_names=names)
            return Prepared(spec, train, val, entry.tokenizer, entry.manifest, entry.path)
        train, val = self.windows(entry, source, cfg)
        spec = DataSpec(self.name, (cfg.block_size,), vocab_size=entry.tokenizer.vocab_size)
        return Prepared(spec, train, val, entry.tokenizer, entry.manifest, entry.path)

    def items_per_step(self, spec: DataSpec, batch_size: int) -> int:
        return super().items_per_step(spec, batch_size) if spec.kind == "tokens" else batch_size

    # ---- runs -------------------------------------------------------------------------------------
    def grid_items(self, grid_size: int) -> int:
        return min(4, grid_size)

    def sample_options(self, spec: DataSpec, tokenizer) -> dict:
        if spec.kind != "tokens":
            return {}  # piano rolls: images, drawn as any image family draws them
        return {"prompt": [tokenizer.eot_id], "max_new_tokens": SAMPLE_TOKENS}

    def codec(self, spec: DataSpec, tokenizer):
        from genforge.data.music_codec import MusicCodec

        if tokenizer is None:
            raise DataError("music runs need their tokenizer.json to write samples; it is missing")
        return MusicCodec(tokenizer)

    def report_audio(self, samples_dir: Path) -> bytes | None:
        """The latest training grid's first piece (``step_*.mid``, written beside its piano roll), as WAV bytes."""
        from genforge.data.music import load_score
        from genforge.data.music_render import wav_bytes

        pieces = sorted(samples_dir.glob("step_*.mid"))
        if not pieces:
            return None
        try:
            return wav_bytes(load_score(pieces[-1]), REPORT_AUDIO_RATE, mono=True)
        except DataError as e:  # the report goes on without the sound (a runaway piece, a broken file)
            warnings.warn(f"{pieces[-1]}: no audio in the report ({e})", stacklevel=2)
            return None


def music_files(root: Path) -> list[Path]:
    """``root`` itself when it is a music file, else the music files under it (hidden ones skipped), sorted."""
    root = Path(root)
    if root.is_file():
        return [root] if root.suffix.lower() in MUSIC_SUFFIXES else []
    return sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in MUSIC_SUFFIXES
                  and not any(part.startswith(".") for part in p.relative_to(root).parts))


def read_pieces(source: Source, progress: bool, limit: int | None = None) -> list[tuple[str, object]]:
    """(name, score) of every usable piece (of the first ``limit`` of the source, when given). In a folder,
    files that cannot be read and pieces with nothing to learn (no notes, only drums) are skipped and named in
    one warning; a single file's problem is an error."""
    from genforge.data import music

    pieces, skipped = [], []
    with tqdm(total=limit, desc="reading music", unit="piece", disable=not progress, leave=False) as bar:
        for name, read in piece_readers(source, limit):
            try:
                score = read()
            except DataError as e:
                if source.path is not None and source.path.is_file():
                    raise
                skipped.append(f"{name} ({e})")
                continue
            finally:
                bar.update()
            reason = music.check_piece(score, name)
            if reason:
                skipped.append(f"{name} ({reason})")
            else:
                pieces.append((name, score))
    if not pieces:
        raise DataError(f"data source '{source.canonical}' holds no piece with notes to learn from"
                        + (f" (skipped: {', '.join(skipped[:3])})" if skipped else ""))
    if skipped:
        more = f" and {len(skipped) - 5} more" if len(skipped) > 5 else ""
        warnings.warn(f"{source.canonical}: skipped {len(skipped)} piece(s): {', '.join(skipped[:5])}{more}", stacklevel=2)
    return pieces


def piece_readers(source: Source, limit: int | None = None):
    """(name, a function reading that piece) for each piece of the source (the first ``limit``), in a fixed order."""
    from genforge.data import music

    if source.path is None:
        for name, score in music.bach_pieces(limit):
            yield name, (lambda score=score: score)
        return
    root = source.path if source.path.is_dir() else source.path.parent
    for path in music_files(source.path)[:limit]:
        yield path.relative_to(root).as_posix(), (lambda path=path: music.load_score(path))


def split_versions(pieces: list, params: dict, desc: str, progress: bool):
    """(split, the versions written of one piece) for each piece, in order: a training piece in every
    transposition up to ``params["transpose"]`` semitones each way, a held-out piece once, as it is."""
    from genforge.data import music

    train_names, _ = music.split_pieces([name for name, _ in pieces], params["val_fraction"])
    train_set = set(train_names)
    shifts = list(range(-params["transpose"], params["transpose"] + 1))
    for name, score in tqdm(pieces, desc=desc, unit="piece", disable=not progress, leave=False):
        if name in train_set:
            yield "train", music.transpositions(score, shifts)
        else:
            yield "val", [score]


def write_streams(pieces: list, tokenizer, folder: Path, params: dict, progress: bool) -> dict:
    """train.bin and val.bin: each piece after the end-of-piece token (and its key token, for a tokenizer with
    keys); training pieces in every transposition."""
    from genforge.data.music_keys import estimate_key

    dtype = token_dtype(tokenizer.vocab_size)
    counts, in_split = {"train": 0, "val": 0}, {"train": 0, "val": 0}
    with open(folder / "train.bin", "wb") as train_f, open(folder / "val.bin", "wb") as val_f:
        for split, versions in split_versions(pieces, params, "tokenizing", progress):
            for version in versions:
                head = [tokenizer.eot_id] + ([tokenizer.key_token(estimate_key(version))] if tokenizer.keys else [])
                ids = np.asarray([*head, *tokenizer.encode_score(version)], dtype=dtype)
                (train_f if split == "train" else val_f).write(ids.tobytes())
                counts[split] += len(ids)
            in_split[split] += 1
    return {"tokenizer": tokenizer.type, "vocab_size": tokenizer.vocab_size, "special_ids": tokenizer.special_ids,
            "sizes": counts, "tokens": counts, "token_dtype": np.dtype(dtype).name, "pieces": in_split}


def write_rolls(pieces: list, rolls, folder: Path, params: dict, progress: bool) -> dict:
    """train_images.npy and val_images.npy: every piece's four-bar segments (training pieces in every
    transposition), uint8 (N, 2, 64, 64); with ``params["labels"] == "key"``, {split}_labels.npy: each segment's
    piece's key (0..23)."""
    from genforge.data.music_keys import KEY_NAMES, estimate_key

    keyed = params.get("labels") == "key"
    parts: dict[str, list[np.ndarray]] = {"train": [], "val": []}
    keys: dict[str, list[np.ndarray]] = {"train": [], "val": []}
    in_split = {"train": 0, "val": 0}
    for split, versions in split_versions(pieces, params, "cutting piano rolls", progress):
        for version in versions:
            parts[split].append(rolls.segments(version))
            if keyed:
                keys[split].append(np.full(len(parts[split][-1]), estimate_key(version), dtype=np.int64))
        in_split[split] += 1
    sizes = {}
    for split, segments in parts.items():
        array = np.concatenate(segments) if segments else np.zeros((0, *rolls.shape), dtype=np.uint8)
        np.save(folder / f"{split}_images.npy", array)
        if keyed:
            np.save(folder / f"{split}_labels.npy", np.concatenate(keys[split]) if keys[split] else np.zeros(0, np.int64))
        sizes[split] = int(len(array))
    if not sizes["train"]:
        raise DataError("the training pieces hold no notes in the piano roll's range "
                        f"(MIDI pitches {rolls.pitch_low} to {rolls.pitch_high})")
    return {"representation": "pianoroll", "shape": list(rolls.shape), "sizes": sizes, "pieces": in_split,
            "roll": rolls.to_dict(), **({"class_names": list(KEY_NAMES)} if keyed else {})}
