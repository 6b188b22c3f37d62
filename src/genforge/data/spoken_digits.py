"""The built-in spoken-digit set: "zero" to "nine" spoken by espeak-ng, offline and deterministic (an SC09 one can
make anywhere Debian's ``espeak-ng`` package is installed).

Each clip is one word said by one of espeak-ng's English voices (``VOICES``, its own formant voices, not the
MBROLA ones, which need extra data), with one of its voice variants (``VARIANTS``), at one of ``SPEEDS`` (words
per minute) and ``PITCHES`` (0-99): 8 x 16 x 13 x 11 = 18,304 distinct settings per digit. Clip ``i`` says digit
``i % 10`` (the first N clips are balanced), with its setting drawn from a fixed-seed permutation of the
settings for that digit (all distinct, and the first N clips of any larger set are the N-clip set).

Each word is trimmed of the silence espeak-ng puts around it (below -40 dB of its peak, keeping 10 ms either
side), resampled to the clip's rate, peak-normalised to 0.9 and placed in a silent clip after a lead of 0 to
0.1 s (fixed-seed). Peak, not RMS, normalisation: espeak-ng's level differs by some 15 dB between variants, and
a peak of 0.9 evens that out without ever clipping a word (RMS normalisation would clip the peaky ones, or need
a limiter) and leaves headroom for a model's overshoot. The slowest speed keeps every word under 0.9 s, so words
fit whole in clips of 1 s; in a shorter clip a longer word is cut at the clip's end, and a warning says how many.

The same arguments give the same clips, bit for bit, with the same espeak-ng; another release of espeak-ng may
pronounce a little differently (``espeak_version`` belongs in a cache key). espeak-ng runs once per word (a
process each, about 10 ms of CPU), in a pool of threads: 3,000 clips take about 20 s on two idle cores.
"""

from __future__ import annotations

import io
import itertools
import math
import os
import shutil
import subprocess
import warnings
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from tqdm.auto import tqdm

from genforge.data.audio_io import AudioData, check_clip, resample
from genforge.errors import ConfigError, DataError

CLASS_NAMES = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
DEFAULT_CLIPS = 3000  # 300 per digit
VOICES = ("en-us", "en-gb", "en-gb-scotland", "en-gb-x-rp", "en-gb-x-gbclan", "en-gb-x-gbcwmd", "en-029",
          "en-us-nyc")
VARIANTS = ("", "m1", "m2", "m3", "m4", "m5", "m6", "m7", "f1", "f2", "f3", "f4", "f5", "croak", "klatt", "klatt2")
SPEEDS = tuple(range(140, 201, 5))  # words per minute (espeak-ng's default is 175); at 140 every word is under 0.9 s
PITCHES = tuple(range(25, 76, 5))  # espeak-ng's 0-99 scale (its default is 50)
AMPLITUDE = 50  # espeak-ng's -a (0-200, default 100): at 100 some variants clip their own 16-bit output
MAX_CLIPS = len(CLASS_NAMES) * len(VOICES) * len(VARIANTS) * len(SPEEDS) * len(PITCHES)  # every setting once
SEED = 9  # fixed: the set is the same everywhere
PEAK = 0.9
TRIM_DB = -40.0  # what is quieter than this relative to the word's peak, before and after it, is silence
TRIM_MARGIN = 0.01  # seconds kept either side of the sound
MAX_LEAD = 0.1  # seconds of silence before a word at most
TIMEOUT = 60  # seconds for one espeak-ng call
MISSING = ("the built-in spoken-digits set is made by espeak-ng, which is not installed; install it "
           "(apt-get install espeak-ng) or use wav:PATH")


def settings(count: int = DEFAULT_CLIPS) -> list[tuple[int, str, int, int]]:
    """(digit, voice, speed, pitch) of each of ``count`` clips: clip ``i`` says digit ``i % 10``; its voice
    ("en-gb-x-rp+f3": a voice and a variant, as espeak-ng's -v takes them), speed and pitch are the next of a
    fixed-seed permutation of that digit's settings. All distinct; ``settings(n)`` is the start of
    ``settings(m)`` for any m > n."""
    _check_count(count)
    combos = list(itertools.product(VOICES, VARIANTS, SPEEDS, PITCHES))
    per_digit = math.ceil(count / len(CLASS_NAMES))
    orders = [np.random.default_rng([SEED, digit]).permutation(len(combos))[:per_digit]
              for digit in range(len(CLASS_NAMES))]
    out = []
    for i in range(count):
        digit = i % len(CLASS_NAMES)
        voice, variant, speed, pitch = combos[orders[digit][i // len(CLASS_NAMES)]]
        out.append((digit, f"{voice}+{variant}" if variant else voice, speed, pitch))
    return out


def leads(count: int) -> np.ndarray:
    """Each clip's lead as a fraction of ``MAX_LEAD`` (fixed-seed; the first n of ``leads(m)`` are ``leads(n)``)."""
    return np.random.default_rng([SEED, len(CLASS_NAMES)]).random(count)


def espeak() -> str:
    """The espeak-ng program's path; a one-line ``DataError`` saying what to install when it is missing."""
    program = shutil.which("espeak-ng")
    if program is None:
        raise DataError(MISSING)
    return program


def espeak_version(program: str | None = None) -> str:
    """espeak-ng's version ("1.51"), from ``espeak-ng --version``; "unknown" when it does not say."""
    try:
        done = subprocess.run([program or espeak(), "--version"], capture_output=True, text=True,
                              stdin=subprocess.DEVNULL, timeout=TIMEOUT)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    words = done.stdout.split()
    return words[words.index("text-to-speech:") + 1] if "text-to-speech:" in words[:-1] else "unknown"


def speak(setting: tuple[int, str, int, int], sample_rate: int, program: str | None = None) -> np.ndarray:
    """One word as float32 at ``sample_rate``: espeak-ng's audio trimmed of the silence around it, resampled and
    peak-normalised to ``PEAK``."""
    import soundfile

    digit, voice, speed, pitch = setting
    word = CLASS_NAMES[digit]
    command = [program or espeak(), "-v", voice, "-s", str(speed), "-p", str(pitch), "-a", str(AMPLITUDE),
               "--stdout", word]
    what = f"espeak-ng (saying {word!r} with voice {voice}, speed {speed}, pitch {pitch})"
    try:
        done = subprocess.run(command, capture_output=True, stdin=subprocess.DEVNULL, timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        raise DataError(f"{what} took longer than {TIMEOUT} s") from None
    except OSError as e:
        raise DataError(f"{what} could not run: {e.strerror or e}") from None
    if done.returncode != 0 or not done.stdout:
        reason = done.stderr.decode(errors="replace").strip().splitlines()
        raise DataError(f"{what} failed (exit {done.returncode}{': ' + reason[-1] if reason else ''})")
    try:
        audio, rate = soundfile.read(io.BytesIO(done.stdout), dtype="float32", always_2d=True)
    except Exception as e:  # libsndfile's error for output that is not a WAV
        raise DataError(f"{what} wrote audio that does not decode ({(str(e).splitlines() or [''])[0]})") from None
    audio = audio.mean(axis=1)
    loud = np.flatnonzero(np.abs(audio) > np.abs(audio).max(initial=0.0) * 10 ** (TRIM_DB / 20))
    if not len(loud) or not np.abs(audio).max() > 0:
        raise DataError(f"{what} wrote silence")
    margin = int(TRIM_MARGIN * rate)
    audio = audio[max(0, loud[0] - margin):loud[-1] + 1 + margin]
    audio = resample(audio, rate, sample_rate)
    return (audio * np.float32(PEAK / np.abs(audio).max())).astype(np.float32)


def generate(count: int = DEFAULT_CLIPS, sample_rate: int = 16_000, clip_samples: int = 16_000,
             progress: bool = True) -> AudioData:
    """``count`` clips of spoken digits (``settings``), float32 (count, clip_samples) at ``sample_rate``, labels
    ``i % 10`` into ``CLASS_NAMES``. The same arguments give the same clips, bit for bit. espeak-ng runs in a
    pool of threads (one process per word). A word longer than the clip is cut at the clip's end (a warning
    counts them, and ``notes`` says so); without espeak-ng a one-line ``DataError`` says what to install."""
    check_clip(sample_rate, clip_samples)
    plan = settings(count)
    program = espeak()
    fractions = leads(count)
    max_lead = int(MAX_LEAD * sample_rate)
    waves = np.zeros((count, clip_samples), np.float32)
    cut, longest = 0, 0
    workers = min(32, 2 * _cores())
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="espeak-ng")
    try:
        words = pool.map(lambda setting: speak(setting, sample_rate, program), plan)
        for i, word in enumerate(tqdm(words, total=count, desc="speaking digits", unit="clip", disable=not progress,
                                      leave=False)):
            longest = max(longest, len(word))
            room = clip_samples - len(word)
            if room < 0:
                cut += 1
                waves[i] = word[:clip_samples]
            else:
                lead = min(int(fractions[i] * max_lead), room)
                waves[i, lead:lead + len(word)] = word
    finally:  # on an error (or Ctrl-C) the words not yet started are dropped, not waited for
        pool.shutdown(wait=True, cancel_futures=True)
    labels = np.arange(count, dtype=np.int64) % len(CLASS_NAMES)
    notes = []
    if cut:
        clip = f"{round(clip_samples / sample_rate, 3):g}"
        notes.append(f"{cut} clip{'s' if cut != 1 else ''} cut to {clip} s")
        warnings.warn(f"spoken digits: {cut} of {count} words were longer than the {clip} s clip and were cut at its "
                      f"end; a clip of {math.ceil(longest / sample_rate * 10) / 10:g} s or more keeps every word whole",
                      stacklevel=2)
    return AudioData(waves, labels, list(CLASS_NAMES), [], notes)


def _check_count(count: int) -> None:
    if isinstance(count, bool) or not isinstance(count, (int, np.integer)) or not 1 <= count <= MAX_CLIPS:
        raise ConfigError(f"count {count!r} is invalid; expected a whole number of clips from 1 to {MAX_CLIPS:,} "
                          "(every voice, variant, speed and pitch once per digit)")


def _cores() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)
