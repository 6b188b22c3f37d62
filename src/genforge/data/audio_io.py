"""Audio files in and out: fixed-length mono clips read from any file libsndfile decodes, a folder of them with
labels from its sub-folders, and 16-bit PCM WAV files written atomically.

A clip is float32 mono, ``clip_samples`` long at ``sample_rate``, in [-1, 1]. Reading one takes only the first
clip's worth of the file (a one-hour recording is not decoded whole), mixes its channels down by averaging,
resamples it (``scipy.signal.resample_poly``, exact ratio) and cuts or pads it at the end with silence. Each of
those steps leaves a short note ("2 channels mixed to mono", "44100 Hz resampled to 16000 Hz", "3600 s cut to
1 s", "0.3 s padded to 1 s with silence"), which a folder sums into one warning. A file that cannot give a clip
(corrupt, empty, no frames, silent) is a one-line ``DataError`` naming it; a folder skips such files and names
up to five of them in one warning.

Samples are written as ``round(x * 32768)`` clipped to [-32768, 32767] and read back as ``k / 32768`` (what
libsndfile reads), so a 16-bit file read and written again is the same file, sample for sample.
"""

from __future__ import annotations

import functools
import io
import math
import os
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from genforge.errors import ConfigError, DataError
from genforge.io import atomic_write_bytes

# what libsndfile reads (soundfile >= 0.12 ships libsndfile >= 1.1, which decodes MP3 too); a tuple, so that
# messages listing them read the same every time
AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3", ".aiff", ".aif", ".aifc", ".au", ".snd", ".caf", ".w64", ".rf64",
                  ".wave", ".oga", ".opus")
FORMATS_HINT = "WAV, FLAC, OGG, MP3, AIFF or another format libsndfile reads"
SAMPLE_RATES = (1000, 384_000)  # the sample rates a clip may be asked for, in Hz
MAX_SOURCE_RATE = 768_000  # the highest sample rate a file may have (the highest in use is 768 kHz)
MAX_CLIP_SECONDS = 600.0  # ten minutes: a longer clip is a slip of the pen (and gigabytes for a few hundred clips)
SILENCE = 1e-4  # a clip whose loudest sample is below this (-80 dBFS, ~3 steps of 16-bit) holds no sound
SILENCE_DB = -80
OVER_FULL_SCALE = 1.01  # a float file louder than this is scaled down to 1 (with a note), not clipped
SHOWN_SKIPPED = 5  # files named in the skipped-files warning


@dataclass
class AudioData:
    waves: np.ndarray  # float32 (N, clip_samples) in [-1, 1]
    labels: np.ndarray | None  # int64 (N,), or None when the source has no labels
    class_names: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # "file (reason)" for each file that gave no clip
    notes: list[str] = field(default_factory=list)  # what was done to the clips, counted: "12 clips cut to 1 s"


class _Unusable(Exception):
    """A file gives no clip. ``sentence`` follows the file's name in read_clip's error ("is empty (0 bytes);
    expected ..."); ``short`` says why in a folder's list of skipped files ("empty (0 bytes)")."""

    def __init__(self, sentence: str, short: str):
        super().__init__(sentence)
        self.short = short


# ---- parameters --------------------------------------------------------------------------------
def check_clip(sample_rate: int, clip_samples: int) -> None:
    """A one-line ``ConfigError`` unless ``sample_rate`` is a whole number of Hz in ``SAMPLE_RATES`` and
    ``clip_samples`` a whole number from 1 to ``MAX_CLIP_SECONDS`` worth of samples."""
    check_rate(sample_rate)
    longest = int(MAX_CLIP_SECONDS * sample_rate)
    if not _is_int(clip_samples) or not 1 <= clip_samples <= longest:
        raise ConfigError(f"clip_samples {clip_samples!r} is invalid; expected a whole number of samples from 1 to "
                          f"{longest:,} ({MAX_CLIP_SECONDS:g} s at {sample_rate} Hz)")


def check_rate(sample_rate: int, what: str = "sample_rate") -> None:
    low, high = SAMPLE_RATES
    if not _is_int(sample_rate) or not low <= sample_rate <= high:
        raise ConfigError(f"{what} {sample_rate!r} is invalid; expected a whole number of Hz from {low} to {high}")


def _is_int(value) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


# ---- resampling --------------------------------------------------------------------------------
def resample(wave: np.ndarray, from_rate: int, to_rate: int) -> np.ndarray:
    """``wave`` (samples on the last axis) from ``from_rate`` to ``to_rate`` Hz as float32, by
    ``scipy.signal.resample_poly`` with the exact ratio ``to_rate / from_rate`` reduced by their gcd. The result
    has ``ceil(n * to_rate / from_rate)`` samples for ``n`` in; the signal is extended by its edge values, so a
    constant stays that constant (to the filter's passband ripple, about 0.1 %) and the ends do not droop."""
    for rate, what in ((from_rate, "from_rate"), (to_rate, "to_rate")):
        if not _is_int(rate) or rate < 1:
            raise ConfigError(f"{what} {rate!r} is invalid; expected a whole number of Hz above 0")
    wave = np.asarray(wave)
    if from_rate == to_rate or wave.shape[-1] == 0:
        return wave.astype(np.float32)  # a copy, as the resampled case gives
    from scipy.signal import resample_poly

    g = math.gcd(int(from_rate), int(to_rate))
    up, down = int(to_rate) // g, int(from_rate) // g
    out = resample_poly(wave.astype(np.float64), up, down, axis=-1, window=_lowpass(up, down).copy(), padtype="edge")
    return out.astype(np.float32)


@functools.lru_cache(maxsize=4)
def _lowpass(up: int, down: int) -> np.ndarray:
    """resample_poly's own anti-aliasing filter (a Kaiser-windowed sinc, 10 zero crossings either side), designed
    once per ratio: designing it took as long as the resampling for a clip. resample_poly scales the array it is
    given in place, so callers pass a copy."""
    from scipy.signal import firwin

    rate = max(up, down)
    return firwin(2 * 10 * rate + 1, 1.0 / rate, window=("kaiser", 5.0))


def _context(from_rate: int, to_rate: int) -> int:
    """Source frames past a cut that still reach the clip's last samples through resample_poly's filter (its
    half-length is 10 * max(up, down) taps at the upsampled rate)."""
    if from_rate == to_rate:
        return 0
    g = math.gcd(from_rate, to_rate)
    up, down = to_rate // g, from_rate // g
    return math.ceil(10 * max(up, down) / up) + 1


# ---- one file ----------------------------------------------------------------------------------
def read_clip(path: str | os.PathLike, sample_rate: int, clip_samples: int) -> tuple[np.ndarray, list[str]]:
    """The first ``clip_samples`` samples of audio file ``path`` at ``sample_rate`` Hz: float32 mono in [-1, 1],
    and short notes saying what was done to get there (mixed to mono, resampled, cut, padded, scaled down).
    Only the frames the clip needs are decoded. A file that gives no clip (missing, empty, corrupt, no frames,
    silent in the clip) is a one-line ``DataError`` naming it; bad parameters a ``ConfigError``."""
    check_clip(sample_rate, clip_samples)
    try:
        wave, notes = _read(Path(path), sample_rate, clip_samples)
    except _Unusable as e:
        raise DataError(f"audio file {path} {e}") from None
    return wave, [_note_text(note, sample_rate, clip_samples) for note in notes]


def _read(path: Path, sample_rate: int, clip_samples: int) -> tuple[np.ndarray, list[tuple]]:
    """read_clip without the parameter checks; notes as tuples (kind, value) for a folder to count."""
    import soundfile

    try:
        size = path.stat().st_size
    except OSError:
        size = None
    if size is None or not path.is_file():
        raise _Unusable(f"does not exist or is not a file; expected an audio file ({FORMATS_HINT})", "not a file")
    if size == 0:
        raise _Unusable(f"is empty (0 bytes); expected an audio file ({FORMATS_HINT})", "empty, 0 bytes")
    try:
        with soundfile.SoundFile(str(path)) as f:
            total, rate, channels = int(f.frames), int(f.samplerate), int(f.channels)
            if total <= 0 or channels <= 0:
                raise _Unusable("has no audio frames (0 s of sound); expected a clip with sound", "no audio frames")
            if not 1 <= rate <= MAX_SOURCE_RATE:  # a corrupt header (resampling an absurd rate costs gigabytes)
                raise _Unusable(f"has a sample rate of {rate} Hz; expected 1 to {MAX_SOURCE_RATE} Hz (it may be corrupt)",
                                f"sample rate {rate} Hz")
            wanted = min(total, math.ceil(clip_samples * rate / sample_rate) + _context(rate, sample_rate))
            data = f.read(frames=wanted, dtype="float32", always_2d=True)
    except _Unusable:
        raise
    except Exception as e:  # libsndfile's errors (LibsndfileError is a RuntimeError), and whatever else a broken file raises
        reason = getattr(e, "error_string", None) or (str(e).splitlines() or [""])[0] or type(e).__name__
        reason = reason.rstrip(".")
        raise _Unusable(f"is not a readable audio file ({reason}); expected {FORMATS_HINT}",
                        f"not a readable audio file: {reason}") from None
    if len(data) == 0:
        raise _Unusable("has no audio frames that decode; it may be truncated or corrupt", "no frames decode")
    if not np.isfinite(data).all():
        raise _Unusable("holds NaN or infinite samples; expected finite audio", "NaN or infinite samples")
    if len(data) < wanted:  # the header promised more frames than the file holds (a truncated file)
        total = len(data)

    notes: list[tuple] = []
    wave = data[:, 0] if channels == 1 else data.mean(axis=1, dtype=np.float64)
    if channels > 1:
        notes.append(("mixed", channels))
    if rate != sample_rate:
        wave = resample(wave, rate, sample_rate)
        notes.append(("resampled", rate))
    full = math.ceil(total * sample_rate / rate)  # what the whole file would resample to
    wave = np.asarray(wave[:clip_samples], dtype=np.float32)
    if full > clip_samples:
        notes.append(("cut", total / rate))
    if len(wave) < clip_samples:
        notes.append(("padded", len(wave) / sample_rate))
        wave = np.concatenate([wave, np.zeros(clip_samples - len(wave), np.float32)])

    peak = float(np.max(np.abs(wave)))
    if peak < SILENCE:
        first = f"in its first {_secs(clip_samples / sample_rate)} s"
        raise _Unusable(f"is silent {first} (peak below {SILENCE_DB} dBFS); expected a clip with sound", f"silent {first}")
    if peak > OVER_FULL_SCALE:  # a float file beyond full scale: scaled down whole rather than clipped
        wave = wave / np.float32(peak)
        notes.append(("scaled", peak))
    return np.clip(wave, -1.0, 1.0).astype(np.float32, copy=False), notes


def _secs(seconds: float) -> str:
    """Seconds for a note: 3600, 1, 0.3, 0.025."""
    return f"{round(seconds, 3):g}"


def _note_text(note: tuple, sample_rate: int, clip_samples: int) -> str:
    kind, value = note
    clip = _secs(clip_samples / sample_rate)
    return {
        "mixed": lambda: f"{value} channels mixed to mono",
        "resampled": lambda: f"{value} Hz resampled to {sample_rate} Hz",
        "cut": lambda: f"{_secs(value)} s cut to {clip} s",
        "padded": lambda: f"{_secs(value)} s padded to {clip} s with silence",
        "scaled": lambda: f"peak {value:.2f} scaled down to 1",
    }[kind]()


def summarize_notes(notes: list[tuple], sample_rate: int, clip_samples: int) -> list[str]:
    """Note tuples of many clips, counted: ["12 clips cut to 1 s", "3 clips resampled from 44100 Hz to 16000 Hz",
    ...], in a fixed order (cut, padded, resampled, mixed, scaled)."""
    counts = Counter((kind, value if kind in ("mixed", "resampled") else None) for kind, value in notes)
    clip = _secs(clip_samples / sample_rate)
    order = {"cut": 0, "padded": 1, "resampled": 2, "mixed": 3, "scaled": 4}
    out = []
    for (kind, value), n in sorted(counts.items(), key=lambda kv: (order[kv[0][0]], kv[0][1] or 0)):
        clips = f"{n} clip{'s' if n != 1 else ''}"
        out.append({
            "cut": f"{clips} cut to {clip} s",
            "padded": f"{clips} padded to {clip} s with silence",
            "resampled": f"{clips} resampled from {value} Hz to {sample_rate} Hz",
            "mixed": f"{clips} mixed to mono from {value} channels",
            "scaled": f"{clips} louder than full scale scaled down to a peak of 1",
        }[kind])
    return out


# ---- a folder ----------------------------------------------------------------------------------
def audio_files(root: str | os.PathLike) -> list[Path]:
    """``root`` itself when it is an audio file, else the audio files under it (by suffix, ``AUDIO_SUFFIXES``),
    sorted as ``images.image_files`` does (a folder's files, then its sub-folders), hidden files and folders
    skipped."""
    root = Path(root)
    if root.is_file():
        return [root] if root.suffix.lower() in AUDIO_SUFFIXES else []
    from genforge.data.sources import files_under

    return files_under(root, AUDIO_SUFFIXES)


def load_folder(root: str | os.PathLike, sample_rate: int, clip_samples: int, progress: bool = True,
                limit: int | None = None) -> AudioData:
    """One clip (``read_clip``) from every audio file under ``root`` (or from ``root``, one audio file), or from
    the first ``limit`` of them in ``audio_files`` order. Labels come from the first-level sub-folder each file
    sits in, as for images: only when every file sits in a sub-folder and there are at least two of them (a file
    directly in ``root`` beside class sub-folders leaves the whole set unlabelled, with a warning saying so).
    Files that give no clip are skipped with one warning naming up to five; what was done to the clips (cut,
    padded, resampled, mixed to mono) is counted into one warning. Nothing usable is a one-line ``DataError``."""
    check_clip(sample_rate, clip_samples)
    if limit is not None and (not _is_int(limit) or limit < 1):
        raise ConfigError(f"limit {limit!r} is invalid; expected a whole number of files, 1 or more")
    root = Path(root)
    where = f"wav:{root}"
    if not root.exists():
        raise DataError(f"{where} does not exist; expected a folder of audio files (optionally in one sub-folder per "
                        "class) or one audio file")
    files = audio_files(root)
    if not files:
        if root.is_file():
            raise DataError(f"{where} is not an audio file (suffix {root.suffix or 'none'}); expected "
                            f"{', '.join(AUDIO_SUFFIXES)}")
        raise DataError(f"{where} has no audio files; expected files libsndfile reads ({', '.join(AUDIO_SUFFIXES)}), "
                        "optionally in one sub-folder per class")
    if limit is not None:
        files = files[:limit]
    base = root.parent if root.is_file() else root

    waves = np.zeros((len(files), clip_samples), np.float32)
    kept: list[str] = []
    notes: list[tuple] = []
    failures: list[tuple[str, str]] = []
    for path in tqdm(files, desc=f"reading {root.name or root}", unit="clip", disable=not progress, leave=False):
        rel = path.relative_to(base).as_posix()
        try:
            wave, clip_notes = _read(path, sample_rate, clip_samples)
        except _Unusable as e:
            failures.append((rel, e.short))
            continue
        waves[len(kept)] = wave
        kept.append(rel)
        notes.extend(clip_notes)

    if not kept:
        shown = "; ".join(f"{name} ({why})" for name, why in failures[:SHOWN_SKIPPED])
        more = f"; and {len(failures) - SHOWN_SKIPPED} more" if len(failures) > SHOWN_SKIPPED else ""
        raise DataError(f"{where} has no usable audio: all {len(files)} audio file(s) gave no clip: {shown}{more}; "
                        f"expected {FORMATS_HINT} with sound in the clip's first "
                        f"{_secs(clip_samples / sample_rate)} s")
    if failures:
        shown = "; ".join(f"{name} ({why})" for name, why in failures[:SHOWN_SKIPPED])
        more = f"; and {len(failures) - SHOWN_SKIPPED} more" if len(failures) > SHOWN_SKIPPED else ""
        warnings.warn(f"{where}: skipped {len(failures)} of {len(files)} audio file(s) that gave no clip: {shown}{more}",
                      stacklevel=2)
    summary = summarize_notes(notes, sample_rate, clip_samples)
    if summary:
        warnings.warn(f"{where}: {', '.join(summary)}", stacklevel=2)

    from genforge.data.sources import folder_labels

    # labels only when every clip sits in a sub-folder and there are at least two of them (as for images)
    in_root = sum("/" not in rel for rel in kept)
    if in_root and in_root < len(kept):
        warnings.warn(f"{where}: {in_root} audio file(s) sit directly in the folder beside class sub-folders, so the "
                      "set has no labels; move them into a sub-folder to train with labels", stacklevel=2)
    labels, class_names = folder_labels(kept)
    return AudioData(waves[:len(kept)].copy() if len(kept) < len(files) else waves, labels, class_names,
                     [f"{name} ({why})" for name, why in failures], summary)


# ---- writing -----------------------------------------------------------------------------------
def wav_bytes(wave: np.ndarray, sample_rate: int) -> bytes:
    """A mono 16-bit PCM WAV file of ``wave`` (float, one channel, values in [-1, 1]; beyond is clipped) in
    memory. A sample ``x`` is stored as ``round(x * 32768)`` clipped to [-32768, 32767]."""
    import soundfile

    check_rate(sample_rate)
    wave = np.asarray(wave)
    if wave.ndim == 2 and 1 in wave.shape:
        wave = wave.reshape(-1)
    if wave.ndim != 1:
        raise DataError(f"a mono WAV needs one channel of samples, shape (samples,); got shape {wave.shape}")
    if not np.isfinite(wave).all():
        raise DataError(f"cannot write a WAV of audio with {int((~np.isfinite(wave)).sum())} NaN or infinite "
                        "sample(s); expected finite samples in [-1, 1]")
    pcm = np.clip(np.round(wave.astype(np.float64) * 32768.0), -32768, 32767).astype(np.int16)
    buffer = io.BytesIO()
    soundfile.write(buffer, pcm, int(sample_rate), subtype="PCM_16", format="WAV")
    return buffer.getvalue()


def write_wav(path: str | os.PathLike, wave: np.ndarray, sample_rate: int) -> None:
    """``wav_bytes(wave, sample_rate)`` written to ``path`` atomically (a temporary file beside it, renamed into
    place): a failed or killed write leaves the old file, or none, never half a file."""
    atomic_write_bytes(path, wav_bytes(wave, sample_rate))
