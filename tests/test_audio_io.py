"""Audio files in and out: clips read from any file libsndfile decodes (mixed, resampled, cut, padded, with notes),
a folder of them with labels from its sub-folders, 16-bit WAV files written atomically, and resampling."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

soundfile = pytest.importorskip("soundfile")

from genforge.data import audio_io  # noqa: E402
from genforge.data.audio_io import (AUDIO_SUFFIXES, audio_files, load_folder, read_clip, resample,  # noqa: E402
                                    wav_bytes, write_wav)
from genforge.errors import ConfigError, DataError, StorageError  # noqa: E402

RATE = 16_000


def sine(freq, seconds, rate, amplitude=0.5):
    t = np.arange(int(round(seconds * rate))) / rate
    return amplitude * np.sin(2 * np.pi * freq * t)


def write(path, data, rate, **options):
    path.parent.mkdir(parents=True, exist_ok=True)
    soundfile.write(str(path), data, rate, **options)
    return path


def peak_hz(wave, rate):
    spectrum = np.abs(np.fft.rfft(wave * np.hanning(len(wave))))
    return np.argmax(spectrum) * rate / len(wave)


def one_line_error(error_type, call, *names):
    with pytest.raises(error_type) as error:
        call()
    message = str(error.value)
    assert "\n" not in message and all(name in message for name in names), message
    return message


# ---- read_clip ---------------------------------------------------------------------------------
def test_a_mono_clip_at_the_rate_comes_back_as_it_is(tmp_path):
    path = write(tmp_path / "a.wav", sine(440, 1.0, RATE), RATE, subtype="PCM_16")
    wave, notes = read_clip(path, RATE, RATE)
    assert wave.dtype == np.float32 and wave.shape == (RATE,) and notes == []
    assert np.array_equal(wave, soundfile.read(str(path), dtype="float32")[0])


def test_stereo_is_averaged_and_eight_channels_are_mixed_with_a_note(tmp_path):
    base = sine(440, 1.0, RATE)
    stereo = write(tmp_path / "s.wav", np.stack([base, 0.5 * base], axis=1), RATE, subtype="FLOAT")
    wave, notes = read_clip(stereo, RATE, RATE)
    assert np.allclose(wave, 0.75 * base, atol=1e-6) and notes == ["2 channels mixed to mono"]
    eight = write(tmp_path / "8.wav", np.stack([base * (k + 1) / 10 for k in range(8)], axis=1), RATE, subtype="FLOAT")
    wave, notes = read_clip(eight, RATE, RATE)
    assert np.allclose(wave, 0.45 * base, atol=1e-6) and notes == ["8 channels mixed to mono"]


@pytest.mark.parametrize("source_rate", [192_000, 44_100, 8_000])
def test_another_rate_is_resampled_and_a_1_khz_sine_stays_a_1_khz_sine(tmp_path, source_rate):
    path = write(tmp_path / "r.wav", sine(1000, 1.0, source_rate), source_rate, subtype="PCM_16")
    wave, notes = read_clip(path, RATE, RATE)
    assert wave.shape == (RATE,) and wave.dtype == np.float32
    assert notes == [f"{source_rate} Hz resampled to {RATE} Hz"]
    assert abs(peak_hz(wave, RATE) - 1000) <= RATE / len(wave)
    assert abs(np.abs(wave[1000:-1000]).max() - 0.5) < 0.01  # the level is kept too


def test_an_hour_long_file_is_cut_from_its_first_second_without_being_read_whole(tmp_path, monkeypatch):
    source_rate = 4000  # an hour of 4 kHz 16-bit mono: 29 MB on disk
    path = tmp_path / "hour.wav"
    chunk = np.round(sine(250, 60.0, source_rate) * 32767).astype(np.int16)
    with soundfile.SoundFile(str(path), "w", source_rate, 1, "PCM_16") as f:
        for _ in range(60):
            f.write(chunk)
    requested = []
    real_read = soundfile.SoundFile.read

    def recording_read(self, frames=-1, *args, **kwargs):
        requested.append(frames)
        return real_read(self, frames, *args, **kwargs)

    monkeypatch.setattr(soundfile.SoundFile, "read", recording_read)
    monkeypatch.setattr(soundfile, "read", lambda *a, **k: pytest.fail("soundfile.read decodes a whole file"))
    wave, notes = read_clip(path, RATE, RATE)
    assert notes == [f"{source_rate} Hz resampled to {RATE} Hz", "3600 s cut to 1 s"]
    assert len(requested) == 1 and 0 < requested[0] <= source_rate + 100  # a second and the filter's reach
    # the frames past the cut reach the clip's end through the filter: it is the start of the whole resampled file
    expected = resample(chunk[:2 * source_rate] / 32768, source_rate, RATE)[:RATE]
    assert wave.shape == (RATE,) and np.allclose(wave, expected, atol=1e-6)


def test_a_short_file_is_padded_with_silence_and_a_truncated_one_gives_what_it_holds(tmp_path):
    wave, notes = read_clip(write(tmp_path / "short.wav", sine(440, 0.3, RATE), RATE), RATE, RATE)
    assert notes == ["0.3 s padded to 1 s with silence"]
    assert np.abs(wave[:4800]).max() > 0.4 and not wave[4800:].any()
    full = write(tmp_path / "full.wav", sine(440, 1.0, RATE), RATE, subtype="PCM_16")
    cut = tmp_path / "truncated.wav"
    cut.write_bytes(full.read_bytes()[:44 + 2 * 8000])  # the header still promises a second
    wave, notes = read_clip(cut, RATE, RATE)
    assert notes == ["0.5 s padded to 1 s with silence"] and not wave[8000:].any() and wave[:8000].any()


def test_flac_ogg_aiff_and_mp3_are_read_too(tmp_path):
    source = sine(440, 1.0, RATE)
    for name, options, tolerance in (("a.flac", {}, 1 / 32768), ("a.aiff", {}, 1 / 32768),
                                     ("a.ogg", {"subtype": "VORBIS"}, None), ("a.mp3", {}, None)):
        path = write(tmp_path / name, source, RATE, **options)
        assert path.suffix in AUDIO_SUFFIXES
        wave, _ = read_clip(path, RATE, RATE)
        assert wave.shape == (RATE,) and abs(peak_hz(wave, RATE) - 440) <= 1, name
        if tolerance:
            assert np.abs(wave - source).max() <= tolerance, name


def test_a_float_file_beyond_full_scale_is_scaled_down_not_clipped(tmp_path):
    path = write(tmp_path / "loud.wav", sine(440, 1.0, RATE, amplitude=4.0), RATE, subtype="FLOAT")
    wave, notes = read_clip(path, RATE, RATE)
    assert notes == ["peak 4.00 scaled down to 1"]
    assert np.allclose(wave, sine(440, 1.0, RATE, amplitude=1.0), atol=1e-5)


def test_files_that_give_no_clip_are_one_line_data_errors_naming_them(tmp_path):
    corrupt = tmp_path / "corrupt.wav"
    corrupt.write_bytes(np.random.default_rng(0).bytes(5000))
    one_line_error(DataError, lambda: read_clip(corrupt, RATE, RATE), str(corrupt), "not a readable audio file")
    riff = tmp_path / "riff.wav"
    riff.write_bytes(b"RIFF\x24\x00\x00\x00WAVEfmt garbage")
    one_line_error(DataError, lambda: read_clip(riff, RATE, RATE), str(riff), "not a readable audio file")
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    one_line_error(DataError, lambda: read_clip(empty, RATE, RATE), str(empty), "empty (0 bytes)")
    no_frames = write(tmp_path / "none.wav", np.zeros(0), RATE)
    assert no_frames.stat().st_size > 0  # a header, no frames
    one_line_error(DataError, lambda: read_clip(no_frames, RATE, RATE), str(no_frames), "no audio frames")
    silent = write(tmp_path / "silent.wav", np.zeros(RATE), RATE)
    one_line_error(DataError, lambda: read_clip(silent, RATE, RATE), str(silent), "silent in its first 1 s")
    late = write(tmp_path / "late.wav", np.r_[np.zeros(RATE), sine(440, 1.0, RATE)], RATE)  # sound after the clip
    one_line_error(DataError, lambda: read_clip(late, RATE, RATE), "silent")
    nan = write(tmp_path / "nan.wav", np.full(100, np.nan), RATE, subtype="FLOAT")
    one_line_error(DataError, lambda: read_clip(nan, RATE, RATE), str(nan), "NaN")
    one_line_error(DataError, lambda: read_clip(tmp_path / "missing.wav", RATE, RATE), "does not exist")
    one_line_error(DataError, lambda: read_clip(tmp_path, RATE, RATE), "is not a file")


@pytest.mark.parametrize("sample_rate, clip_samples", [(RATE, 0), (RATE, -5), (RATE, 1.5), (RATE, True), (0, 100),
                                                       (RATE, 10 ** 12), ("16000", 100), (10 ** 7, 100)])
def test_absurd_parameters_are_one_line_config_errors(tmp_path, sample_rate, clip_samples):
    path = write(tmp_path / "a.wav", sine(440, 0.1, RATE), RATE)
    one_line_error(ConfigError, lambda: read_clip(path, sample_rate, clip_samples), "expected a whole number")


# ---- load_folder -------------------------------------------------------------------------------
def make_folder(root):
    write(root / "cat" / "a.wav", sine(440, 1.0, RATE), RATE)
    write(root / "cat" / "b.flac", sine(550, 2.0, 44_100), 44_100)  # resampled and cut
    write(root / "dog" / "c.wav", np.stack([sine(660, 0.5, RATE)] * 2, axis=1), RATE)  # mixed and padded
    write(root / "dog" / ".hidden.wav", sine(440, 1.0, RATE), RATE)
    write(root / ".git" / "d.wav", sine(440, 1.0, RATE), RATE)
    (root / "dog" / "notes.txt").write_text("not audio")
    return root


def test_a_folder_gives_labels_from_its_sub_folders_and_one_warning_counting_the_notes(tmp_path):
    root = make_folder(tmp_path / "set")
    assert [p.relative_to(root).as_posix() for p in audio_files(root)] == ["cat/a.wav", "cat/b.flac", "dog/c.wav"]
    with pytest.warns(UserWarning) as caught:
        data = load_folder(root, RATE, RATE, progress=False)
    assert data.waves.shape == (3, RATE) and data.waves.dtype == np.float32
    assert data.labels.tolist() == [0, 0, 1] and data.labels.dtype == np.int64 and data.class_names == ["cat", "dog"]
    assert data.skipped == []
    assert data.notes == ["1 clip cut to 1 s", "1 clip padded to 1 s with silence",
                          "1 clip resampled from 44100 Hz to 16000 Hz", "1 clip mixed to mono from 2 channels"]
    assert [str(w.message) for w in caught] == [f"wav:{root}: " + ", ".join(data.notes)]
    assert abs(peak_hz(data.waves[1], RATE) - 550) <= 1


def test_unreadable_and_silent_files_are_skipped_with_one_warning_naming_up_to_five(tmp_path):
    root = make_folder(tmp_path / "set")
    for k in range(6):
        (root / "cat" / f"broken{k}.wav").write_bytes(b"not audio at all")
    write(root / "dog" / "silent.wav", np.zeros(RATE), RATE)
    with pytest.warns(UserWarning) as caught:
        data = load_folder(root, RATE, RATE, progress=False)
    assert len(caught) == 2  # the skipped files, the notes
    message = str(caught[0].message)
    assert message.startswith(f"wav:{root}: skipped 7 of 10 audio file(s) that gave no clip: ")
    assert "\n" not in message and "cat/broken0.wav (not a readable audio file: " in message
    assert "; and 2 more" in message and "silent.wav" not in message  # five named, sorted
    assert len(data.skipped) == 7 and data.skipped[-1] == "dog/silent.wav (silent in its first 1 s)"
    assert data.labels.tolist() == [0, 0, 1]


def test_no_usable_audio_is_a_one_line_data_error(tmp_path):
    (tmp_path / "empty").mkdir()
    one_line_error(DataError, lambda: load_folder(tmp_path / "empty", RATE, RATE, False), "has no audio files")
    one_line_error(DataError, lambda: load_folder(tmp_path / "nowhere", RATE, RATE, False), "does not exist")
    (tmp_path / "text.txt").write_text("hello")
    one_line_error(DataError, lambda: load_folder(tmp_path / "text.txt", RATE, RATE, False), "not an audio file")
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "x.wav").write_bytes(b"junk")
    write(bad / "y.wav", np.zeros(100), RATE)
    one_line_error(DataError, lambda: load_folder(bad, RATE, RATE, False), "no usable audio", "x.wav", "y.wav")


def test_limit_takes_the_first_files_and_one_class_or_loose_files_mean_no_labels(tmp_path):
    root = make_folder(tmp_path / "set")
    with pytest.warns(UserWarning):
        data = load_folder(root, RATE, RATE, progress=True, limit=2)
    assert len(data.waves) == 2 and data.labels is None and data.class_names == []  # both in cat/: one class
    one_line_error(ConfigError, lambda: load_folder(root, RATE, RATE, False, limit=0), "limit")
    write(root / "loose.wav", sine(440, 1.0, RATE), RATE)
    with pytest.warns(UserWarning) as caught:
        data = load_folder(root, RATE, RATE, progress=False)
    assert any("1 audio file(s) sit directly in the folder beside class sub-folders, so the set has no labels"
               in str(w.message) for w in caught)
    assert len(data.waves) == 4 and data.labels is None
    single = write(tmp_path / "one.wav", sine(440, 1.0, RATE), RATE)
    assert audio_files(single) == [single]
    data = load_folder(single, RATE, RATE, progress=False)
    assert data.waves.shape == (1, RATE) and data.labels is None and data.notes == []


# ---- writing -----------------------------------------------------------------------------------
def test_write_wav_is_16_bit_mono_at_the_rate_and_round_trips_within_one_step(tmp_path):
    wave = np.random.default_rng(0).uniform(-1, 1, 12_345).astype(np.float32)
    wave[:4] = [1.0, -1.0, 0.0, 0.5]
    path = tmp_path / "out" / "a.wav"
    write_wav(path, wave, 22_050)
    info = soundfile.info(str(path))
    assert (info.samplerate, info.frames, info.channels, info.subtype, info.format) == (22_050, 12_345, 1, "PCM_16",
                                                                                         "WAV")
    back, rate = soundfile.read(str(path), dtype="float32")
    assert rate == 22_050 and np.abs(back - wave).max() <= 1 / 32768
    assert back[1] == -1.0 and back[2] == 0.0 and back[3] == 0.5
    assert path.read_bytes() == wav_bytes(wave, 22_050)
    assert [p.name for p in path.parent.iterdir()] == ["a.wav"]  # no temporary file left


def test_a_16_bit_file_read_and_written_again_is_the_same_and_loud_samples_are_clipped(tmp_path):
    pcm = np.random.default_rng(1).integers(-32768, 32768, RATE).astype(np.int16)
    source = write(tmp_path / "in.wav", pcm, RATE, subtype="PCM_16")
    wave, _ = read_clip(source, RATE, RATE)
    write_wav(tmp_path / "again.wav", wave, RATE)
    assert np.array_equal(soundfile.read(str(tmp_path / "again.wav"), dtype="int16")[0], pcm)
    write_wav(tmp_path / "loud.wav", np.array([3.0, -3.0, 1.0, -1.0]), RATE)
    assert soundfile.read(str(tmp_path / "loud.wav"), dtype="int16")[0].tolist() == [32767, -32768, 32767, -32768]


def test_a_failed_write_leaves_no_partial_file_and_the_old_file_untouched(tmp_path):
    (tmp_path / "taken.wav").mkdir()  # a directory in the way
    one_line_error(StorageError, lambda: write_wav(tmp_path / "taken.wav", np.zeros(100), RATE), "taken.wav")
    assert (tmp_path / "taken.wav").is_dir() and list((tmp_path / "taken.wav").iterdir()) == []
    write_wav(tmp_path / "old.wav", np.full(10, 0.5), RATE)
    before = (tmp_path / "old.wav").read_bytes()
    one_line_error(DataError, lambda: write_wav(tmp_path / "old.wav", np.array([0.1, np.nan]), RATE), "NaN")
    one_line_error(DataError, lambda: write_wav(tmp_path / "old.wav", np.zeros((2, 10)), RATE), "one channel")
    one_line_error(ConfigError, lambda: write_wav(tmp_path / "old.wav", np.zeros(10), 0), "sample_rate")
    assert (tmp_path / "old.wav").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["old.wav", "taken.wav"]


# ---- resample ----------------------------------------------------------------------------------
COMMON_RATES = [8000, 11_025, 16_000, 22_050, 24_000, 32_000, 44_100, 48_000, 96_000, 192_000]
rates = st.one_of(st.sampled_from(COMMON_RATES), st.integers(1, 48).map(lambda k: 1000 * k))


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 3000), from_rate=rates, to_rate=rates, level=st.floats(-1, 1))
def test_resample_gives_ceil_n_times_the_ratio_samples_and_a_constant_stays_that_constant(n, from_rate, to_rate, level):
    out = resample(np.full(n, level, np.float32), from_rate, to_rate)
    assert out.dtype == np.float32 and out.shape == (math.ceil(n * to_rate / from_rate),)
    assert np.abs(out - level).max() <= 2e-3 * abs(level) + 1e-7  # resample_poly's passband ripple, ~0.1 %


def test_resample_works_along_the_last_axis_and_rejects_bad_rates():
    waves = np.stack([sine(300, 0.5, 48_000), sine(500, 0.5, 48_000)])
    out = resample(waves, 48_000, RATE)
    assert out.shape == (2, 8000) and np.allclose(out[1], resample(waves[1], 48_000, RATE))
    assert abs(peak_hz(out[0], RATE) - 300) <= 2
    assert np.array_equal(resample(waves, RATE, RATE), waves.astype(np.float32))
    one_line_error(ConfigError, lambda: resample(waves, 0, RATE), "from_rate")
    assert audio_io.SAMPLE_RATES[0] <= 8000
