"""The music data layer: reading pieces, the Bach chorales, splits, transposition, REMI tokens, piano rolls.

Scores are tiny and made in memory with symusic; only one test parses chorales (two of them).
"""

import json
import random

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from symusic import Note, Score, Tempo, Track

from genforge.data.music import (MAX_MUSIC_FILE_BYTES, bach_pieces, check_piece, fits_transposition, load_score,
                                 split_pieces, transpositions)
from genforge.data.music_tokens import (MusicTokenizer, RemiSettings, roll_segments, roll_to_score, score_to_roll)
from genforge.errors import ConfigError, DataError

pytestmark = pytest.mark.usefixtures("one_thread")

GRID = 8  # the tokenizer's default positions a beat
VELOCITY_BINS = [15, 31, 47, 63, 79, 95, 111, 127]  # 8 bins over 1..127


def make_score(notes, ticks_per_beat=GRID, drum=False, tempo=None) -> Score:
    """A one-track score of (start, duration, pitch, velocity) notes, in ticks."""
    score = Score(ticks_per_beat)
    if notes is not None:
        track = Track(name="t", program=0, is_drum=drum)
        for start, duration, pitch, velocity in notes:
            track.notes.append(Note(start, duration, pitch, velocity))
        score.tracks.append(track)
    if tempo is not None:
        score.tempos.append(Tempo(0, qpm=float(tempo)))
    return score


def note_tuples(score: Score, steps_per_beat: int) -> list[tuple[int, int, int, int]]:
    """Every note of every track as (start step, duration in steps, pitch, velocity), sorted."""
    scale = score.ticks_per_quarter // steps_per_beat
    return sorted((n.time // scale, n.duration // scale, n.pitch, n.velocity) for t in score.tracks for n in t.notes)


@pytest.fixture(scope="module")
def tokenizer():
    return MusicTokenizer()


def one_line(error: pytest.ExceptionInfo) -> str:
    message = str(error.value)
    assert "\n" not in message and "Traceback" not in message
    return message


# ---- REMI tokens -----------------------------------------------------------------------------------------
remi_notes = st.lists(
    st.tuples(st.integers(0, 8 * 4 * GRID),  # start: 8 bars of 4/4
              st.integers(1, 4 * GRID),  # duration: up to 4 beats, exact on the grid
              st.integers(21, 108),
              st.sampled_from(VELOCITY_BINS)),
    min_size=1, max_size=40, unique_by=lambda n: (n[0], n[2]))  # one note per (onset, pitch): no unison doubling


@settings(max_examples=40, deadline=None)
@given(notes=remi_notes, ticks_per_beat=st.sampled_from([GRID, 96, 480]), tempo=st.sampled_from([60, 120, 200]))
def test_remi_round_trips_grid_notes_exactly(tokenizer, notes, ticks_per_beat, tempo):
    scale = ticks_per_beat // GRID
    score = make_score([(s * scale, d * scale, p, v) for s, d, p, v in notes], ticks_per_beat, tempo=tempo)
    ids = tokenizer.encode_score(score)
    assert all(0 <= i < tokenizer.vocab_size for i in ids) and tokenizer.eot_id not in ids
    decoded = tokenizer.decode_score(ids)
    assert decoded.ticks_per_quarter == tokenizer.ticks_per_beat == GRID
    assert note_tuples(decoded, GRID) == sorted(notes)
    assert [round(t.qpm) for t in decoded.tempos] == [tempo]


def test_remi_snaps_velocities_to_bins_and_merges_tracks(tokenizer):
    score = make_score([(0, 8, 60, 100)])
    second = Track(name="alto", program=40)
    second.notes.append(Note(8, 8, 64, 20))
    score.tracks.append(second)
    drums = Track(name="drums", is_drum=True)
    drums.notes.append(Note(0, 8, 36, 100))
    score.tracks.append(drums)
    decoded = tokenizer.decode_score(tokenizer.encode_score(score))
    assert len(decoded.tracks) == 1  # pitched tracks merged, drums left out
    assert note_tuples(decoded, GRID) == [(0, 8, 60, 95), (8, 8, 64, 15)]
    assert list(tokenizer.velocities) == VELOCITY_BINS


def test_remi_drops_unusable_pieces_to_an_empty_stream(tokenizer):
    assert tokenizer.encode_score(Score(GRID)) == []
    assert tokenizer.encode_score(make_score([(0, 8, 36, 100)], drum=True)) == []
    assert tokenizer.encode_score(make_score([(0, 8, 10, 100)])) == []  # below the piano's range


def test_tokenizer_interface(tokenizer):
    assert tokenizer.type == "remi"
    assert tokenizer.special_ids == {"PAD_None": 0, "BOS_None": 1, "EOS_None": 2}
    assert tokenizer.eot_id == 2 and tokenizer.fim_ids() is None
    ids = tokenizer.encode_score(make_score([(0, 4, 60, 63)]))
    assert tokenizer.encode(tokenizer.decode(ids)) == ids
    assert tokenizer.decode(ids).split()[:2] == ["Bar_None", "Position_0"]
    with pytest.raises(DataError) as error:
        tokenizer.encode("Bar_None Pitch_999")
    assert "Pitch_999" in one_line(error)


@settings(max_examples=12, deadline=None)
@given(settings_=st.builds(RemiSettings, positions_per_beat=st.sampled_from([2, 4, 8]),
                           pitch_low=st.integers(0, 60), pitch_high=st.integers(61, 127),
                           velocity_bins=st.integers(1, 32), tempo_bins=st.integers(2, 40)))
def test_tokenizer_dict_round_trip(settings_):
    tokenizer = MusicTokenizer(settings_)
    again = MusicTokenizer.from_dict(json.loads(json.dumps(tokenizer.to_dict())))
    assert again == tokenizer and again.vocab_size == tokenizer.vocab_size
    assert again != MusicTokenizer(RemiSettings(velocity_bins=settings_.velocity_bins % 32 + 1))


def test_tokenizer_save_load_and_corrupt_files(tokenizer, tmp_path):
    path = tmp_path / "tokenizer.json"
    tokenizer.save(path)
    assert MusicTokenizer.load(path) == tokenizer
    d = json.loads(path.read_text())
    d["vocab"] = d["vocab"][::-1]  # as if another MidiTok numbered the tokens differently
    path.write_text(json.dumps(d))
    with pytest.raises(DataError) as error:
        MusicTokenizer.load(path)
    assert "vocabulary differs" in one_line(error)
    path.write_text(json.dumps({"type": "remi", "settings": {"positions_per_beat": 0}}))
    with pytest.raises(DataError) as error:
        MusicTokenizer.load(path)
    assert "positions_per_beat" in one_line(error)
    with pytest.raises(ConfigError):
        RemiSettings(pitch_low=90, pitch_high=80)


@settings(max_examples=100, deadline=None)
@given(ids=st.lists(st.integers(-3, 300), max_size=120))
def test_decode_never_raises_on_model_output(tokenizer, ids):
    from symusic import Score

    score = tokenizer.decode_score(ids)
    for track in score.tracks:
        for note in track.notes:
            assert 21 <= note.pitch <= 108 and note.duration > 0 and note.time >= 0
    # events in time order: a MIDI file of them reads back as long (a tempo token "back" in a bar once made a
    # file of 2**28 ticks)
    assert Score.from_midi(bytes(score.dumps_midi())).end() == score.end()


def test_decoded_events_are_in_time_order(tokenizer):
    from symusic import Score

    names = ["Bar_None", "Position_20", "Tempo_80.0", "Position_4", "Tempo_200.0", "Pitch_60", "Velocity_79",
             "Duration_1.0.8"]
    score = tokenizer.decode_score([tokenizer._remi.vocab[name] for name in names])
    assert [t.time for t in score.tempos] == sorted(t.time for t in score.tempos)
    assert Score.from_midi(bytes(score.dumps_midi())).end() == score.end() == 20


def test_decode_accepts_arrays_and_tensors(tokenizer):
    import torch

    ids = tokenizer.encode_score(make_score([(0, 4, 60, 63), (4, 4, 62, 63)]))
    expected = note_tuples(tokenizer.decode_score(ids), GRID)
    assert note_tuples(tokenizer.decode_score(np.array(ids)), GRID) == expected
    assert note_tuples(tokenizer.decode_score(torch.tensor([ids])), GRID) == expected


# ---- piano roll ------------------------------------------------------------------------------------------
@st.composite
def roll_notes(draw, touching: bool):
    """Grid notes (start step, steps, pitch, velocity) that never overlap at one pitch; notes of one pitch touch
    (one starts where the last ended) only when ``touching``, as a plain roll merges those."""
    notes = []
    for pitch in draw(st.lists(st.integers(21, 108), min_size=1, max_size=6, unique=True)):
        end = draw(st.integers(0, 8))
        for gap, steps, velocity in draw(st.lists(st.tuples(st.integers(0 if touching else 1, 3), st.integers(1, 8),
                                                            st.integers(1, 127)), min_size=1, max_size=5)):
            notes.append((end + gap, steps, pitch, velocity))
            end += gap + steps
    return notes


@settings(max_examples=40, deadline=None)
@given(notes=roll_notes(touching=False), ticks_per_beat=st.sampled_from([4, 480]))
def test_roll_round_trips_grid_notes(notes, ticks_per_beat):
    scale = ticks_per_beat // 4
    score = make_score([(s * scale, d * scale, p, v) for s, d, p, v in notes], ticks_per_beat)
    roll = score_to_roll(score, steps_per_beat=4)
    assert roll.dtype == np.uint8 and roll.shape == (1, max(s + d for s, d, _, _ in notes), 88)
    assert note_tuples(roll_to_score(roll, steps_per_beat=4), 4) == sorted(notes)


@settings(max_examples=40, deadline=None)
@given(notes=roll_notes(touching=True))
def test_roll_with_onsets_keeps_repeated_notes_apart(notes):
    roll = score_to_roll(make_score(notes, 4), steps_per_beat=4, onsets=True)
    assert roll.shape[0] == 2
    assert note_tuples(roll_to_score(roll, steps_per_beat=4, onsets=True), 4) == sorted(notes)


def test_roll_merges_touching_repeats_without_onsets():
    score = make_score([(0, 2, 60, 80), (2, 2, 60, 40)], 4)
    assert note_tuples(roll_to_score(score_to_roll(score), 4), 4) == [(0, 4, 60, 80)]
    wavering = np.zeros((1, 4, 88))
    wavering[0, :, 39] = [80.2, 79.6, 81.0, 77.9]  # a model's output: one note, not four
    assert note_tuples(roll_to_score(wavering, 4), 4) == [(0, 4, 60, 80)]


def test_roll_tracks_bools_and_pitch_range():
    score = make_score([(0, 4, 60, 90), (0, 4, 10, 90)], 4)  # pitch 10 is below the piano
    other = Track(name="bass", program=32)
    other.notes.append(Note(4, 4, 40, 70))
    score.tracks.append(other)
    assert score_to_roll(score, merge_tracks=False).shape == (2, 8, 88)
    narrow = score_to_roll(score, pitch_low=40, pitch_high=71)
    assert narrow.shape == (1, 8, 32) and narrow.sum() == 4 * 90 + 4 * 70
    assert score_to_roll(Score(4)).shape == (1, 0, 88)
    back = roll_to_score(score_to_roll(score) > 0, 4)
    assert {n.velocity for n in back.tracks[0].notes} == {100}
    assert round(roll_to_score(np.zeros((1, 4, 88)), 4, tempo=90).tempos[0].qpm) == 90


def test_roll_segments_start_on_bars():
    roll = np.zeros((1, 40, 88), dtype=np.uint8)
    roll[0, 0, 10] = roll[0, 33, 20] = 90  # bars 1 and 3 (16 steps a bar), bar 2 silent
    segments = roll_segments(roll, 16)
    assert segments.shape == (2, 1, 16, 88)
    assert segments[0, 0, 0, 10] == 90 and segments[1, 0, 1, 20] == 90
    assert roll_segments(roll, 16, keep_empty=True).shape == (3, 1, 16, 88)
    assert roll_segments(roll, 32, hop=16).shape == (3, 1, 32, 88)
    assert roll_segments(roll[:, :0], 16).shape == (0, 1, 16, 88)
    with pytest.raises(ConfigError):
        roll_segments(roll, 0)


# ---- pieces: built-in chorales, splits, transposition ----------------------------------------------------
def test_bach_pieces_offline():
    pieces = list(bach_pieces(limit=2))
    assert len(pieces) == 2 and len({name for name, _ in pieces}) == 2
    for name, score in pieces:
        assert name.startswith("bach/bwv")
        assert check_piece(score, name) is None and score.note_num() > 50


def test_split_is_deterministic_and_by_piece():
    names = [f"bach/bwv{i}" for i in range(200)]
    train, val = split_pieces(names, 0.2)
    assert (train, val) == split_pieces(list(names), 0.2)
    assert sorted(train + val) == sorted(names) and not set(train) & set(val)
    assert 20 <= len(val) <= 60
    more_train, more_val = split_pieces(names + ["new/piece"], 0.2)  # a new piece moves no other
    assert set(more_train) - {"new/piece"} == set(train) and set(more_val) - {"new/piece"} == set(val)
    assert split_pieces(names, 0.2, seed=1) != (train, val)
    assert split_pieces(names, 0.0) == (names, [])
    with pytest.raises(ConfigError):
        split_pieces(names, 1.0)


@given(names=st.lists(st.text("abc/.0123456789", min_size=1, max_size=8), min_size=2, max_size=6, unique=True),
       val_fraction=st.floats(0.01, 0.99))
def test_split_leaves_no_side_empty(names, val_fraction):
    train, val = split_pieces(names, val_fraction)
    assert train and val and sorted(train + val) == sorted(names)


def test_transpositions_shift_every_pitch():
    score = make_score([(0, 4, 60, 80), (4, 4, 72, 80)])
    drums = Track(name="drums", is_drum=True)
    drums.notes.append(Note(0, 4, 36, 100))
    score.tracks.append(drums)
    shifted = transpositions(score, [0, 5, -7, 60, -61])  # +60 and -61 would leave 0..127: skipped
    assert len(shifted) == 3
    for k, moved in zip([0, 5, -7], shifted):
        assert [n.pitch for n in moved.tracks[0].notes] == [60 + k, 72 + k]
        assert [n.pitch for n in moved.tracks[1].notes] == [36]
        assert [n.time for n in moved.tracks[0].notes] == [0, 4]
    assert [n.pitch for n in score.tracks[0].notes] == [60, 72]  # the original is untouched
    assert fits_transposition(score, 55) and not fits_transposition(score, 56)


def test_score_with_unpaired_repeats_is_read_with_each_bar_once(tmp_path):
    """Writing MIDI plays repeats out, which music21 refuses for repeat marks that do not pair up (Humdrum
    chorales in its own corpus have them): such a score is read with every bar once."""
    from music21 import bar, note, stream

    part = stream.Part()
    for number, pitch in enumerate([60, 62, 64], start=1):
        measure = stream.Measure(number=number)
        measure.append(note.Note(pitch, type="whole"))
        if number > 1:
            measure.leftBarline = bar.Repeat(direction="start")  # two starts, no end
        part.append(measure)
    path = tmp_path / "repeats.musicxml"
    stream.Score([part]).write("musicxml", fp=path)
    score = load_score(path)
    assert [(n.time // score.ticks_per_quarter, n.pitch) for t in score.tracks for n in t.notes] == [
        (0, 60), (4, 62), (8, 64)]


# ---- bad input -------------------------------------------------------------------------------------------
def test_corrupt_midi_is_one_line_error(tmp_path):
    path = tmp_path / "noise.mid"
    path.write_bytes(random.Random(0).randbytes(500))
    with pytest.raises(DataError) as error:
        load_score(path)
    assert str(path) in one_line(error) and "MIDI" in str(error.value)


def test_pieces_without_usable_notes_are_named_skips(tmp_path):
    cases = {"empty.mid": Score(480),  # no tracks at all
             "silent.mid": make_score([], 480, tempo=100),  # a track and a tempo, no note
             "drums.mid": make_score([(0, 240, 36, 100), (240, 240, 38, 100)], 480, drum=True)}
    reasons = {}
    for name, score in cases.items():
        score.dump_midi(str(tmp_path / name))
        reasons[name] = check_piece(load_score(tmp_path / name), name)
    assert reasons == {"empty.mid": "has no notes", "silent.mid": "has no notes", "drums.mid": "holds only drums"}
    assert check_piece(make_score([(0, 4, 60, 80)]), "fine") is None


def test_oversized_file_is_refused_before_reading(tmp_path):
    path = tmp_path / "huge.mid"
    with open(path, "wb") as f:
        f.truncate(MAX_MUSIC_FILE_BYTES + 1)  # sparse: nothing is written
    with pytest.raises(DataError) as error:
        load_score(path)
    message = one_line(error)
    assert str(path) in message and f"{MAX_MUSIC_FILE_BYTES + 1:,} bytes" in message and "limit" in message


def test_unparseable_musicxml_is_one_line_error(tmp_path):
    broken = tmp_path / "broken.musicxml"
    broken.write_text("<?xml version='1.0'?><score-partwise><part id='P1'><measure><note><pitch>")
    with pytest.raises(DataError) as error:
        load_score(broken)
    assert str(broken) in one_line(error) and "music21" in str(error.value)
    with pytest.raises(DataError) as error:
        load_score(tmp_path / "missing.mid")
    assert "missing" in one_line(error)
    with pytest.raises(DataError) as error:
        load_score(tmp_path / "notes.txt")
    assert "extension" in one_line(error)
