"""The key of a piece (a ``symusic.Score``), as one of 24 labels, for conditioning music models on key.

**Labels.** ``KEY_NAMES[i]`` names label ``i``: ``i = tonic + 12 * minor``, the tonic a pitch class (0 = C,
1 = C#, ..., 11 = B) and ``minor`` 0 or 1, so 0..11 are C major..B major and 12..23 C minor..B minor.
Tonics are always spelled with sharps ("C# major", "A# minor", never "Db major" or "Bb minor"): a
model's label says which pitch class is the tonic, and a MIDI note does not know its spelling either.
``key_id`` reads flats too ("Db major" is label 1), case-insensitively.

**Estimate.** ``estimate_key`` is the Krumhansl-Schmuckler algorithm with the Krumhansl-Kessler profiles
(Krumhansl 1990, *Cognitive Foundations of Musical Pitch*; the same numbers music21's
``analyze('key.krumhansl')`` uses): the pitch classes of the pitched (non-drum) notes are counted, each
weighted by its duration, and the key whose profile, rotated to the key's tonic, has the highest Pearson
correlation with that 12-bin histogram wins. A note of zero or negative duration weighs nothing. Chords
count every pitch; doubled notes count twice, as they sound longer in the texture. (music21's plain
``analyze('key')`` is a different estimate: the Aarden-Essen profiles.)

**Exact.** Transposing every note by ``k`` semitones must move the tonic by ``k`` and keep the mode, or a
model trained on transposed copies (``music.transpositions``) would see labels that disagree with each
other. Floats could break that: two correlations that are equal on paper can differ in the last bit, and
which one wins would then depend on the rotation. So nothing here ranks with floats:

- The histogram is a sum of integer ticks (Python integers, no overflow). For a score in quarters or
  seconds (float durations) each bin is ``math.fsum`` of its notes, which does not depend on their order.
- The profiles are integers (hundredths). Pearson's r for key (mode m, tonic t) is
  ``c / sqrt(V_m * W)`` with integers ``c = 12 * sum_i h[i] * P_m[(i - t) % 12] - sum(h) * sum(P_m)``,
  ``V_m = 12 * sum(P_m**2) - sum(P_m)**2`` and ``W = 12 * sum(h**2) - sum(h)**2``. ``W`` is the same for
  all 24 keys, so keys are ranked by ``c * |c| / V_m`` (the sign-preserving square of ``c / sqrt(V_m)``), a
  ``Fraction``: exact, and ordered like r.
- Transposing by ``k`` turns ``h`` into ``h'[i] = h[i - k]``, hence ``c'(m, t + k) = c(m, t)`` as the very
  same integers: the ranking rotates with the piece.

**Ties.** Equal scores are broken deterministically by the lowest label, with tonics counted from the
histogram's *anchor* (the first pitch class of its lexicographically greatest rotation; the lowest such one
if several) instead of from C: a fixed "lowest label" alone would pick C over F# both before and after a
transposition and break the equivariance, while the anchor moves with the piece. In the usual case (one
best key) this is plain argmax. The one unavoidable exception: a histogram that repeats every ``s``
semitones (a whole-tone scale, s = 2; a diminished seventh chord, s = 3; an augmented triad, s = 4; a
tritone, s = 6; all 12 equal, s = 1) is its own transposition by ``s``, so no rule can move its key by
``s``; there the key moves by ``k`` modulo ``s``. A histogram that is flat (``W = 0``) has every r
undefined; all keys tie and the tie rule decides.
"""

from __future__ import annotations

import math
import operator
import re
from fractions import Fraction
from typing import TYPE_CHECKING, Sequence

import numpy as np

from genforge.errors import ConfigError, DataError

if TYPE_CHECKING:
    from symusic import Score

PITCH_CLASS_NAMES = ("C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B")
MODES = ("major", "minor")
KEY_NAMES = tuple(f"{tonic} {mode}" for mode in MODES for tonic in PITCH_CLASS_NAMES)
NUM_KEYS = len(KEY_NAMES)  # 24

# Krumhansl-Kessler probe-tone ratings, tonic first, in hundredths (6.35 -> 635): integers, so ranking is exact
KK_MAJOR = (635, 223, 348, 233, 438, 409, 252, 519, 239, 366, 229, 288)
KK_MINOR = (633, 268, 352, 538, 260, 353, 254, 475, 398, 269, 334, 317)
_PROFILES = (KK_MAJOR, KK_MINOR)
_PROFILE_VARIANCE = tuple(12 * sum(p * p for p in profile) - sum(profile) ** 2 for profile in _PROFILES)

_LETTERS = {"c": 0, "d": 2, "e": 4, "f": 5, "g": 7, "a": 9, "b": 11}
_ACCIDENTALS = {"": 0, "#": 1, "\u266f": 1, "b": -1, "-": -1, "\u266d": -1}
_NAME_PATTERN = re.compile(r"\s*([a-g])\s*([#\u266fb\u266d-]?)\s+(major|minor)\s*", re.IGNORECASE)
_NAME_FORM = "a tonic letter A-G, an optional # or b, then major or minor, e.g. 'C# minor' or 'Db major'"


# ---- names and labels ------------------------------------------------------------------------------------
def key_name(key_id: int) -> str:
    """The name of label ``key_id`` ("C major" for 0, "A minor" for 21), tonics spelled with sharps."""
    return KEY_NAMES[_check_key_id(key_id)]


def key_id(name: str) -> int:
    """The label of a key name: case and spacing do not matter, and a flat or sharp names the same pitch
    class as its enharmonic ("Db major", "db MAJOR" and "C# major" are all 1; "Cb major" is B major).
    Anything else is a one-line ``ConfigError``."""
    match = _NAME_PATTERN.fullmatch(name) if isinstance(name, str) else None
    if match is None:
        raise ConfigError(f"key name {name!r} is not a key; expected {_NAME_FORM}")
    letter, accidental, mode = match.groups()
    tonic = (_LETTERS[letter.lower()] + _ACCIDENTALS[accidental.lower()]) % 12
    return tonic + 12 * MODES.index(mode.lower())


def transpose_key(key_id: int, shift: int) -> int:
    """The label of key ``key_id`` moved by ``shift`` semitones (any whole number, negative down): the tonic
    moves by ``shift`` modulo 12, the mode stays."""
    key_id = _check_key_id(key_id)
    shift = _whole_number(shift, "key shift", "a whole number of semitones")
    return (key_id % 12 + shift) % 12 + 12 * (key_id // 12)


def _check_key_id(key_id) -> int:
    value = _whole_number(key_id, "key id", f"a whole number from 0 to {NUM_KEYS - 1}")
    if not 0 <= value < NUM_KEYS:
        raise ConfigError(f"key id must be a whole number from 0 to {NUM_KEYS - 1}, got {key_id!r}")
    return value


def _whole_number(value, what: str, expected: str) -> int:
    if isinstance(value, (bool, np.bool_)):
        raise ConfigError(f"{what} must be {expected}, got {value!r}")
    try:
        return operator.index(value)  # int and numpy integers; not floats, not strings
    except TypeError:
        raise ConfigError(f"{what} must be {expected}, got {value!r}") from None


# ---- estimating ------------------------------------------------------------------------------------------
def estimate_key(score: "Score") -> int:
    """The Krumhansl-Schmuckler key of ``score`` as a label 0..23 (see the module docstring): duration-weighted
    pitch-class histogram of the non-drum notes, best Pearson correlation with the 24 rotated
    Krumhansl-Kessler profiles, ranked exactly. A piece with no pitched note of positive duration is a
    one-line ``DataError``."""
    hist = _histogram(score)
    anchor = _anchor(hist)
    best, best_value = 0, None
    for mode in (0, 1):
        for offset in range(12):  # the tie order: lowest label, tonics counted from the anchor
            tonic = (anchor + offset) % 12
            value = _ranking_value(hist, mode, tonic)
            if best_value is None or value > best_value:
                best, best_value = tonic + 12 * mode, value
    return best


def key_correlations(score: "Score") -> np.ndarray:
    """The Pearson correlation of the piece's histogram with each of the 24 key profiles (float64, indexed by
    label), for a confidence or a soft label; all zeros for a flat histogram. ``estimate_key`` does not rank
    these floats (it ranks the same numbers exactly), so where two keys tie to the last bit it may pick
    either. Errors as ``estimate_key``."""
    hist = _histogram(score)
    spread = 12 * sum(h * h for h in hist) - sum(hist) ** 2
    out = np.zeros(NUM_KEYS)
    if spread > 0:
        for mode in (0, 1):
            for tonic in range(12):
                # c / sqrt(V_m * W): big integers (or Fractions) turned into a float once, at the end
                c = _covariance(hist, mode, tonic)
                ratio = Fraction(c * c) / (_PROFILE_VARIANCE[mode] * spread)
                out[tonic + 12 * mode] = math.copysign(math.sqrt(ratio), c)
    return out


def pitch_class_histogram(score: "Score") -> np.ndarray:
    """The 12 bins (C..B) of summed durations of the non-drum notes, in the score's own time unit (ticks for
    a tick score), as float64: the input of ``estimate_key``. Errors as ``estimate_key``."""
    return np.array([float(h) for h in _histogram(score)], dtype=np.float64)


def _histogram(score: "Score") -> list:
    """12 exact bins: Python integers for a tick score, ``Fraction`` of an order-independent ``math.fsum`` for
    a score with float durations. Non-positive durations weigh nothing."""
    pitches, durations = [], []
    for track in score.tracks:
        if track.is_drum or len(track.notes) == 0:
            continue
        notes = track.notes.numpy()
        pitches.append(np.asarray(notes["pitch"], dtype=np.int64))
        durations.append(np.asarray(notes["duration"]))
    if not pitches:
        raise DataError("piece has no pitched notes (no notes, or drums only); "
                        "expected at least one non-drum note to estimate its key")
    pcs = np.concatenate(pitches) % 12
    lengths = np.concatenate(durations)
    if np.issubdtype(lengths.dtype, np.integer):
        lengths = np.maximum(lengths.astype(np.int64), 0)
        hist = [int(lengths[pcs == pc].sum()) for pc in range(12)]
    else:
        lengths = np.maximum(lengths.astype(np.float64), 0.0)
        if not np.isfinite(lengths).all():
            raise DataError("piece has a pitched note of non-finite duration; expected finite note durations")
        hist = [Fraction(math.fsum(lengths[pcs == pc].tolist())) for pc in range(12)]
    if sum(hist) == 0:
        raise DataError("piece's pitched notes all have zero duration; "
                        "expected at least one non-drum note that sounds for some time")
    return hist


def _covariance(hist: Sequence, mode: int, tonic: int) -> int | Fraction:
    """``12 * sum_i h[i] * P[(i - tonic) % 12] - sum(h) * sum(P)``: 144 times the covariance, exact."""
    profile = _PROFILES[mode]
    dot = sum(hist[i] * profile[(i - tonic) % 12] for i in range(12))
    return 12 * dot - sum(hist) * sum(profile)


def _ranking_value(hist: Sequence, mode: int, tonic: int) -> Fraction:
    """``c * |c| / V_m``: ordered exactly like the Pearson correlation of key (mode, tonic)."""
    c = _covariance(hist, mode, tonic)
    return Fraction(c * abs(c)) / _PROFILE_VARIANCE[mode]


def _anchor(hist: Sequence) -> int:
    """The pitch class that starts the lexicographically greatest rotation of the histogram (the lowest such
    one if several): it moves with a transposition of the piece, so tie-breaking from it does too."""
    rotations = [tuple(hist[(start + i) % 12] for i in range(12)) for start in range(12)]
    return max(range(12), key=lambda start: (rotations[start], -start))
