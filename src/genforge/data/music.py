"""Music pieces: reading files into ``symusic.Score``, the built-in Bach chorales, splits and augmentation.

A piece lives in memory as a ``symusic.Score``, the type MidiTok works on: tracks of notes (onset tick,
duration in ticks, pitch 0..127, velocity), plus tempos and time signatures, with ``ticks_per_quarter``
saying how long a beat is. Every reader here ends in that one type, so the tokenizer and the piano roll
(``music_tokens.py``) never see a file format:

- MIDI (``.mid``, ``.midi``) is read by symusic directly (fast, C++).
- MusicXML (``.xml``, ``.mxl``, ``.musicxml``), Humdrum (``.krn``) and ABC (``.abc``) are parsed by music21,
  which writes the piece as MIDI bytes that symusic reads: one converter (music21's own, which knows about
  ties, voices and repeats) instead of a second home-made one.

Bad input is a user's mistake, not a crash: a file over ``MAX_MUSIC_FILE_BYTES``, a corrupt MIDI or a score
music21 cannot parse raises a one-line ``DataError`` naming the file. A piece that reads fine but is of no
use (no notes, only drums) is not an error: ``check_piece`` gives the reason, and the caller warns and
skips it, so one odd file does not stop a folder of thousands.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import TYPE_CHECKING, Iterator, Sequence

from genforge.errors import ConfigError, DataError

if TYPE_CHECKING:
    from symusic import Score

MAX_MUSIC_FILE_BYTES = 20 * 1024 * 1024  # far above any real score (a chorale is ~10 kB); refuses stray media files
MIDI_SUFFIXES = (".mid", ".midi")
MUSIC21_FORMATS = {".xml": "MusicXML", ".mxl": "compressed MusicXML", ".musicxml": "MusicXML", ".krn": "Humdrum kern",
                   ".abc": "ABC"}
MUSIC21_SUFFIXES = tuple(MUSIC21_FORMATS)
MUSIC_SUFFIXES = MIDI_SUFFIXES + MUSIC21_SUFFIXES
MIDI_PITCHES = range(128)
_MAX_REASON_CHARS = 120


# ---- reading ---------------------------------------------------------------------------------------------
def load_score(path: str | os.PathLike) -> "Score":
    """The piece in the file at ``path`` as a ``symusic.Score``. The file's size is checked before anything
    reads it, so a huge file costs nothing; any failure to read is a one-line ``DataError``."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in MUSIC_SUFFIXES:
        raise DataError(f"music file {path} has an unknown extension {path.suffix or '(none)'!r}; "
                        f"expected one of {', '.join(MUSIC_SUFFIXES)}")
    _check_size(path)
    if suffix in MIDI_SUFFIXES:
        return _read_midi(path)
    return _read_with_music21(path)


def _check_size(path: Path) -> None:
    if not path.exists():
        raise DataError(f"music file {path} is missing; expected a MIDI or MusicXML file")
    try:
        size = path.stat().st_size
    except OSError as e:
        raise DataError(f"music file {path} cannot be read ({e.strerror or type(e).__name__}); "
                        "expected a readable MIDI or MusicXML file") from None
    if not path.is_file():
        raise DataError(f"music file {path} is not a file; expected a MIDI or MusicXML file")
    if size > MAX_MUSIC_FILE_BYTES:
        raise DataError(f"music file {path} is {size:,} bytes, over the limit of {MAX_MUSIC_FILE_BYTES:,} bytes "
                        f"({MAX_MUSIC_FILE_BYTES / 2**20:g} MiB) for one piece; expected a MIDI or MusicXML score")


def _read_midi(path: Path) -> "Score":
    from symusic import Score

    try:
        return Score(str(path))
    except Exception as e:  # symusic raises plain RuntimeError/ValueError with C++ messages
        raise DataError(f"music file {path} is not a readable MIDI file ({_reason(e)}); "
                        "expected a Standard MIDI File") from None


def _read_with_music21(path: Path) -> "Score":
    """music21 parses the score and writes it as MIDI bytes; symusic reads those. ``forceSource`` keeps
    music21 from reading or writing its pickle cache (a pickle is never loaded from disk here)."""
    from music21 import converter

    try:
        stream = converter.parseFile(path, forceSource=True)
        midi_bytes = _midi_bytes(stream)
    except Exception as e:  # music21 raises many kinds (XML parse errors, its own exceptions, KeyError ...)
        raise DataError(f"music file {path} cannot be parsed by music21 ({_reason(e)}); "
                        f"expected a valid {MUSIC21_FORMATS[path.suffix.lower()]} score") from None
    return _score_from_midi_bytes(midi_bytes, str(path))


def _midi_bytes(stream) -> bytes:
    """music21's MIDI for a parsed score. Writing MIDI plays repeats out; when a score's repeat marks do not
    pair up (Humdrum files in music21's own corpus do this), each bar is played once instead."""
    from music21.midi.translate import streamToMidiFile
    from music21.repeat import ExpanderException

    try:
        return streamToMidiFile(stream).writestr()
    except ExpanderException:
        return streamToMidiFile(_without_repeats(stream)).writestr()


def _without_repeats(stream):
    from music21 import bar, repeat

    for measure in stream.recurse().getElementsByClass("Measure"):
        if isinstance(measure.leftBarline, bar.Repeat):
            measure.leftBarline = None
        if isinstance(measure.rightBarline, bar.Repeat):
            measure.rightBarline = bar.Barline()
        for mark in list(measure.getElementsByClass(repeat.RepeatExpression)):
            measure.remove(mark)
    return stream


def _score_from_midi_bytes(data: bytes, name: str) -> "Score":
    from symusic import Score

    try:
        return Score.from_midi(data)
    except Exception as e:
        raise DataError(f"music file {name} could not be converted to MIDI ({_reason(e)}); "
                        "expected a score music21 can write as MIDI") from None


def _reason(error: Exception) -> str:
    """The first line of an exception's message, shortened: the DataError stays one readable line."""
    lines = str(error).strip().splitlines()
    text = lines[0].strip() if lines else type(error).__name__
    return text if len(text) <= _MAX_REASON_CHARS else text[:_MAX_REASON_CHARS - 3] + "..."


# ---- usable or not ---------------------------------------------------------------------------------------
def check_piece(score: "Score", name: str) -> str | None:
    """Why the piece should be skipped ("has no notes", "holds only drums"), or None when it is usable; the
    caller warns with ``f"{name} ({reason})"``. ``name`` is the piece's name (a relative path or corpus
    name), for reasons that would depend on it. Drum notes carry no pitch (a drum "pitch" picks an
    instrument), so a drums-only piece has nothing the pitched representations can hold."""
    tracks_with_notes = [track for track in score.tracks if len(track.notes) > 0]
    if not tracks_with_notes:
        return "has no notes"
    if all(track.is_drum for track in tracks_with_notes):
        return "holds only drums"
    return None


# ---- built-in data: the Bach chorales in music21's corpus ------------------------------------------------
def bach_chorale_names() -> list[str]:
    """The corpus names ("bach/bwv269", ...) of the chorales in Riemenschneider's numbering, the order music21's
    chorale iterator uses: fixed by the edition, so the same on every machine. The edition prints some
    chorales twice (371 numbers, 350 files): each is listed once, at its first number, so no piece weighs
    double. Listing them reads no score."""
    from music21.corpus.chorales import Iterator

    return list(dict.fromkeys(str(name) for name in Iterator(returnType="filename")))


def bach_pieces(limit: int | None = None) -> Iterator[tuple[str, "Score"]]:
    """(corpus name, score) for the 350 Bach chorales bundled with music21 (no download: the corpus is part of
    the package), in Riemenschneider order. Parsing takes about half a second a chorale: ``limit`` takes the
    first ``limit`` only."""
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 0):
        raise ConfigError(f"limit must be a whole number >= 0 or None, got {limit!r}")
    names = bach_chorale_names()
    for name in names if limit is None else names[:limit]:
        yield name, load_score(_corpus_file(name))


def _corpus_file(name: str) -> Path:
    """The file music21 ships for a corpus name; MusicXML first where a chorale also exists in Humdrum."""
    from music21 import corpus

    found = corpus.getWork(name)
    paths = sorted(map(Path, found if isinstance(found, list) else [found]),
                   key=lambda p: (p.suffix.lower() not in (".mxl", ".xml", ".musicxml"), str(p)))
    if not paths:
        raise DataError(f"music21's corpus has no file for {name}; expected the corpus bundled with music21")
    return paths[0]


# ---- splits ----------------------------------------------------------------------------------------------
def split_pieces(names: Sequence[str], val_fraction: float, seed: int = 0) -> tuple[list[str], list[str]]:
    """(train names, validation names), split by piece, never inside one: the transpositions and segments
    of one chorale must not sit on both sides, or validation would measure memory.

    A piece goes to validation when a hash of (seed, name) falls below ``val_fraction``: its side depends on
    its name alone, so adding or removing pieces moves no other piece. With two pieces or more and
    ``val_fraction`` > 0, each side gets at least one: if the hash leaves a side empty, the piece whose
    hash is nearest the boundary crosses over. Both lists keep the order of ``names``.
    """
    if isinstance(val_fraction, bool) or not isinstance(val_fraction, (int, float)) or not 0 <= val_fraction < 1:
        raise ConfigError(f"val_fraction must be a number from 0 to below 1, got {val_fraction!r}")
    names = list(names)
    position = {name: _unit_hash(name, seed) for name in names}
    in_val = {name for name in names if position[name] < val_fraction}
    if len(names) >= 2 and val_fraction > 0:
        if not in_val:
            in_val = {min(names, key=position.__getitem__)}
        elif len(in_val) == len(set(names)):
            in_val.discard(max(names, key=position.__getitem__))
    return [n for n in names if n not in in_val], [n for n in names if n in in_val]


def _unit_hash(name: str, seed: int) -> float:
    """A number in [0, 1) fixed by (seed, name): SHA-256, so the same on every machine and Python run."""
    digest = hashlib.sha256(f"{int(seed)}\0{name}".encode("utf-8", "surrogatepass")).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


# ---- augmentation ----------------------------------------------------------------------------------------
def transpositions(score: "Score", semitones: Sequence[int]) -> list["Score"]:
    """The piece transposed by each shift in ``semitones`` (0 gives a copy), in order; drum tracks are left
    alone, as their note numbers name instruments.

    A shift that would push any pitched note outside MIDI's 0..127 is skipped, not clipped: dropping the
    notes that fall off would hand the model a piece that was never written. So the list can be shorter
    than ``semitones``; ``fits_transposition`` says which shifts survive.
    """
    out = []
    for shift in semitones:
        if not fits_transposition(score, shift):
            continue
        moved = score.copy()
        for track in moved.tracks:
            if not track.is_drum and shift:
                track.shift_pitch(int(shift), inplace=True)
        out.append(moved)
    return out


def fits_transposition(score: "Score", shift: int) -> bool:
    """Whether every pitched note of ``score`` stays within MIDI's 0..127 when moved by ``shift`` semitones."""
    for track in score.tracks:
        if track.is_drum or len(track.notes) == 0:
            continue
        pitches = track.notes.numpy()["pitch"]
        if int(pitches.min()) + shift < MIDI_PITCHES.start or int(pitches.max()) + shift >= MIDI_PITCHES.stop:
            return False
    return True
