"""Music one can hear and see: WAV rendering (FluidSynth and the additive synthesiser) and piano-roll PNGs."""

import shutil

import numpy as np
import pytest

symusic = pytest.importorskip("symusic")
soundfile = pytest.importorskip("soundfile")
from PIL import Image  # noqa: E402

from genforge.data.music_render import (BACKGROUND, BAR_LINE, PALETTE, RELEASE_TAIL, additive_synth,  # noqa: E402
                                        find_soundfont, render_wav, roll_png, wav_samples)
from genforge.errors import ConfigError, DataError  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")

TPQ = 480
RATE = 22050


def make_score(notes, tempos=((0, 120),), drums=()):
    """A score of one piano track (``notes``: (start tick, duration ticks, pitch, velocity)) and, when given, a
    drum track; tempos as (tick, quarter notes per minute)."""
    score = symusic.Score(TPQ)
    for tick, qpm in tempos:
        score.tempos.append(symusic.Tempo(tick, qpm))
    for name, events, is_drum in (("piano", notes, False), ("drums", drums, True)):
        if events:
            track = symusic.Track(name, program=0, is_drum=is_drum)
            for start, duration, pitch, velocity in events:
                track.notes.append(symusic.Note(start, duration, pitch, velocity))
            score.tracks.append(track)
    return score


def a4(seconds=1.0):
    """A4 (440 Hz) for ``seconds`` at 120 bpm."""
    return make_score([(0, int(seconds * 2 * TPQ), 69, 100)])


def rms(audio):
    return float(np.sqrt(np.mean(np.square(audio, dtype=np.float64))))


# ---- the additive synthesiser ------------------------------------------------------------------
def test_additive_wav_has_the_tempo_maps_length_the_rate_and_a_sound_that_does_not_clip(tmp_path):
    # one quarter at 120 bpm (0.5 s), then three at 60 bpm (3 s): the note ends at 3.5 s, the WAV 0.5 s later
    score = make_score([(0, 4 * TPQ, 57, 90)], tempos=((0, 120), (TPQ, 60)))
    path = tmp_path / "a.wav"
    assert render_wav(score, path, sample_rate=RATE, engine="additive") == "additive"
    audio, rate = soundfile.read(str(path), dtype="int16")
    info = soundfile.info(str(path))
    assert rate == RATE and info.subtype == "PCM_16" and info.channels == 1
    assert len(audio) == round((3.5 + RELEASE_TAIL) * RATE) == wav_samples(score, RATE)
    peak = int(np.abs(audio.astype(np.int32)).max())
    assert abs(peak - round(10 ** (-1 / 20) * 32767)) <= 1  # peak-normalised to -1 dBFS: loud, never clipped
    assert rms(audio / 32768) > 0.05
    assert [p.name for p in tmp_path.iterdir()] == ["a.wav"]  # the atomic write left no temporary file


def test_additive_a4_peaks_at_440_hz():
    audio = additive_synth(a4(), RATE)
    assert audio.dtype == np.float32 and np.abs(audio).max() <= 1.0
    held = audio[int(0.1 * RATE):int(0.9 * RATE)]  # past the attack and decay, before the release
    spectrum = np.abs(np.fft.rfft(held * np.hanning(len(held))))
    bin_hz = RATE / len(held)
    assert abs(np.argmax(spectrum) * bin_hz - 440.0) <= bin_hz


def test_additive_drums_are_short_noise_bursts_and_an_empty_score_is_silence_of_the_tail():
    drums = additive_synth(make_score([], drums=[(0, TPQ // 4, 36, 120)]), RATE)
    assert rms(drums[:int(0.05 * RATE)]) > 0.05 and np.abs(drums[int(0.2 * RATE):]).max() == 0.0
    assert np.array_equal(drums, additive_synth(make_score([], drums=[(0, TPQ // 4, 36, 120)]), RATE))
    empty = additive_synth(symusic.Score(TPQ), RATE)
    assert len(empty) == round(RELEASE_TAIL * RATE) and not empty.any()


# ---- FluidSynth ---------------------------------------------------------------------------------
def test_fluidsynth_renders_the_score_length_and_a_sound(tmp_path):
    if shutil.which("fluidsynth") is None or find_soundfont() is None:
        pytest.skip("FluidSynth or its SoundFont is not installed (bash tests/ensure_fluidsynth.sh installs them)")
    path = tmp_path / "f.wav"
    assert render_wav(a4(), path, sample_rate=RATE, engine="fluidsynth") == "fluidsynth"
    audio, rate = soundfile.read(str(path), dtype="float32", always_2d=True)
    assert rate == RATE and soundfile.info(str(path)).subtype == "PCM_16"
    assert len(audio) == round((1.0 + RELEASE_TAIL) * RATE)  # FluidSynth's reverb cut to the same tail
    assert rms(audio) > 0.01 and np.abs(audio).max() < 1.0
    assert render_wav(a4(), tmp_path / "auto.wav", sample_rate=RATE) == "fluidsynth"  # auto prefers it


def test_fluidsynth_missing_is_a_one_line_error_and_auto_falls_back(tmp_path, monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda *args, **kwargs: None)
    with pytest.raises(ConfigError, match="apt-get install fluidsynth fluid-soundfont-gm") as error:
        render_wav(a4(), tmp_path / "f.wav", engine="fluidsynth")
    assert "\n" not in str(error.value) and not (tmp_path / "f.wav").exists()
    assert render_wav(a4(0.25), tmp_path / "auto.wav", sample_rate=RATE) == "additive"
    assert soundfile.info(str(tmp_path / "auto.wav")).frames == round((0.25 + RELEASE_TAIL) * RATE)


def test_bad_settings_are_one_line_errors(tmp_path):
    with pytest.raises(ConfigError, match="unknown engine"):
        render_wav(a4(), tmp_path / "x.wav", engine="timidity")
    with pytest.raises(ConfigError, match="sample_rate"):
        render_wav(a4(), tmp_path / "x.wav", sample_rate=100)
    with pytest.raises(ConfigError, match="SoundFont"):
        render_wav(a4(), tmp_path / "x.wav", soundfont=tmp_path / "missing.sf2")
    endless = make_score([(0, 480, 69, 100), (480 * 2 * 3601, 480, 69, 100)])  # a note after an hour at 120 BPM
    with pytest.raises(DataError, match="up to 3,600 s"):
        render_wav(endless, tmp_path / "x.wav")
    assert not (tmp_path / "x.wav").exists()


# ---- piano roll ---------------------------------------------------------------------------------
def test_roll_png_paints_the_notes_where_they_are(tmp_path):
    # piano track: C4 from 1.0 to 1.5 s, loud; drum track: C5 from 0.5 to 1.0 s, quiet (120 bpm, 4/4: bars every 2 s)
    score = make_score([(2 * TPQ, TPQ, 60, 127)], drums=[(TPQ, TPQ, 72, 20)])
    path = tmp_path / "roll.png"
    layout = roll_png(score, path, pixels_per_second=40, pixels_per_pitch=4, text={"seed": "7"})
    image = Image.open(path)
    assert image.format == "PNG" and image.text["seed"] == "7"
    pixels = np.asarray(image.convert("RGB"))
    # pitches 58..74 (the notes' 60..72 and a margin of 2), high on top, 4 rows each; 40 columns a second
    assert (layout.lowest_pitch, layout.highest_pitch) == (58, 74)
    assert pixels.shape == (17 * 4, 60, 3) == (layout.height, layout.width, 3)
    expected = np.zeros(pixels.shape[:2], bool)
    expected[(74 - 60) * 4:(75 - 60) * 4, 40:60] = True
    expected[(74 - 72) * 4:(75 - 72) * 4, 20:40] = True
    background = (pixels == BACKGROUND).all(axis=-1)
    bar = (pixels == BAR_LINE).all(axis=-1)
    assert np.array_equal(~(background | bar), expected)
    assert bar[:, 0].all() and np.array_equal(np.flatnonzero(bar.any(axis=0)), [0])  # 1.5 s: one downbeat
    loud, quiet = pixels[layout.row(60), layout.column(1.25)], pixels[layout.row(72), layout.column(0.75)]
    assert tuple(loud) == PALETTE[0]  # full velocity: the track's own colour
    assert loud.sum() > quiet.sum() > sum(BACKGROUND)  # velocity is brightness; quiet is dim, not invisible


def test_roll_png_of_an_empty_score_is_a_blank_image(tmp_path):
    path = tmp_path / "empty.png"
    layout = roll_png(symusic.Score(TPQ), path)
    with Image.open(path) as image:
        image.verify()
    pixels = np.asarray(Image.open(path).convert("RGB"))
    assert pixels.shape == (layout.height, layout.width, 3) and (pixels == BACKGROUND).all()


def test_roll_png_of_an_array_with_bar_lines(tmp_path):
    roll = np.zeros((128, 32), np.uint8)
    roll[64, 4:8] = 100  # E4, steps 4..7
    layout = roll_png(roll, tmp_path / "a.png", pixels_per_step=2, pixels_per_pitch=3, steps_per_bar=16)
    pixels = np.asarray(Image.open(tmp_path / "a.png").convert("RGB"))
    assert (layout.lowest_pitch, layout.highest_pitch) == (62, 66) and pixels.shape == (15, 64, 3)
    notes = ~((pixels == BACKGROUND) | (pixels == BAR_LINE)).all(axis=-1)
    assert np.array_equal(np.argwhere(notes.any(axis=1)).ravel(), [6, 7, 8])  # E4's three rows, 2 from the top
    assert np.array_equal(np.argwhere(notes.any(axis=0)).ravel(), np.arange(8, 16))
    assert (pixels[:, [0, 32]] == BAR_LINE).all()
