"""Key estimation (Krumhansl-Schmuckler, Krumhansl-Kessler profiles): textbook cases, exact equivariance under
transposition (ties included), drums ignored, names and labels round-tripping."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from symusic import Note, Score, Track

from genforge.data import music
from genforge.data.music_keys import (KEY_NAMES, KK_MAJOR, KK_MINOR, NUM_KEYS, estimate_key, key_correlations,
                                      key_id, key_name, pitch_class_histogram, transpose_key)
from genforge.errors import ConfigError, DataError

TPQ = 8
C_MAJOR_SCALE = [60, 62, 64, 65, 67, 69, 71, 72]
A_HARMONIC_MINOR = [57, 60, 64, 69, 71, 72, 68, 69, 64, 62, 60, 59, 57, 56, 57]  # a tune on A B C D E F G#


def piece(notes, drums=(), tpq: int = TPQ) -> Score:
    """A score of one pitched track of (time, duration, pitch) notes, plus a drum track when ``drums``."""
    score = Score(tpq)
    track = Track(name="melody", program=0)
    for time, duration, pitch in notes:
        track.notes.append(Note(time, duration, pitch, 80))
    score.tracks.append(track)
    if drums:
        kit = Track(name="drums", program=0, is_drum=True)
        for time, duration, pitch in drums:
            kit.notes.append(Note(time, duration, pitch, 100))
        score.tracks.append(kit)
    return score


def line(pitches, beats: int = 1) -> list[tuple[int, int, int]]:
    return [(i * beats * TPQ, beats * TPQ, p) for i, p in enumerate(pitches)]


def period(score: Score) -> int:
    """The smallest shift s (dividing 12) with the histogram equal to itself rotated by s: 12 when none."""
    hist = pitch_class_histogram(score)
    return next(s for s in (1, 2, 3, 4, 6, 12) if np.array_equal(hist, np.roll(hist, s)))


notes_st = st.lists(st.tuples(st.integers(0, 64), st.integers(0, 4 * TPQ), st.integers(24, 103)),
                    min_size=1, max_size=24).filter(lambda notes: any(d > 0 for _, d, _ in notes))


@st.composite
def periodic_notes(draw) -> list[tuple[int, int, int]]:
    """Notes whose histogram repeats every s semitones (whole-tone, diminished, augmented, tritone, chromatic):
    the pieces that are their own transposition by s."""
    step = draw(st.sampled_from([1, 2, 3, 4, 6]))
    cell = draw(st.lists(st.tuples(st.integers(0, step - 1), st.integers(1, 8)), min_size=1, max_size=3))
    low = draw(st.integers(24, 60))
    return [(0, duration, low + offset + copy * step) for offset, duration in cell for copy in range(12 // step)]


# histograms (C..B, in ticks) on which two keys tie exactly, found by a search over small histograms
EXACT_TIES = {"F major = A# major": (0, 0, 0, 0, 1, 1, 0, 0, 0, 2, 2, 0),
              "C major = F major": (3, 0, 0, 0, 0, 1, 2, 0, 0, 0, 1, 0),
              "C major = A# major": (3, 2, 0, 2, 0, 0, 3, 0, 2, 0, 0, 0),
              "C minor = D minor": (2, 2, 1, 1, 0, 0, 0, 0, 0, 0, 1, 0),
              "C minor = D# minor": (3, 0, 1, 0, 0, 0, 3, 0, 0, 3, 0, 0)}


# ---- textbook cases --------------------------------------------------------------------------------------
def test_c_major_scale_is_c_major():
    assert key_name(estimate_key(piece(line(C_MAJOR_SCALE)))) == "C major"


def test_a_harmonic_minor_melody_is_a_minor():
    assert key_name(estimate_key(piece(line(A_HARMONIC_MINOR)))) == "A minor"


def test_durations_weigh():
    """One long D under a C major scale in quarters tips the balance: notes are weighted by duration."""
    scale = line(C_MAJOR_SCALE)
    assert estimate_key(piece(scale)) == key_id("C major")
    assert estimate_key(piece(scale + [(0, 40 * TPQ, 50)])) != key_id("C major")


def test_units_and_resolution_do_not_matter():
    """The same piece at another resolution, or with float durations in quarters, gets the same key."""
    notes = line(A_HARMONIC_MINOR)
    expected = estimate_key(piece(notes))
    assert estimate_key(piece([(t * 15, d * 15, p) for t, d, p in notes], tpq=TPQ * 15)) == expected
    assert estimate_key(piece(notes).to("quarter")) == expected


def test_correlations_are_pearson():
    """``key_correlations`` is np.corrcoef of the histogram with each rotated profile, and its argmax is the key."""
    score = piece(line(A_HARMONIC_MINOR))
    hist = pitch_class_histogram(score)
    expected = [np.corrcoef(hist, np.roll(profile, tonic))[0, 1] for profile in (KK_MAJOR, KK_MINOR)
                for tonic in range(12)]
    np.testing.assert_allclose(key_correlations(score), expected, rtol=1e-12)
    assert int(np.argmax(key_correlations(score))) == estimate_key(score)


# ---- transposition ---------------------------------------------------------------------------------------
@settings(max_examples=150, deadline=None)
@given(notes=st.one_of(notes_st, periodic_notes()), shift=st.integers(-24, 24))
@example(notes=[(0, 1, 64), (0, 1, 65), (0, 2, 69), (0, 2, 70)], shift=6)  # F major and A# major tie exactly
def test_transposing_moves_the_key_by_the_same_shift(notes, shift):
    """Transposing by k moves the tonic by k and keeps the mode, exactly, also when keys tie; only a histogram
    that repeats every s semitones (its own transposition by s) is equivariant modulo s, the best possible."""
    score = piece(notes)
    (moved,) = music.transpositions(score, [shift])  # pitches 24..103: every shift of -24..24 fits
    before, after = estimate_key(score), estimate_key(moved)
    assert after // 12 == before // 12
    assert (after - transpose_key(before, shift)) % period(score) == 0


@pytest.mark.parametrize("hist", EXACT_TIES.values(), ids=EXACT_TIES.keys())
def test_exact_ties_follow_the_transposition(hist):
    """On these histograms two keys tie exactly (as integers); a fixed "lowest label" would pick the same one
    of the two tied tonics for some transpositions and not others, and break equivariance."""
    score = piece([(0, weight, 60 + pc) for pc, weight in enumerate(hist) if weight])
    correlations = key_correlations(score)
    assert np.sum(np.isclose(correlations, correlations.max(), rtol=0, atol=1e-12)) == 2
    for shift in range(-12, 12):
        (moved,) = music.transpositions(score, [shift])
        assert estimate_key(moved) == transpose_key(estimate_key(score), shift)


# ---- drums and empty pieces ------------------------------------------------------------------------------
@settings(max_examples=40, deadline=None)
@given(notes=notes_st, drums=st.lists(st.tuples(st.integers(0, 64), st.integers(1, 64), st.integers(35, 81)),
                                      min_size=1, max_size=30))
def test_drum_tracks_are_ignored(notes, drums):
    assert estimate_key(piece(notes, drums)) == estimate_key(piece(notes))


@pytest.mark.parametrize("score", [Score(TPQ), piece([]), piece([], drums=[(0, 8, 36), (8, 8, 38)]),
                                   piece([(0, 0, 60), (8, 0, 64)])],
                         ids=["no tracks", "no notes", "drums only", "zero durations"])
def test_a_piece_without_sounding_pitched_notes_is_a_data_error(score):
    for function in (estimate_key, key_correlations, pitch_class_histogram):
        with pytest.raises(DataError) as error:
            function(score)
        assert "\n" not in str(error.value) and "expected" in str(error.value)


# ---- names and labels ------------------------------------------------------------------------------------
def test_names_round_trip():
    assert len(KEY_NAMES) == NUM_KEYS == 24
    assert KEY_NAMES[:3] == ("C major", "C# major", "D major") and KEY_NAMES[12] == "C minor"
    assert KEY_NAMES[23] == "B minor" and all("b" not in name.split()[0] for name in KEY_NAMES)
    for label, name in enumerate(KEY_NAMES):
        assert key_name(label) == name
        assert key_id(name) == key_id(name.upper()) == key_id(f"  {name.lower()} ") == label
        assert key_id(name) == label % 12 + 12 * (name.endswith("minor"))


@pytest.mark.parametrize("name, expected", [("Db major", "C# major"), ("bb minor", "A# minor"),
                                            ("Eb MINOR", "D# minor"), ("Cb major", "B major"),
                                            ("B# minor", "C minor"), ("E# major", "F major"),
                                            ("Fb minor", "E minor"), ("Gb  major", "F# major"),
                                            ("b minor", "B minor"), ("B- major", "A# major")])
def test_flats_and_enharmonics_name_the_sharp_label(name, expected):
    assert key_name(key_id(name)) == expected


@pytest.mark.parametrize("name", ["H major", "C", "C dorian", "Cmajor", "C## major", "major", "", "C major x",
                                  None, 3])
def test_a_bad_key_name_is_a_config_error(name):
    with pytest.raises(ConfigError, match="expected a tonic letter A-G") as error:
        key_id(name)
    assert "\n" not in str(error.value)


@given(label=st.integers(0, 23), a=st.integers(-100, 100), b=st.integers(-100, 100))
def test_transpose_key_is_a_rotation_of_the_tonic(label, a, b):
    moved = transpose_key(label, a)
    assert moved // 12 == label // 12 and (moved - label - a) % 12 == 0
    assert transpose_key(moved, b) == transpose_key(label, a + b)
    assert transpose_key(label, np.int64(a)) == moved


@pytest.mark.parametrize("bad", [-1, 24, 1.0, True, "0"])
def test_bad_key_ids_and_shifts_are_config_errors(bad):
    with pytest.raises(ConfigError, match="key id must be a whole number from 0 to 23"):
        key_name(bad)
    with pytest.raises(ConfigError, match="key id must be"):
        transpose_key(bad, 1)
    if bad not in (-1, 24):
        with pytest.raises(ConfigError, match="key shift must be a whole number"):
            transpose_key(0, bad)
