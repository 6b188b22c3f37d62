"""The built-in spoken-digit set: espeak-ng's English voices saying "zero" to "nine", balanced, distinct settings,
bit-identical from one call to the next, each word whole in a 1 s clip; a one-line error without espeak-ng."""

import re
import shutil
import subprocess
import warnings
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("soundfile")

from genforge.data import spoken_digits  # noqa: E402
from genforge.data.spoken_digits import (CLASS_NAMES, DEFAULT_CLIPS, MAX_CLIPS, MAX_LEAD, PEAK, PITCHES,  # noqa: E402
                                         SPEEDS, TRIM_MARGIN, VARIANTS, VOICES, espeak_version, generate,
                                         settings, speak)
from genforge.errors import ConfigError, DataError  # noqa: E402

RATE = 16_000
needs_espeak = pytest.mark.skipif(shutil.which("espeak-ng") is None,
                                  reason="espeak-ng is not installed (bash tests/ensure_espeak.sh installs it)")


def test_settings_interleave_the_digits_are_balanced_distinct_and_stable():
    plan = settings(DEFAULT_CLIPS)
    assert len(plan) == DEFAULT_CLIPS == 3000 and CLASS_NAMES[0] == "zero" and CLASS_NAMES[9] == "nine"
    assert [digit for digit, *_ in plan] == [i % 10 for i in range(DEFAULT_CLIPS)]
    assert len(set(plan)) == DEFAULT_CLIPS  # all distinct
    for n in (10, 50, 1230):
        assert set(Counter(digit for digit, *_ in plan[:n]).values()) == {n // 10}
    assert settings(50) == plan[:50] and settings(50) == settings(50)  # the first N clips of any larger set
    voices = {f"{v}+{x}" if x else v for v in VOICES for x in VARIANTS}
    assert all(voice in voices and speed in SPEEDS and pitch in PITCHES for _, voice, speed, pitch in plan)
    # spread: every voice, most variants, every speed and pitch among the first 300 clips
    first = plan[:300]
    assert {voice.split("+")[0] for _, voice, _, _ in first} == set(VOICES)
    assert len({voice for _, voice, _, _ in first}) > 80
    assert {speed for *_, speed, _ in first} == set(SPEEDS) and {pitch for *_, pitch in first} == set(PITCHES)
    for bad in (0, -1, MAX_CLIPS + 1, 2.5, True):
        with pytest.raises(ConfigError, match="count"):
            settings(bad)


@needs_espeak
def test_the_voices_and_variants_are_espeak_ngs_own():
    listing = subprocess.run(["espeak-ng", "--voices=en"], capture_output=True, text=True, check=True).stdout
    own = {fields[1] for fields in (line.split() for line in listing.splitlines()[1:]) if fields[4].startswith("gmw/")}
    assert set(VOICES) <= own, set(VOICES) - own  # formant voices, none of the MBROLA ones
    version = subprocess.run(["espeak-ng", "--version"], capture_output=True, text=True, check=True).stdout
    data = Path(re.search(r"Data at: (\S+)", version).group(1))
    missing = [v for v in VARIANTS if v and not (data / "voices" / "!v" / v).is_file()]
    assert not missing  # espeak-ng would fall back to the plain voice without a word
    assert re.fullmatch(r"\d+\.\d+(\.\d+)?\S*", espeak_version())


@needs_espeak
def test_generate_is_bit_identical_balanced_normalised_and_every_word_fits():
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no word cut, no other warning
        first = generate(50, RATE, RATE, progress=False)
        again = generate(50, RATE, RATE, progress=False)
    assert first.waves.dtype == np.float32 and first.waves.shape == (50, RATE)
    assert first.waves.tobytes() == again.waves.tobytes()
    assert first.labels.dtype == np.int64 and first.labels.tolist() == [i % 10 for i in range(50)]
    assert first.class_names == list(CLASS_NAMES) and first.skipped == [] and first.notes == []
    assert np.allclose(np.abs(first.waves).max(axis=1), PEAK, atol=1e-6)  # peak-normalised, none silent
    for wave in first.waves:
        sound = np.flatnonzero(wave)
        assert sound[0] <= (MAX_LEAD + TRIM_MARGIN) * RATE  # a short lead of silence
        assert sound[-1] - sound[0] > 0.15 * RATE and wave[-100:].max() == 0  # a word, whole, silence after it
    assert np.array_equal(generate(10, RATE, RATE, progress=True).waves, first.waves[:10])  # the set's start


@needs_espeak
def test_the_longest_words_at_the_slowest_speed_fit_a_second():
    slowest = min(SPEEDS)
    # the longest words ("nine", "zero", "seven") in the slowest variant ("f4") and the plain voices
    plan = [(digit, f"{voice}+{variant}" if variant else voice, slowest, pitch)
            for voice in VOICES for variant in ("", "f4") for digit in (0, 7, 9) for pitch in (min(PITCHES), max(PITCHES))]
    with ThreadPoolExecutor(4) as pool:
        longest = max(pool.map(lambda setting: len(speak(setting, RATE)), plan)) / RATE
    assert 0.5 < longest <= 1.0 - MAX_LEAD


@needs_espeak
def test_a_clip_shorter_than_the_words_cuts_them_with_a_warning():
    with pytest.warns(UserWarning, match=r"spoken digits: \d+ of 10 words were longer than the 0.3 s clip"):
        data = generate(10, 8000, 2400, progress=False)
    assert data.waves.shape == (10, 2400) and re.fullmatch(r"\d+ clips? cut to 0.3 s", data.notes[0])
    assert np.abs(data.waves).max() <= PEAK + 1e-6


def test_without_espeak_ng_a_one_line_error_says_what_to_install(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # nothing on PATH
    with pytest.raises(DataError) as error:
        generate(10, RATE, RATE, progress=False)
    assert str(error.value) == ("the built-in spoken-digits set is made by espeak-ng, which is not installed; "
                                "install it (apt-get install espeak-ng) or use wav:PATH")


def test_a_failing_espeak_ng_is_a_one_line_error(tmp_path, monkeypatch):
    fake = tmp_path / "espeak-ng"
    fake.write_text("#!/bin/sh\necho 'no voice data\nbroken' >&2\nexit 3\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(DataError) as error:
        generate(200, RATE, RATE, progress=False)
    message = str(error.value)
    assert "\n" not in message and message.startswith("espeak-ng (saying 'zero' with voice ")
    assert message.endswith("failed (exit 3: broken)")
    with pytest.raises(ConfigError, match="sample_rate"):
        generate(10, 0, RATE, progress=False)
    assert spoken_digits.MISSING.startswith("the built-in")
