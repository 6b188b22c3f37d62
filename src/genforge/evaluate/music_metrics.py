"""Symbolic-music metrics after Yang & Lerch, "On the evaluation of generative models in music" (Neural Computing
and Applications, 2020; their toolbox is mgeval): features of each piece's notes, and comparisons of a generated
set of pieces with real ones.

A piece (a ``symusic.Score``) is read once into a ``NoteArray``: pitch, onset and duration in quarter notes,
velocity and a drum flag per note, and the bar length from its first time signature (4/4 when it has none).
Drums have no pitch, so every feature is of the pitched notes (the REMI tokenizer leaves drums out anyway).

Per-piece features (``piece_features``; an empty piece scores 0 on each, and 1 on ``empty_bars``):

- ``pitch_classes``: the 12-bin pitch-class histogram, normalised to sum to 1 (Yang & Lerch's PCH).
- ``pitch_count``: distinct pitches used (PC); ``pitch_range``: highest minus lowest pitch in semitones (PR).
- ``note_density``: notes per bar, over the bars from the first note's to the last note's.
- ``polyphony``: the mean number of notes sounding at each distinct onset (a held triad: 3; a melody: 1).
- ``scale_consistency``: the largest share of notes inside one of 24 scales, the 12 major and the 12 harmonic
  minor ones (Mogren's C-RNN-GAN measure). The natural minor scales hold the same notes as their relative
  majors, so they would add nothing; the harmonic minor is the minor mode's own note set. A C-major scale
  scores 1, a chromatic run 7/12.
- ``empty_bars``: the share of bars between the first and last note in which no note starts (MuseGAN's EB).
- ``ioi``: the mean inter-onset interval in quarter notes, over distinct onsets (Yang & Lerch's IOI, in beats
  rather than seconds so that tempo tokens do not move it).

Set-level comparisons (``music_scores``):

- ``pitch_class_distance``: the Jensen-Shannon divergence, in bits (0 = the same, 1 = no pitch class in
  common), between the mean pitch-class histograms of the two sets' non-empty pieces. Bounded and symmetric,
  unlike KL, so a model that never plays a pitch class the data plays still gets a finite number.
- ``oa/<feature>`` and ``kl/<feature>``: Yang & Lerch's overlapped area and KL divergence. For each feature the
  distances between pairs of generated pieces (intra-set) and between generated and real pieces (inter-set)
  are each smoothed by a Gaussian KDE; OA is the area under the smaller of the two densities (1: the generated
  pieces differ from each other as they differ from real ones; 0: disjoint), KL is KL(intra || inter) in nats
  (densities are floored at 1e-12 of the peak, so disjoint sets give about 28 nats, never infinity).
  The histogram's distances are Euclidean, the scalars' absolute differences. ``oa_mean`` and ``kl_mean``
  average them over the features.
- the means over the generated set of each scalar feature, and ``empty_pieces``, the share with no note.

Degenerate inputs never raise and never give NaN: an empty set is scored as one empty piece, a set of one piece
has the single intra-set distance 0 (the piece to itself), and each KDE's bandwidth (Scott's rule, as
``scipy.stats.gaussian_kde``'s default) is at least 1% of the span of all the distances, so point masses are
narrow Gaussians: two identical point masses overlap fully (OA 1, KL 0), two different ones not at all.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Sequence, Union

import numpy as np

if TYPE_CHECKING:
    from symusic import Score

    Piece = Union[Score, "NoteArray"]

DEFAULT_BAR = 4.0  # quarter notes a bar when a score has no time signature: 4/4
MAJOR = (0, 2, 4, 5, 7, 9, 11)
HARMONIC_MINOR = (0, 2, 3, 5, 7, 8, 11)
SCALAR_FEATURES = ("pitch_count", "pitch_range", "note_density", "polyphony", "scale_consistency", "empty_bars", "ioi")
HISTOGRAM_FEATURES = ("pitch_classes",)
MAX_DISTANCES = 2000  # pairs a KDE is fitted on; more are subsampled (with a fixed seed)
KDE_GRID = 2048  # points the densities are evaluated and integrated on
MIN_BANDWIDTH = 0.01  # of the span of all distances: keeps point masses finite and resolvable on the grid
DENSITY_FLOOR = 1e-12  # relative to the peak density: keeps KL finite where one density underflows to 0
DURATION_FLOOR = 1e-6  # quarters: a zero-length note still sounds at its own onset


# ---- notes ---------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class NoteArray:
    """The notes of a piece as parallel arrays, sorted by onset; times are in quarter notes."""

    pitch: np.ndarray  # int64
    start: np.ndarray  # float64, quarters
    duration: np.ndarray  # float64, quarters
    velocity: np.ndarray  # int64
    drum: np.ndarray  # bool
    bar_length: float = DEFAULT_BAR  # quarters

    def __len__(self) -> int:
        return len(self.pitch)

    def pitched(self) -> "NoteArray":
        """The notes without the drums'."""
        if not self.drum.any():
            return self
        keep = ~self.drum
        return NoteArray(self.pitch[keep], self.start[keep], self.duration[keep], self.velocity[keep],
                         self.drum[keep], self.bar_length)


def note_array(score: "Score") -> NoteArray:
    """All notes of ``score`` (every track), its times converted to quarter notes whatever its time unit."""
    quarters = score.to("quarter")
    parts = [(track.notes.numpy(), track.is_drum) for track in quarters.tracks if len(track.notes)]
    if not parts:
        empty = np.zeros(0)
        return NoteArray(empty.astype(np.int64), empty, empty, empty.astype(np.int64), empty.astype(bool),
                         bar_length(quarters))
    pitch = np.concatenate([p["pitch"].astype(np.int64) for p, _ in parts])
    start = np.concatenate([p["time"].astype(np.float64) for p, _ in parts])
    duration = np.concatenate([p["duration"].astype(np.float64) for p, _ in parts])
    velocity = np.concatenate([p["velocity"].astype(np.int64) for p, _ in parts])
    drum = np.concatenate([np.full(len(p["pitch"]), is_drum) for p, is_drum in parts])
    order = np.argsort(start, kind="stable")
    return NoteArray(pitch[order], start[order], duration[order], velocity[order], drum[order], bar_length(quarters))


def bar_length(score: "Score") -> float:
    """Quarter notes a bar, from the score's first time signature (4/4 without one). Later changes are ignored:
    generated and real pieces are measured on the same grid, which is what a comparison needs."""
    if len(score.time_signatures) == 0:
        return DEFAULT_BAR
    signature = score.time_signatures[0]
    length = signature.numerator * 4.0 / signature.denominator
    return length if length > 0 else DEFAULT_BAR


def as_notes(piece: "Piece") -> NoteArray:
    """The pitched notes of a score or note array."""
    return (piece if isinstance(piece, NoteArray) else note_array(piece)).pitched()


def bar_indices(notes: NoteArray) -> np.ndarray:
    """The bar each note starts in (bar 0 begins at time 0); the epsilon keeps a note on a bar line in its bar."""
    return np.floor(notes.start / notes.bar_length + 1e-9).astype(np.int64)


def bars_spanned(notes: NoteArray) -> int:
    """Bars from the first note's to the last note's, both included; 0 for an empty piece."""
    if len(notes) == 0:
        return 0
    bars = bar_indices(notes)
    return int(bars.max() - bars.min() + 1)


# ---- per-piece features ---------------------------------------------------------------------------------------
def pitch_class_histogram(piece: "Piece") -> np.ndarray:
    """(12,) share of notes in each pitch class, C first; zeros for an empty piece."""
    counts = pitch_class_counts(as_notes(piece))
    total = counts.sum()
    return counts / total if total else counts.astype(np.float64)


def pitch_class_counts(notes: NoteArray) -> np.ndarray:
    return np.bincount(notes.pitch % 12, minlength=12).astype(np.float64)


def pitch_range(piece: "Piece") -> float:
    """Highest minus lowest pitch, in semitones."""
    notes = as_notes(piece)
    return float(notes.pitch.max() - notes.pitch.min()) if len(notes) else 0.0


def pitch_count(piece: "Piece") -> float:
    """Distinct pitches used."""
    return float(len(np.unique(as_notes(piece).pitch)))


def note_density(piece: "Piece") -> float:
    """Notes per bar over the bars the piece spans (a chord of four is four notes)."""
    notes = as_notes(piece)
    bars = bars_spanned(notes)
    return len(notes) / bars if bars else 0.0


def polyphony(piece: "Piece") -> float:
    """Mean number of notes sounding at each distinct onset: a note sounds from its onset until just before its
    end, so a note that ends where another starts does not count there."""
    notes = as_notes(piece)
    if len(notes) == 0:
        return 0.0
    onsets = np.unique(notes.start)
    ends = np.sort(notes.start + np.maximum(notes.duration, DURATION_FLOOR))
    started = np.searchsorted(notes.start, onsets, side="right")  # notes.start is sorted
    ended = np.searchsorted(ends, onsets, side="right")
    return float(np.mean(started - ended))


def scale_masks() -> np.ndarray:
    """(24, 12) bool: the 12 major then the 12 harmonic minor scales, by tonic C, C#, ..., B."""
    rows = []
    for steps in (MAJOR, HARMONIC_MINOR):
        base = np.zeros(12, dtype=bool)
        base[list(steps)] = True
        rows.extend(np.roll(base, tonic) for tonic in range(12))
    return np.stack(rows)


SCALES = scale_masks()


def scale_consistency(piece: "Piece") -> float:
    """The largest share of notes (counted with repeats) inside any one of the 24 scales; 0 for an empty piece."""
    counts = pitch_class_counts(as_notes(piece))
    total = counts.sum()
    return float((SCALES @ counts).max() / total) if total else 0.0


def empty_bars(piece: "Piece") -> float:
    """Share of the bars between the first and last note in which no note starts; 1 for an empty piece."""
    notes = as_notes(piece)
    spanned = bars_spanned(notes)
    if spanned == 0:
        return 1.0
    return 1.0 - len(np.unique(bar_indices(notes))) / spanned


def mean_ioi(piece: "Piece") -> float:
    """Mean time between consecutive distinct onsets, in quarter notes; 0 with fewer than two onsets."""
    onsets = np.unique(as_notes(piece).start)
    return float(np.diff(onsets).mean()) if len(onsets) > 1 else 0.0


def piece_features(piece: "Piece") -> dict:
    """Every feature of one piece: ``pitch_classes`` (12,), the scalars of ``SCALAR_FEATURES``, ``note_count``."""
    notes = as_notes(piece)  # read once, shared by every feature
    return {"pitch_classes": pitch_class_histogram(notes), "pitch_count": pitch_count(notes),
            "pitch_range": pitch_range(notes), "note_density": note_density(notes), "polyphony": polyphony(notes),
            "scale_consistency": scale_consistency(notes), "empty_bars": empty_bars(notes), "ioi": mean_ioi(notes),
            "note_count": float(len(notes))}


def set_features(pieces: Sequence["Piece"]) -> dict[str, np.ndarray]:
    """Each feature stacked over ``pieces`` ((n,) scalars, (n, 12) histograms). An empty set is scored as one
    empty piece: a model that made nothing is measured as silence, not skipped."""
    rows = [piece_features(piece) for piece in pieces] or [piece_features(NoteArray(*_empty_columns()))]
    return {name: np.asarray([row[name] for row in rows], dtype=np.float64) for name in rows[0]}


def _empty_columns() -> tuple:
    empty = np.zeros(0)
    return empty.astype(np.int64), empty, empty, empty.astype(np.int64), empty.astype(bool)


# ---- set-level comparisons ------------------------------------------------------------------------------------
def js_divergence(p: np.ndarray, q: np.ndarray) -> float:
    """Jensen-Shannon divergence in bits of two distributions (each normalised here), in [0, 1]."""
    p, q = p / p.sum(), q / q.sum()
    m = (p + q) / 2

    def kl(a: np.ndarray) -> float:
        inside = a > 0
        return float(np.sum(a[inside] * np.log2(a[inside] / m[inside])))

    return float(np.clip((kl(p) + kl(q)) / 2, 0.0, 1.0))


def mean_histogram(histograms: np.ndarray) -> np.ndarray | None:
    """The mean of the non-empty pieces' histograms; None when every piece is empty."""
    kept = histograms[histograms.sum(axis=1) > 0]
    return kept.mean(axis=0) if len(kept) else None


def histogram_distance(real: np.ndarray, fake: np.ndarray) -> float:
    """JS divergence of the mean histograms; with no note in one set, 1 (nothing in common), in both, 0."""
    real_mean, fake_mean = mean_histogram(real), mean_histogram(fake)
    if real_mean is None or fake_mean is None:
        return 0.0 if real_mean is None and fake_mean is None else 1.0
    return js_divergence(real_mean, fake_mean)


def pitch_class_distance(real: Sequence["Piece"], fake: Sequence["Piece"]) -> float:
    """JS divergence (bits) between the mean pitch-class histograms of the real and generated pieces."""
    return histogram_distance(set_features(real)["pitch_classes"], set_features(fake)["pitch_classes"])


def _pairs(n_a: int, n_b: int | None, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Index pairs: all i < j of one set (``n_b`` None) or all (i, j) across two, or ``MAX_DISTANCES`` random
    ones when there are more (intra-set pairs never pair a piece with itself)."""
    count = n_a * (n_a - 1) // 2 if n_b is None else n_a * n_b
    if count <= MAX_DISTANCES:
        if n_b is None:
            return np.triu_indices(n_a, k=1)
        i, j = np.meshgrid(np.arange(n_a), np.arange(n_b), indexing="ij")
        return i.ravel(), j.ravel()
    i = rng.integers(n_a, size=MAX_DISTANCES)
    if n_b is None:
        return i, (i + rng.integers(1, n_a, size=MAX_DISTANCES)) % n_a
    return i, rng.integers(n_b, size=MAX_DISTANCES)


def intra_distances(values: np.ndarray) -> np.ndarray:
    """Distances between pairs of pieces of one set (rows of ``values``); [0] for a single piece."""
    rows = values.reshape(len(values), -1)
    if len(rows) < 2:
        return np.zeros(1)
    i, j = _pairs(len(rows), None, np.random.default_rng(0))
    return np.linalg.norm(rows[i] - rows[j], axis=1)


def inter_distances(values: np.ndarray, others: np.ndarray) -> np.ndarray:
    """Distances from each piece of one set to each of another."""
    a, b = values.reshape(len(values), -1), others.reshape(len(others), -1)
    i, j = _pairs(len(a), len(b), np.random.default_rng(1))
    return np.linalg.norm(a[i] - b[j], axis=1)


def bandwidth(samples: np.ndarray, floor: float) -> float:
    """Scott's rule, as ``scipy.stats.gaussian_kde`` in one dimension (std * n^(-1/5)), at least ``floor``."""
    scott = samples.std(ddof=1) * len(samples) ** -0.2 if len(samples) > 1 else 0.0
    return max(float(scott), floor)


def kde(samples: np.ndarray, width: float, grid: np.ndarray) -> np.ndarray:
    """A Gaussian KDE of ``samples`` on ``grid``, normalised to integrate to 1 there."""
    z = (grid[:, None] - samples[None, :]) / width
    density = np.exp(-0.5 * z * z).sum(axis=1)
    return density / integrate(density, grid)


def integrate(values: np.ndarray, grid: np.ndarray) -> float:
    """The trapezoid rule (``np.trapezoid`` is numpy 2 only; numpy 1.24 is supported)."""
    return float(np.sum((values[1:] + values[:-1]) * np.diff(grid)) / 2)


def overlap(intra: np.ndarray, inter: np.ndarray) -> tuple[float, float]:
    """(overlapped area, KL(intra || inter) in nats) of the KDEs of two sets of distances."""
    both = np.concatenate([intra, inter])
    low, high = float(both.min()), float(both.max())
    span = max(high - low, 1e-3 * max(abs(low), abs(high)), 1e-12)
    widths = bandwidth(intra, MIN_BANDWIDTH * span), bandwidth(inter, MIN_BANDWIDTH * span)
    pad = 4 * max(widths)
    grid = np.linspace(low - pad, high + pad, KDE_GRID)
    p, q = kde(intra, widths[0], grid), kde(inter, widths[1], grid)
    area = float(np.clip(integrate(np.minimum(p, q), grid), 0.0, 1.0))
    floor = DENSITY_FLOOR * max(p.max(), q.max())
    kl = float(integrate(p * np.log(np.maximum(p, floor) / np.maximum(q, floor)), grid))
    return area, max(kl, 0.0)


def compare_features(real: dict[str, np.ndarray], fake: dict[str, np.ndarray]) -> dict[str, float]:
    """``music_scores`` on features already extracted (``set_features``): the scorer reads its real pieces once."""
    out = {"pitch_class_distance": histogram_distance(real["pitch_classes"], fake["pitch_classes"])}
    out.update({name: float(fake[name].mean()) for name in SCALAR_FEATURES})
    out["empty_pieces"] = float(np.mean(fake["note_count"] == 0))
    areas, divergences = [], []
    for name in SCALAR_FEATURES + HISTOGRAM_FEATURES:
        area, kl = overlap(intra_distances(fake[name]), inter_distances(fake[name], real[name]))
        out[f"oa/{name}"], out[f"kl/{name}"] = area, kl
        areas.append(area)
        divergences.append(kl)
    out["oa_mean"], out["kl_mean"] = float(np.mean(areas)), float(np.mean(divergences))
    return out


def music_scores(real_scores: Sequence["Piece"], fake_scores: Sequence["Piece"]) -> dict[str, float]:
    """Generated pieces against real ones: ``pitch_class_distance``, the generated set's mean of each scalar
    feature, ``empty_pieces``, ``oa/<feature>``, ``kl/<feature>``, ``oa_mean`` and ``kl_mean``."""
    return compare_features(set_features(real_scores), set_features(fake_scores))
