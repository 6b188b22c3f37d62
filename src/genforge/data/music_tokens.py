"""Two ways to hand a piece (a ``symusic.Score``) to a model: REMI tokens, and a piano roll.

**REMI tokens** (``MusicTokenizer``, for transformers). MidiTok's REMI writes a piece as one flat stream
of events: ``Bar`` starts a bar, ``Position_k`` moves to the k-th grid step of the bar, then each note is
three tokens ``Pitch_p Velocity_v Duration_d``; ``Tempo_t`` appears where the tempo changes. The grid has
``positions_per_beat`` steps a beat (8: 32nd notes in 4/4), pitches 21..108 (the piano), velocities fall
into a few bins, durations are exact to the grid up to 4 beats and to a 16th up to 12 beats.

- All pitched tracks are merged into one before encoding (one piano part): plain REMI has one stream per
  track and no instrument tokens, and a model of one stream is what the text transformer already
  trains. Notes doubled in unison (same onset, same pitch) are kept once; drum tracks are left out.
- Time signatures are not tokenized: a bar is 4 beats, so a piece in 3/4 keeps every note's exact time
  and only its ``Bar`` tokens fall on different beats. That keeps one grid (32 positions a bar) for
  every piece, shared with the piano roll's "cut by bars".
- The end-of-piece id (``eot_id``) is MidiTok's ``EOS_None``; as ``<|endoftext|>`` for text, the dataset
  writes it before each piece and sampling starts from it. ``encode_score`` never emits it.
- With ``keys`` (a run prepared with ``data.labels=key``) 24 ids follow MidiTok's vocabulary, one per key
  (``music_keys.KEY_NAMES``); the dataset writes the piece's key token right after its end-of-piece token, so
  a model learns to draw the key first and a sampler can choose it. Decoding drops key tokens like any id
  outside MidiTok's vocabulary.
- Decoding follows MidiTok, which skips what it cannot place (a ``Pitch`` without its velocity and
  duration, special tokens); ids outside the vocabulary are dropped first, so sampled streams decode
  to something, never to an exception. A decoded score has ``positions_per_beat`` ticks a beat.
- The tokenizer is rebuilt from its few settings; ``to_dict`` also stores the vocabulary, and loading
  checks it, so a MidiTok release that numbered tokens differently is a clear error, not silent noise.
  Nothing here touches the Hugging Face hub (no ``from_pretrained``): it runs offline.

**Piano roll** (``score_to_roll``, for GANs, VAEs, diffusion). A uint8 array (channels, time steps,
pitches): the velocity of the note sounding at each step and pitch, 0 for silence, ``steps_per_beat``
steps a beat. A held note is consecutive on-steps, its velocity that of its first step. Plain, two notes of
the same pitch that touch (a repeated quarter note) merge into one long note; with ``onsets=True`` each track
gets a second channel marking the first step of every note, and repeated notes round-trip exactly, at the
cost of one more channel (the better choice for training on chorales, whose voices repeat notes often).
Velocity changes never split a note: a model's roll wavers in value from step to step, and that must not
shatter its notes. ``roll_segments`` cuts a roll into fixed-length windows starting on bar lines, the
images the image-like families train on.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, fields
from typing import TYPE_CHECKING, Any, ClassVar, Iterable

import numpy as np

from genforge.data.music_keys import KEY_NAMES, NUM_KEYS
from genforge.errors import ConfigError, DataError
from genforge.io import atomic_write_json

if TYPE_CHECKING:
    from symusic import Score

PIANO_LOW, PIANO_HIGH = 21, 108  # A0..C8, the 88 keys
BEATS_PER_BAR = 4
ROLL_TICKS_PER_BEAT = 480  # ticks a beat of a score made from a roll (rounded to a multiple of steps_per_beat)
BOOL_ROLL_VELOCITY = 100  # the velocity of a note read from a bool roll
SPECIAL_TOKENS = ("PAD", "BOS", "EOS")  # MidiTok names them PAD_None, BOS_None, EOS_None
EOT = "EOS_None"


# ---- REMI tokens -----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class RemiSettings:
    """What a REMI vocabulary is made of. Defaults: a 32nd-note grid in 4/4, the piano's 88 keys, 8 velocity
    bins (15, 31, ..., 127), 22 tempos 40..250 BPM in steps of 10 (so 120 is exact)."""

    positions_per_beat: int = 8
    pitch_low: int = PIANO_LOW
    pitch_high: int = PIANO_HIGH
    velocity_bins: int = 8
    tempo_low: int = 40
    tempo_high: int = 250
    tempo_bins: int = 22

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise ConfigError(f"REMI setting {f.name} must be a whole number, got {value!r}")
        _check_range("positions_per_beat", self.positions_per_beat, 1, 64)
        _check_range("pitch_low", self.pitch_low, 0, 127)
        _check_range("pitch_high", self.pitch_high, self.pitch_low, 127)
        _check_range("velocity_bins", self.velocity_bins, 1, 127)
        _check_range("tempo_low", self.tempo_low, 1, 1000)
        _check_range("tempo_high", self.tempo_high, self.tempo_low + 1, 1000)
        _check_range("tempo_bins", self.tempo_bins, 2, 1000)


def _check_range(name: str, value: int, low: int, high: int) -> None:
    if not low <= value <= high:
        raise ConfigError(f"REMI setting {name} must be from {low} to {high}, got {value}")


class MusicTokenizer:
    """REMI tokens over MidiTok, with the interface genforge's token streams use (``vocab_size``, ``eot_id``,
    ``special_ids``, ``save``/``load`` as one JSON file whose "type" is "remi")."""

    type: ClassVar[str] = "remi"

    def __init__(self, settings: RemiSettings | None = None, keys: bool = False):
        self.settings = settings or RemiSettings()
        self.keys = bool(keys)  # one key token (of 24, data/music_keys.py) after each end-of-piece token
        self._remi = _build_remi(self.settings)
        self._names: list[str] = [name for name, _ in sorted(self._remi.vocab.items(), key=lambda item: item[1])]

    # ---- the token-stream interface ------------------------------------------------------------------------
    @property
    def vocab_size(self) -> int:
        return len(self._names) + (NUM_KEYS if self.keys else 0)

    @property
    def class_names(self) -> tuple[str, ...]:
        """The keys a stream's key token names, index-aligned with ``key_token`` (none without key tokens)."""
        return KEY_NAMES if self.keys else ()

    def key_token(self, key: int) -> int:
        """The id of key label ``key`` (0..23, ``music_keys.KEY_NAMES``): the ids after MidiTok's vocabulary."""
        if not self.keys:
            raise ConfigError("this tokenizer has no key tokens (a run prepared without data.labels=key)")
        return len(self._names) + key

    @property
    def eot_id(self) -> int:
        return self._remi.vocab[EOT]

    @property
    def special_ids(self) -> dict[str, int]:
        return {f"{name}_None": self._remi.vocab[f"{name}_None"] for name in SPECIAL_TOKENS}

    def fim_ids(self) -> None:
        """Music streams have no fill-in-the-middle tokens."""
        return None

    @property
    def velocities(self) -> np.ndarray:
        """The velocity of each bin: a note's velocity becomes the nearest of these."""
        return np.asarray(self._remi.velocities, dtype=np.int64)

    @property
    def ticks_per_beat(self) -> int:
        """Ticks a beat of a decoded score: one tick per grid position."""
        return int(self._remi.time_division)

    def token_names(self, ids: Iterable[int]) -> list[str]:
        """The names of the ids ("Bar_None", "Pitch_60", ...); ids outside the vocabulary are left out."""
        return [self._names[i] for i in self._valid_ids(ids)]

    def encode(self, text: str) -> list[int]:
        """Token names separated by spaces (as ``decode`` writes them) to ids: prompts written by hand."""
        ids = []
        for name in text.split():
            if name not in self._remi.vocab:
                raise DataError(f"unknown REMI token {name!r}; expected names such as Bar_None, Position_0, Pitch_60")
            ids.append(self._remi.vocab[name])
        return ids

    def decode(self, ids: Iterable[int]) -> str:
        """The ids as token names separated by spaces, for display."""
        return " ".join(self.token_names(ids))

    # ---- scores ---------------------------------------------------------------------------------------------
    def encode_score(self, score: "Score") -> list[int]:
        """The piece as one stream of ids: its pitched tracks merged, times snapped to the grid, velocities to
        their bins; notes outside the pitch range are dropped. A piece without such notes gives []."""
        merged = merge_pitched_tracks(score, self.settings.pitch_low, self.settings.pitch_high)
        if merged is None:
            return []
        sequences = self._remi.encode(merged)
        return [int(i) for i in sequences[0].ids] if sequences else []

    def decode_score(self, ids: Iterable[int]) -> "Score":
        """The piece a stream of ids stands for, as one piano track. Tolerant of model output: ids outside the
        vocabulary are dropped, and so is any note whose tokens are incomplete or out of order."""
        from miditok import TokSequence

        score = self._remi.decode([TokSequence(ids=self._valid_ids(ids))])
        # a model may write a tempo token "earlier" in a bar than one before it: MidiTok keeps the events in
        # token order, and a MIDI file of events out of order wraps the negative gap to ~2**28 ticks
        score.sort(inplace=True)
        return score

    def _valid_ids(self, ids: Iterable[int]) -> list[int]:
        if hasattr(ids, "detach"):  # a torch tensor, possibly on an accelerator
            ids = ids.detach().cpu().numpy()
        try:
            array = np.asarray(ids if isinstance(ids, (np.ndarray, list, tuple)) else list(ids), dtype=np.int64)
        except (TypeError, ValueError, OverflowError):
            raise DataError("token ids must be whole numbers") from None
        array = array.reshape(-1)
        return array[(array >= 0) & (array < len(self._names))].tolist()  # key tokens are not notes either

    # ---- files ----------------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        from miditok.constants import CURRENT_MIDITOK_VERSION

        return {"type": self.type, "eot": EOT, "settings": asdict(self.settings), "vocab": list(self._names),
                "miditok_version": CURRENT_MIDITOK_VERSION, **({"keys": True} if self.keys else {})}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "MusicTokenizer":
        """The tokenizer ``to_dict`` described; ValueError (which ``load`` reports as a corrupt file) when the
        dict is not one, or when this MidiTok builds a different vocabulary from the same settings."""
        if not isinstance(d, dict) or d.get("type") != cls.type or not isinstance(d.get("settings"), dict):
            raise ValueError("not a REMI tokenizer (expected type 'remi' and a 'settings' object)")
        known = {f.name for f in fields(RemiSettings)}
        unknown = sorted(set(d["settings"]) - known)
        if unknown:
            raise ValueError(f"unknown REMI settings {', '.join(map(repr, unknown))}; known: {', '.join(sorted(known))}")
        try:
            tokenizer = cls(RemiSettings(**d["settings"]), keys=d.get("keys") is True)
        except ConfigError as e:
            raise ValueError(str(e)) from None
        if "vocab" in d and d["vocab"] != tokenizer._names:
            raise ValueError(f"its vocabulary differs from the one MidiTok builds here from the same settings "
                             f"(written by MidiTok {d.get('miditok_version', '?')})")
        return tokenizer

    def save(self, path: str | os.PathLike) -> None:
        atomic_write_json(path, self.to_dict())

    @classmethod
    def load(cls, path: str | os.PathLike) -> "MusicTokenizer":
        from genforge.data.tokenizers import load_tokenizer

        tokenizer = load_tokenizer(path, types={cls.type: cls.from_dict})
        if not isinstance(tokenizer, cls):
            raise DataError(f"tokenizer file {path} holds a '{tokenizer.type}' tokenizer, not a '{cls.type}' tokenizer")
        return tokenizer

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, MusicTokenizer) and self.settings == other.settings and self._names == other._names
                and self.keys == other.keys)

    def __repr__(self) -> str:
        return f"MusicTokenizer(vocab_size={self.vocab_size}, settings={self.settings})"


def _build_remi(settings: RemiSettings):
    """MidiTok's REMI for ``settings``, every optional token family off except tempo: one grid, one stream."""
    from miditok import REMI, TokenizerConfig

    grid = settings.positions_per_beat
    config = TokenizerConfig(
        pitch_range=(settings.pitch_low, settings.pitch_high),  # both ends included
        beat_res={(0, BEATS_PER_BAR): grid, (BEATS_PER_BAR, 3 * BEATS_PER_BAR): min(grid, 4)},
        num_velocities=settings.velocity_bins,
        special_tokens=list(SPECIAL_TOKENS),
        use_velocities=True,
        use_tempos=True,
        num_tempos=settings.tempo_bins,
        tempo_range=(settings.tempo_low, settings.tempo_high),
        use_chords=False,
        use_rests=False,
        use_time_signatures=False,
        use_key_signatures=False,
        use_sustain_pedals=False,
        use_pitch_bends=False,
        use_control_changes=False,
        use_programs=False,
        remove_duplicated_notes=True,  # unison doublings of merged voices
    )
    return REMI(config)


def merge_pitched_tracks(score: "Score", pitch_low: int = 0, pitch_high: int = 127) -> "Score | None":
    """The score's pitched (non-drum) notes within ``pitch_low..pitch_high`` as one track, with its tempos and
    time signatures; None when there are none. Overlapping notes stay as they are: merging only gathers."""
    from symusic import Note, Score, Track

    parts = [track.notes.numpy() for track in score.tracks if not track.is_drum and len(track.notes) > 0]
    if not parts:
        return None
    notes = {key: np.concatenate([part[key] for part in parts]) for key in ("time", "duration", "pitch", "velocity")}
    pitch = notes["pitch"].astype(np.int64)
    notes = {key: values[(pitch >= pitch_low) & (pitch <= pitch_high)] for key, values in notes.items()}
    if not len(notes["pitch"]):
        return None
    order = np.lexsort((notes["pitch"], notes["time"]))
    merged = Score(score.ticks_per_quarter)
    track = Track(name="merged", program=0)
    track.notes = Note.from_numpy(**{key: values[order] for key, values in notes.items()})
    merged.tracks.append(track)
    merged.tempos = score.tempos.copy()
    merged.time_signatures = score.time_signatures.copy()
    return merged


# ---- piano roll ------------------------------------------------------------------------------------------
def score_to_roll(score: "Score", steps_per_beat: int = 4, pitch_low: int = PIANO_LOW, pitch_high: int = PIANO_HIGH,
                  *, merge_tracks: bool = True, onsets: bool = False) -> np.ndarray:
    """The piece as a uint8 velocity roll (channels, steps, pitch_high - pitch_low + 1).

    Times are rounded to the nearest step; a note shorter than a step keeps one step. Pitches outside
    ``pitch_low..pitch_high`` and drum tracks are dropped. ``merge_tracks``: one channel for all pitched
    tracks (overlaps keep the louder velocity), else one per pitched track that has notes, in score
    order. ``onsets``: each track is two channels, [velocity while sounding, velocity at the first step
    only], so touching repeated notes stay apart. The roll ends at the last note's end.
    """
    _check_roll_grid(steps_per_beat, pitch_low, pitch_high)
    tracks = [track for track in score.tracks if not track.is_drum and len(track.notes) > 0]
    groups = [tracks] if merge_tracks else [[track] for track in tracks]
    notes = [_grid_notes(group, score.ticks_per_quarter, steps_per_beat, pitch_low, pitch_high) for group in groups]
    steps = max([int(n["end"].max()) for n in notes if len(n["end"])], default=0)
    per_track = 2 if onsets else 1
    roll = np.zeros((max(1, len(groups)) * per_track, steps, pitch_high - pitch_low + 1), dtype=np.uint8)
    for k, n in enumerate(notes):
        for start, end, pitch, velocity in zip(n["start"], n["end"], n["pitch"], n["velocity"]):
            held = roll[k * per_track, start:end, pitch]
            np.maximum(held, velocity, out=held)
            if onsets:
                roll[k * per_track + 1, start, pitch] = max(roll[k * per_track + 1, start, pitch], velocity)
    return roll


def _grid_notes(tracks: list, ticks_per_beat: int, steps_per_beat: int, pitch_low: int,
                pitch_high: int) -> dict[str, np.ndarray]:
    """Start step, end step, pitch index and velocity (1..127) of the tracks' notes within the pitch range."""
    if not tracks:
        empty = np.zeros(0, dtype=np.int64)
        return {"start": empty, "end": empty, "pitch": empty, "velocity": empty.astype(np.uint8)}
    arrays = [track.notes.numpy() for track in tracks]
    time = np.concatenate([a["time"] for a in arrays]).astype(np.int64)
    duration = np.concatenate([a["duration"] for a in arrays]).astype(np.int64)
    pitch = np.concatenate([a["pitch"] for a in arrays]).astype(np.int64)
    velocity = np.concatenate([a["velocity"] for a in arrays]).astype(np.int64)
    keep = (pitch >= pitch_low) & (pitch <= pitch_high)
    scale = steps_per_beat / ticks_per_beat
    start = np.floor(time[keep] * scale + 0.5).astype(np.int64)
    end = np.maximum(np.floor((time[keep] + duration[keep]) * scale + 0.5).astype(np.int64), start + 1)
    return {"start": start, "end": end, "pitch": pitch[keep] - pitch_low, "velocity": np.clip(velocity[keep], 1, 127).astype(np.uint8)}


def roll_to_score(roll: np.ndarray, steps_per_beat: int = 4, pitch_low: int = PIANO_LOW, tempo: float = 120.0,
                  *, onsets: bool = False) -> "Score":
    """The piece a roll (channels, steps, pitches) stands for, one piano track per track of the roll.

    The roll holds velocities (values are rounded and clipped to 0..127; 0 is silence) or bools (a note
    at velocity 100). A note starts where a pitch turns on, or (with ``onsets``, channels in [sounding,
    onset] pairs) at a marked onset while it sounds; it lasts while the pitch stays on, at the velocity of
    its first step (or of its onset mark). Notes on the grid come back exactly as ``score_to_roll`` found
    them, except that without onsets touching notes of one pitch come back as one.
    """
    roll = np.asarray(roll)
    if roll.ndim != 3:
        raise DataError(f"a piano roll must have 3 dimensions (channels, steps, pitches), got shape {roll.shape}")
    _check_roll_grid(steps_per_beat, pitch_low, pitch_low + roll.shape[2] - 1)
    if onsets and roll.shape[0] % 2:
        raise DataError(f"a piano roll with onsets has two channels a track, got {roll.shape[0]} channels")
    velocities = _as_velocities(roll)
    ticks_per_step = max(1, ROLL_TICKS_PER_BEAT // steps_per_beat)
    score = _empty_score(steps_per_beat * ticks_per_step, tempo)
    per_track = 2 if onsets else 1
    for k in range(roll.shape[0] // per_track):
        sounding = velocities[k * per_track]
        marks = velocities[k * per_track + 1] if onsets else None
        score.tracks.append(_roll_track(sounding, marks, pitch_low, ticks_per_step, name=f"track {k}"))
    return score


def _as_velocities(roll: np.ndarray) -> np.ndarray:
    if roll.dtype == bool:
        return roll.astype(np.uint8) * np.uint8(BOOL_ROLL_VELOCITY)
    if roll.dtype == np.uint8:
        return np.minimum(roll, 127)
    values = np.nan_to_num(roll.astype(np.float64), nan=0.0, posinf=127.0, neginf=0.0)
    return np.clip(np.rint(values), 0, 127).astype(np.uint8)


def _empty_score(ticks_per_beat: int, tempo: float) -> "Score":
    from symusic import Score, Tempo, TimeSignature

    score = Score(ticks_per_beat)
    score.tempos.append(Tempo(0, qpm=float(tempo)))
    score.time_signatures.append(TimeSignature(0, BEATS_PER_BAR, 4))
    return score


def _roll_track(sounding: np.ndarray, marks: np.ndarray | None, pitch_low: int, ticks_per_step: int, name: str):
    """One track's notes from its (steps, pitches) velocities: all runs found at once on the flattened
    (pitch, step) grid, each pitch row followed by one silent step so no run crosses into the next row."""
    from symusic import Note, Track

    steps, pitches = sounding.shape
    padded = np.zeros((pitches, steps + 1), dtype=np.uint8)
    padded[:, :steps] = sounding.T
    on = padded > 0
    before = np.zeros_like(padded)
    before[:, 1:] = padded[:, :-1]
    starts = on & (before == 0)  # turns on; a change of velocity is no new note (model rolls waver)
    if marks is not None:
        marked = np.zeros_like(on)
        marked[:, :steps] = marks.T > 0
        starts |= on & marked
    flat_starts, flat_on = starts.ravel(), on.ravel()
    start_idx = np.flatnonzero(flat_starts)
    bounds = np.flatnonzero(flat_starts | ~flat_on)  # where a run ends: the next start, or silence
    end_idx = bounds[np.searchsorted(bounds, start_idx, side="right")]
    row, col = np.divmod(start_idx, steps + 1)
    velocity = padded.ravel()[start_idx]
    if marks is not None:  # an onset mark carries the note's velocity when it has one
        mark_velocity = np.zeros_like(padded)
        mark_velocity[:, :steps] = marks.T
        velocity = np.where(mark_velocity.ravel()[start_idx] > 0, mark_velocity.ravel()[start_idx], velocity)
    track = Track(name=name, program=0)
    order = np.lexsort((row, col))
    track.notes = Note.from_numpy(time=(col[order] * ticks_per_step).astype(np.int32),
                                  duration=((end_idx - start_idx)[order] * ticks_per_step).astype(np.int32),
                                  pitch=(row[order] + pitch_low).astype(np.int8),
                                  velocity=np.minimum(velocity[order], 127).astype(np.int8))
    return track


def roll_segments(roll: np.ndarray, steps: int, *, hop: int | None = None, keep_empty: bool = False) -> np.ndarray:
    """Windows of ``steps`` steps cut from a roll (channels, time, pitches), as (N, channels, steps, pitches).

    Windows start every ``hop`` steps (default ``steps``) from step 0, the first bar line: pick ``steps``
    and ``hop`` as whole bars (a bar is ``4 * steps_per_beat`` steps) and every window starts on a bar.
    The last window is padded with silence; silent windows are dropped unless ``keep_empty``.
    """
    roll = np.asarray(roll)
    if roll.ndim != 3:
        raise DataError(f"a piano roll must have 3 dimensions (channels, steps, pitches), got shape {roll.shape}")
    hop = steps if hop is None else hop
    for name, value in (("steps", steps), ("hop", hop)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"segment {name} must be a whole number >= 1, got {value!r}")
    channels, length, pitches = roll.shape
    windows = []
    for start in range(0, length, hop):
        window = np.zeros((channels, steps, pitches), dtype=roll.dtype)
        part = roll[:, start:start + steps]
        window[:, :part.shape[1]] = part
        if keep_empty or window.any():
            windows.append(window)
    if not windows:
        return np.zeros((0, channels, steps, pitches), dtype=roll.dtype)
    return np.stack(windows)


def _check_roll_grid(steps_per_beat: int, pitch_low: int, pitch_high: int) -> None:
    if isinstance(steps_per_beat, bool) or not isinstance(steps_per_beat, int) or not 1 <= steps_per_beat <= 480:
        raise ConfigError(f"steps_per_beat must be a whole number from 1 to 480, got {steps_per_beat!r}")
    if not 0 <= pitch_low <= pitch_high <= 127:
        raise ConfigError(f"the roll's pitches must satisfy 0 <= low <= high <= 127, got {pitch_low}..{pitch_high}")
