"""Music one can hear and see: a ``symusic.Score`` rendered to a WAV file and to a piano-roll PNG.

Audio comes from FluidSynth's command-line program with a General MIDI SoundFont when both are installed
(Debian: ``apt-get install fluidsynth fluid-soundfont-gm``), and otherwise from a small pure-numpy additive
synthesiser, so that every machine can listen to a sample, if not in concert quality. Both engines write the
same file shape: ``wav_samples(score, rate)`` samples (the score's end time plus ``RELEASE_TAIL`` seconds, so
the last notes can ring out), peak-normalised to about -1 dBFS, 16-bit PCM, written atomically.

Times come from the score's own tempo map (``score.to("second")``): a piece at 90 bpm sounds and looks at 90 bpm.
The additive engine plays every pitched track with the same voice (programs are ignored) and leaves out pitch
bends, pedals and controllers; FluidSynth renders them all.
"""

from __future__ import annotations

import io
import math
import os
import shutil
import subprocess
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from genforge.data.audio_io import wav_bytes as mono_wav_bytes
from genforge.errors import ConfigError, DataError
from genforge.io import atomic_write_bytes

ENGINES = ("auto", "fluidsynth", "additive")
RELEASE_TAIL = 0.5  # seconds after the score's end: room for the last notes' release
MAX_RENDER_SECONDS = 3600.0  # an hour: a piece longer than that is a model's runaway or a broken file
PEAK = 10 ** (-1 / 20)  # -1 dBFS: loud, with a little headroom for lossy re-encoders
SAMPLE_RATES = (8000, 96000)  # what FluidSynth accepts; the additive engine keeps to the same range
# Debian's fluid-soundfont-gm package (and its alternatives link): the first that exists is used
SOUNDFONT_PATHS = ("/usr/share/sounds/sf2/FluidR3_GM.sf2", "/usr/share/sounds/sf2/default-GM.sf2")
INSTALL_HINT = "apt-get install fluidsynth fluid-soundfont-gm"
FLUIDSYNTH_GAIN = 0.5  # headroom inside FluidSynth; the float output is peak-normalised afterwards
FADE_OUT = 0.05  # seconds: FluidSynth's reverb rings past the tail; cut it with a fade, not a click


# ---- audio -------------------------------------------------------------------------------------
def render_wav(score: Any, path: str | os.PathLike, sample_rate: int = 22050, engine: str = "auto",
               soundfont: str | os.PathLike | None = None) -> str:
    """Render ``score`` (a ``symusic.Score``) to a 16-bit WAV file at ``path``; returns the engine used,
    ``"fluidsynth"`` or ``"additive"``. ``engine="auto"`` uses FluidSynth when its program and a SoundFont are
    installed, else the additive synthesiser (also when FluidSynth fails, with a warning: a sample one can hear
    beats none). ``engine="fluidsynth"`` without FluidSynth is a one-line ``ConfigError`` saying what to install."""
    _check_settings(sample_rate, engine)
    seconds = score.to("second")
    if float(seconds.end()) > MAX_RENDER_SECONDS:
        raise DataError(f"the piece lasts {float(seconds.end()):,.0f} s; audio is rendered for pieces of up to "
                        f"{MAX_RENDER_SECONDS:,.0f} s (an hour)")
    program, sf2 = (None, None) if engine == "additive" else (shutil.which("fluidsynth"), find_soundfont(soundfont))
    if program is None or sf2 is None:
        if engine == "fluidsynth":
            missing = "FluidSynth's program" if program is None else "a General MIDI SoundFont"
            raise ConfigError(f"engine 'fluidsynth' needs {missing}: {INSTALL_HINT} (or use engine='additive')")
        return _write_additive(seconds, path, sample_rate)
    try:
        _write_fluidsynth(score, seconds, path, sample_rate, program, sf2)
    except DataError as e:
        if engine == "fluidsynth":
            raise
        warnings.warn(f"{e}; rendered with the additive synthesiser instead", stacklevel=2)
        return _write_additive(seconds, path, sample_rate)
    return "fluidsynth"


def wav_bytes(score: Any, sample_rate: int = 16_000, mono: bool = True, engine: str = "auto") -> bytes:
    """``render_wav``'s file as bytes (for a page to embed), mixed down to one channel when ``mono``."""
    import soundfile

    with tempfile.TemporaryDirectory(prefix="genforge-wav-") as folder:
        path = Path(folder) / "piece.wav"
        render_wav(score, path, sample_rate, engine)
        if not mono:
            return path.read_bytes()
        audio, _ = soundfile.read(str(path), dtype="float32", always_2d=True)
    return mono_wav_bytes(audio.mean(axis=1), sample_rate)


def wav_samples(score: Any, sample_rate: int) -> int:
    """How many samples (per channel) ``render_wav`` writes: the end time in seconds plus ``RELEASE_TAIL``."""
    return int(round((float(score.to("second").end()) + RELEASE_TAIL) * sample_rate))


def find_soundfont(soundfont: str | os.PathLike | None = None) -> Path | None:
    """The SoundFont to use: ``soundfont`` when given (a one-line error when it is not a file), else the first
    of Debian's General MIDI locations that exists, else None."""
    if soundfont is not None:
        if not Path(soundfont).is_file():
            raise ConfigError(f"SoundFont {soundfont} is not a file; expected a .sf2 or .sf3 file")
        return Path(soundfont)
    return next((Path(p) for p in SOUNDFONT_PATHS if Path(p).is_file()), None)


def _check_settings(sample_rate: int, engine: str) -> None:
    if engine not in ENGINES:
        raise ConfigError(f"unknown engine {engine!r}; expected one of {', '.join(ENGINES)}")
    low, high = SAMPLE_RATES
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, (int, np.integer)) or not low <= sample_rate <= high:
        raise ConfigError(f"sample_rate {sample_rate!r} is invalid; expected a whole number of Hz from {low} to {high}")


def additive_synth(score: Any, sample_rate: int) -> np.ndarray:
    """The score as float32 mono audio in [-1, 1], ``wav_samples(score, sample_rate)`` long, peak-normalised to
    -1 dBFS (silence stays silence). Each pitched note is a few harmonics under an ADSR envelope, its amplitude
    proportional to velocity; each drum note is a short burst of decaying noise (a fixed seed: the same score
    gives the same audio), so a beat stays audible without pretending to be a drum kit."""
    seconds = score.to("second")
    out = np.zeros(wav_samples(seconds, sample_rate), dtype=np.float64)
    noise = np.random.default_rng(0)
    for track in seconds.tracks:
        notes = track.notes.numpy()
        for start, duration, pitch, velocity in zip(notes["time"], notes["duration"], notes["pitch"], notes["velocity"]):
            begin = int(round(float(start) * sample_rate))
            if track.is_drum:
                sound = _drum_hit(int(velocity), sample_rate, noise)
            else:
                sound = _tone(int(pitch), int(velocity), float(duration), sample_rate)
            sound = sound[: max(0, len(out) - begin)]
            out[begin:begin + len(sound)] += sound
    return _normalise(out).astype(np.float32)


# the additive voice: harmonic amplitudes and the ADSR envelope, in seconds
HARMONICS = (1.0, 0.5, 0.25, 0.125)
ATTACK, DECAY, SUSTAIN, RELEASE = 0.01, 0.1, 0.6, 0.3  # RELEASE < RELEASE_TAIL: the last note fits
DRUM_DECAY, DRUM_LENGTH = 0.03, 0.15


def _tone(pitch: int, velocity: int, duration: float, sample_rate: int) -> np.ndarray:
    """One pitched note: its harmonics below Nyquist (no aliasing), enveloped, scaled by velocity."""
    frequency = 440.0 * 2.0 ** ((pitch - 69) / 12)
    t = np.arange(int(round((duration + RELEASE) * sample_rate))) / sample_rate
    wave = np.zeros_like(t)
    for k, amplitude in enumerate(HARMONICS, start=1):
        if k * frequency < sample_rate / 2:
            wave += amplitude * np.sin(2 * np.pi * k * frequency * t)
    return wave * _adsr(t, duration) * (velocity / 127)


def _adsr(t: np.ndarray, duration: float) -> np.ndarray:
    """Attack to 1, decay to SUSTAIN, hold until the note's end, then release linearly to 0. A note shorter
    than its attack and decay releases from wherever its envelope got to, so it never clicks."""
    held = np.interp(t, [0.0, ATTACK, ATTACK + DECAY], [0.0, 1.0, SUSTAIN])
    at_release = float(np.interp(duration, [0.0, ATTACK, ATTACK + DECAY], [0.0, 1.0, SUSTAIN]))
    released = at_release * np.clip(1.0 - (t - duration) / RELEASE, 0.0, 1.0)
    return np.where(t < duration, held, released)


def _drum_hit(velocity: int, sample_rate: int, noise: np.random.Generator) -> np.ndarray:
    t = np.arange(int(DRUM_LENGTH * sample_rate)) / sample_rate
    return noise.uniform(-1.0, 1.0, len(t)) * np.exp(-t / DRUM_DECAY) * (0.5 * velocity / 127)


def _normalise(audio: np.ndarray) -> np.ndarray:
    """Scale so the loudest sample sits at -1 dBFS; silence stays silence."""
    peak = float(np.max(np.abs(audio))) if audio.size else 0.0
    return audio * (PEAK / peak) if peak > 0 else audio


def _write_additive(seconds: Any, path: str | os.PathLike, sample_rate: int) -> str:
    _write_pcm16(additive_synth(seconds, sample_rate), path, sample_rate)
    return "additive"


def _write_pcm16(audio: np.ndarray, path: str | os.PathLike, sample_rate: int) -> None:
    """16-bit PCM WAV, encoded in memory and written atomically (no half-written file on a kill)."""
    import soundfile

    buffer = io.BytesIO()
    soundfile.write(buffer, audio, sample_rate, subtype="PCM_16", format="WAV")
    atomic_write_bytes(path, buffer.getvalue())


def _write_fluidsynth(score: Any, seconds: Any, path: str | os.PathLike, sample_rate: int, program: str,
                      soundfont: Path) -> None:
    """FluidSynth renders the MIDI to float samples (no clipping however dense the score); the result is cut
    or padded to ``wav_samples`` (FluidSynth plays until every voice has died away, seconds of reverb after the
    end), faded out when cut, peak-normalised like the additive engine, and kept mono or stereo as it came."""
    import soundfile

    with tempfile.TemporaryDirectory(prefix="genforge-fluidsynth-") as folder:
        midi, wav = Path(folder) / "score.mid", Path(folder) / "score.wav"
        score.dump_midi(str(midi))
        command = [program, "-ni", "-q", "-T", "wav", "-O", "float", "-F", str(wav), "-r", str(sample_rate),
                   "-g", str(FLUIDSYNTH_GAIN), str(soundfont), str(midi)]
        timeout = 60 + 2 * float(seconds.end())
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise DataError(f"fluidsynth took longer than {timeout:.0f} s to render the score") from None
        if done.returncode != 0 or not wav.is_file() or wav.stat().st_size == 0:
            reason = (done.stderr or done.stdout).strip().splitlines()
            raise DataError(f"fluidsynth failed to render the score (exit {done.returncode}"
                            f"{': ' + reason[-1] if reason else ''})")
        try:
            audio, rate = soundfile.read(str(wav), dtype="float32", always_2d=True)
        except RuntimeError as e:  # soundfile's LibsndfileError: FluidSynth wrote something unreadable
            raise DataError(f"fluidsynth wrote an unreadable WAV ({e})") from None
    if rate != sample_rate:
        raise DataError(f"fluidsynth wrote {rate} Hz instead of the {sample_rate} Hz asked for")
    audio = _fit_length(audio, wav_samples(seconds, sample_rate), sample_rate)
    _write_pcm16(_normalise(audio), path, sample_rate)


def _fit_length(audio: np.ndarray, samples: int, sample_rate: int) -> np.ndarray:
    """``audio`` (samples, channels) cut to ``samples`` with a short fade-out, or padded with silence."""
    if len(audio) < samples:
        return np.concatenate([audio, np.zeros((samples - len(audio), audio.shape[1]), audio.dtype)])
    audio = audio[:samples].copy()
    fade = min(samples, int(FADE_OUT * sample_rate))
    if fade:
        audio[samples - fade:] *= np.linspace(1.0, 0.0, fade, dtype=audio.dtype)[:, None]
    return audio


# ---- piano roll --------------------------------------------------------------------------------
BACKGROUND = (18, 18, 24)
BAR_LINE = (52, 52, 64)  # faint: structure without competing with the notes
PALETTE = ((66, 135, 245), (245, 130, 48), (60, 180, 75), (230, 25, 75), (145, 30, 180), (70, 240, 240),
           (240, 50, 230), (210, 245, 60), (250, 190, 212), (0, 128, 128), (220, 190, 255), (170, 110, 40))
QUIETEST = 0.3  # brightness of velocity ~0: a quiet note is dim, never invisible
PITCH_MARGIN = 2  # semitones kept above and below the notes used
EMPTY_RANGE = (60, 72)  # what a score without notes shows: the octave above middle C
MIN_WIDTH = 32


@dataclass(frozen=True)
class RollLayout:
    """Where things are in a piano-roll image: pitch ``highest_pitch`` is the top band, each pitch
    ``pixels_per_pitch`` rows tall; time unit ``t`` (a second for a score, a step for an array) starts at
    column ``floor(t * pixels_per_unit)``."""

    lowest_pitch: int
    highest_pitch: int
    pixels_per_pitch: int
    pixels_per_unit: float
    width: int
    height: int

    def row(self, pitch: int) -> int:
        """The top row of ``pitch``'s band."""
        return (self.highest_pitch - pitch) * self.pixels_per_pitch

    def column(self, t: float) -> int:
        return int(math.floor(t * self.pixels_per_unit))


def roll_png(roll_or_score: Any, path: str | os.PathLike, *, text: Mapping[str, str] | None = None,
             **options: Any) -> RollLayout:
    """Write a piano-roll preview PNG of a ``symusic.Score`` or a roll array (``roll_image``), atomically; returns
    its layout. ``text`` goes in the PNG's text chunks (the sample's parameters)."""
    image, layout = roll_image(roll_or_score, **options)
    _write_png(image, path, text)
    return layout


def rolls_png(pieces: Sequence[Any], path: str | os.PathLike, gap: int = 4) -> None:
    """Several pieces' piano rolls in one PNG, one above the other (left-aligned, ``gap`` pixels between, on a
    background darker than a roll's): a preview of a batch of samples. Nothing is written for no pieces."""
    images = [roll_image(piece)[0] for piece in pieces]
    if not images:
        return
    canvas = np.empty((sum(im.shape[0] for im in images) + gap * (len(images) - 1), max(im.shape[1] for im in images), 3),
                      dtype=np.uint8)
    canvas[:] = np.asarray(BACKGROUND, dtype=np.uint8) // 2
    top = 0
    for image in images:
        canvas[top:top + image.shape[0], :image.shape[1]] = image
        top += image.shape[0] + gap
    _write_png(canvas, path, None)


def roll_image(roll_or_score: Any, *, pixels_per_second: float = 40.0, pixels_per_step: float = 4.0,
               pixels_per_pitch: int = 4, max_width: int = 4096, steps_per_bar: int | None = None,
               lowest_pitch: int = 0) -> tuple[np.ndarray, RollLayout]:
    """A piano-roll picture (H, W, 3) uint8 of a ``symusic.Score`` or a roll array, and its layout.

    Time runs left to right (``pixels_per_second`` for a score, ``pixels_per_step`` for an array, both shrunk
    so the image is at most ``max_width`` wide), pitch bottom to top, cropped to the pitches used plus a
    margin; velocity is brightness and each track has its own colour. Faint vertical lines mark bars: the
    score's downbeats from its time signatures (4/4 when it has none), or every ``steps_per_bar`` steps of an
    array. An array is ``(pitches, steps)`` or ``(tracks, pitches, steps)``, row 0 being MIDI pitch
    ``lowest_pitch``, values velocities (0-127) or, when none exceeds 1, strengths in [0, 1]. A score without
    notes gives a blank image, not an error."""
    if pixels_per_pitch < 1 or max_width < MIN_WIDTH or pixels_per_second <= 0 or pixels_per_step <= 0:
        raise ConfigError("roll_png needs pixels_per_pitch >= 1, pixels per second and per step > 0 and "
                          f"max_width >= {MIN_WIDTH}")
    if isinstance(roll_or_score, np.ndarray) or _is_tensor(roll_or_score):
        layers, low, bars, per_unit = _array_layers(_as_array(roll_or_score), lowest_pitch, pixels_per_step,
                                                    max_width, steps_per_bar)
    else:
        layers, low, bars, per_unit = _score_layers(roll_or_score, pixels_per_second, max_width)
    image = np.repeat(_paint(layers, bars)[::-1], pixels_per_pitch, axis=0)  # high pitches on top
    layout = RollLayout(low, low + layers.shape[1] - 1, pixels_per_pitch, per_unit, image.shape[1], image.shape[0])
    return image, layout


def _is_tensor(value: Any) -> bool:
    """A torch tensor, recognised without importing torch for the callers that never use it."""
    return type(value).__module__.startswith("torch") and type(value).__name__ == "Tensor"


def _as_array(roll: Any) -> np.ndarray:
    """A roll as a float32 numpy array: a tensor may live on a GPU or hold bfloat16, which numpy cannot read."""
    if _is_tensor(roll):
        roll = roll.detach().float().cpu().numpy()
    return np.asarray(roll, dtype=np.float32)


def _score_layers(score: Any, pixels_per_second: float, max_width: int):
    """Per track, a (pitches, columns) brightness layer of the score's notes, the pitch range cropped."""
    seconds = score.to("second")
    end = float(seconds.end())
    per_second = min(pixels_per_second, max_width / end) if end > 0 else pixels_per_second
    width = min(max_width, max(MIN_WIDTH, math.ceil(end * per_second)))
    tracks = [t.notes.numpy() for t in seconds.tracks]
    low, high = _pitch_range(np.concatenate([t["pitch"].astype(int) for t in tracks]) if tracks else np.zeros(0, int))
    layers = np.zeros((max(1, len(tracks)), high - low + 1, width), dtype=np.float32)
    for layer, notes in zip(layers, tracks):
        starts = np.floor(notes["time"] * per_second).astype(int)
        stops = np.maximum(starts + 1, np.ceil((notes["time"] + notes["duration"]) * per_second).astype(int))
        for start, stop, pitch, velocity in zip(starts, stops, notes["pitch"], notes["velocity"]):
            row = layer[int(pitch) - low, start:stop]
            np.maximum(row, _brightness(int(velocity) / 127), out=row)
    bars = np.floor(np.asarray(seconds.get_downbeats(), dtype=float) * per_second).astype(int)
    return layers, low, bars[bars < width], per_second


def _array_layers(roll: np.ndarray, lowest_pitch: int, pixels_per_step: float, max_width: int,
                  steps_per_bar: int | None):
    """Per track, a (pitches, columns) brightness layer of a roll array, stretched or pooled to the width."""
    if roll.ndim == 2:
        roll = roll[None]
    if roll.ndim != 3 or roll.shape[-1] == 0:
        raise DataError(f"a piano roll has shape (pitches, steps) or (tracks, pitches, steps), not {roll.shape}")
    roll = np.nan_to_num(roll)
    strength = roll if roll.max(initial=0) <= 1 else roll / 127
    used = np.flatnonzero((strength > 0).any(axis=(0, 2))) + lowest_pitch
    low, high = _pitch_range(used)
    strength = _pitch_window(strength, lowest_pitch, low, high)
    steps = strength.shape[-1]
    per_step = min(pixels_per_step, max_width / steps)
    starts = np.floor(np.arange(steps) * per_step).astype(int)  # each step's first column, as RollLayout.column
    if per_step >= 1:  # each column shows the step that starts at or before it
        width = math.ceil(steps * per_step)
        strength = strength[..., np.searchsorted(starts, np.arange(width), side="right") - 1]
    else:  # each column shows the loudest of the steps that start in it
        strength = np.maximum.reduceat(strength, np.unique(starts, return_index=True)[1], axis=-1)
    layers = np.where(strength > 0, _brightness(np.clip(strength, 0, 1)), 0).astype(np.float32)
    bars = np.zeros(0, int) if not steps_per_bar else np.floor(np.arange(0, steps, steps_per_bar) * per_step).astype(int)
    return layers, low, bars, per_step


def _pitch_range(pitches: np.ndarray) -> tuple[int, int]:
    """The notes' pitches plus a margin, within MIDI's 0-127; a fixed octave when there are none."""
    if pitches.size == 0:
        return EMPTY_RANGE
    return max(0, int(pitches.min()) - PITCH_MARGIN), min(127, int(pitches.max()) + PITCH_MARGIN)


def _pitch_window(strength: np.ndarray, lowest_pitch: int, low: int, high: int) -> np.ndarray:
    """Rows ``low..high`` (MIDI pitches) of an array whose row 0 is ``lowest_pitch``, zeros where it has none."""
    out = np.zeros((strength.shape[0], high - low + 1, strength.shape[2]), dtype=np.float32)
    first, last = max(low, lowest_pitch), min(high, lowest_pitch + strength.shape[1] - 1)
    if first <= last:
        out[:, first - low:last - low + 1] = strength[:, first - lowest_pitch:last - lowest_pitch + 1]
    return out


def _brightness(strength):
    return QUIETEST + (1 - QUIETEST) * strength


def _paint(layers: np.ndarray, bars: np.ndarray) -> np.ndarray:
    """(pitches, columns, 3) uint8, lowest pitch first: background, bar lines, then each track's notes blended
    from the background toward its colour by brightness; where tracks overlap the brighter wins."""
    pitches, width = layers.shape[1:]
    image = np.empty((pitches, width, 3), dtype=np.float32)
    image[:] = BACKGROUND
    image[:, bars] = BAR_LINE
    background = np.asarray(BACKGROUND, dtype=np.float32)
    notes = np.zeros_like(image)
    for k, layer in enumerate(layers):
        colour = np.asarray(PALETTE[k % len(PALETTE)], dtype=np.float32)
        np.maximum(notes, background + layer[..., None] * (colour - background), out=notes)
    sounding = (layers > 0).any(axis=0)
    image[sounding] = notes[sounding]
    return np.clip(np.round(image), 0, 255).astype(np.uint8)


def _write_png(image: np.ndarray, path: str | os.PathLike, text: Mapping[str, str] | None) -> None:
    from PIL import Image, PngImagePlugin

    info = PngImagePlugin.PngInfo()
    for key, value in (text or {}).items():
        info.add_text(str(key), str(value))
    buffer = io.BytesIO()
    Image.fromarray(image, "RGB").save(buffer, format="PNG", pnginfo=info)
    atomic_write_bytes(path, buffer.getvalue())
