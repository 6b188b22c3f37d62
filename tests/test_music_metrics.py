"""Music metrics (evaluate/music_metrics.py) on tiny hand-made scores whose values can be worked out by hand, and
the music scorer's choice of real windows and its scores with a fake evaluator, tokenizer and family."""

import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from symusic import Note, Score, TimeSignature, Track

from genforge.evaluate import music_metrics as mm

pytestmark = pytest.mark.usefixtures("one_thread")

TPQ = 480
C_MAJOR = [60, 62, 64, 65, 67, 69, 71, 72]


def score_of(notes, tpq: int = TPQ, signature: tuple[int, int] | None = None, drums=()) -> Score:
    """A one-track score of (pitch, onset, duration) in quarter notes, plus a drum track of ``drums``."""
    score = Score(tpq)
    for is_drum, items in ((False, notes), (True, drums)):
        if not items and is_drum:
            continue
        track = Track("drums" if is_drum else "piano", 0, is_drum)
        for pitch, start, duration in items:
            track.notes.append(Note(round(start * tpq), round(duration * tpq), pitch, 80))
        score.tracks.append(track)
    if signature:
        score.time_signatures.append(TimeSignature(0, *signature))
    return score


def melody(pitches, start: float = 0.0) -> list:
    return [(p, start + i, 1) for i, p in enumerate(pitches)]


# ---- per-piece features ----------------------------------------------------------------------------------------
def test_c_major_scale():
    scale = score_of(melody(C_MAJOR))  # 8 quarter notes: two bars of 4/4
    hist = mm.pitch_class_histogram(scale)
    expected = np.zeros(12)
    expected[[0, 2, 4, 5, 7, 9, 11]] = 1 / 8
    expected[0] = 2 / 8  # C twice
    np.testing.assert_allclose(hist, expected)
    assert mm.scale_consistency(scale) == 1.0
    assert mm.pitch_range(scale) == 12.0
    assert mm.pitch_count(scale) == 8.0
    assert mm.note_density(scale) == 4.0
    assert mm.polyphony(scale) == 1.0
    assert mm.empty_bars(scale) == 0.0
    assert mm.mean_ioi(scale) == 1.0


def test_chromatic_run_and_minor_keys():
    chromatic = score_of(melody(range(60, 72)))
    np.testing.assert_allclose(mm.pitch_class_histogram(chromatic), np.full(12, 1 / 12))
    assert mm.scale_consistency(chromatic) == pytest.approx(7 / 12)
    # A harmonic minor (A B C D E F G#) is one of the 24 scales; no major scale holds both F and G# (C major: 7 of 8)
    a_harmonic_minor = score_of(melody([57, 59, 60, 62, 64, 65, 68, 69]))
    assert mm.scale_consistency(a_harmonic_minor) == 1.0
    # C major plus a C#: no scale holds all nine notes; C major holds eight
    assert mm.scale_consistency(score_of(melody(C_MAJOR + [61]))) == pytest.approx(8 / 9)


def test_polyphony():
    assert mm.polyphony(score_of([(60, 0, 4), (64, 0, 4), (67, 0, 4)])) == 3.0  # a triad
    # a whole note under four quarter notes: two sound at each of the four onsets
    assert mm.polyphony(score_of([(48, 0, 4)] + melody([60, 62, 64, 65]))) == 2.0
    # a note ending where the next starts is not sounding there; a zero-length note sounds at its onset
    assert mm.polyphony(score_of([(60, 0, 1), (62, 1, 1), (64, 1, 0)])) == 1.5


def test_bars_density_and_empty_bars():
    # notes in bars 0 and 2 of 4/4: bar 1 is silent
    gap = score_of([(60, 0, 1), (62, 1, 1), (64, 8, 1)])
    assert mm.empty_bars(gap) == pytest.approx(1 / 3)
    assert mm.note_density(gap) == pytest.approx(1.0)
    assert mm.mean_ioi(gap) == pytest.approx(4.0)  # onsets 0, 1, 8
    # eight quarter notes fill two bars of 4/4 but spill into a third bar of 3/4 (or 6/8)
    eight = melody(C_MAJOR)
    assert mm.note_density(score_of(eight, signature=(4, 4))) == 4.0
    assert mm.note_density(score_of(eight, signature=(3, 4))) == pytest.approx(8 / 3)
    assert mm.note_density(score_of(eight, signature=(6, 8))) == pytest.approx(8 / 3)
    assert mm.empty_bars(score_of(eight, signature=(3, 4))) == 0.0
    # a piece starting late spans only its own bars
    assert mm.note_density(score_of(melody(C_MAJOR, start=8))) == 4.0


def test_units_drums_and_note_arrays():
    scale = melody(C_MAJOR)
    expected = mm.piece_features(score_of(scale))
    coarse = mm.piece_features(score_of(scale, tpq=8))  # the tick rate of a decoded REMI score
    with_drums = mm.piece_features(score_of(scale, drums=[(36, 0, 1), (42, 0.5, 0.5)]))
    for features in (coarse, with_drums, mm.piece_features(mm.note_array(score_of(scale)))):
        assert features.keys() == expected.keys()
        for name, value in expected.items():
            np.testing.assert_allclose(features[name], value)
    notes = mm.note_array(score_of(scale, drums=[(36, 0, 1)]))
    assert len(notes) == 9 and notes.drum.sum() == 1 and len(notes.pitched()) == 8
    assert np.all(np.diff(notes.start) >= 0)


def test_empty_piece():
    features = mm.piece_features(score_of([]))
    assert features["note_count"] == 0 and features["empty_bars"] == 1.0
    assert all(np.all(features[name] == 0) for name in mm.SCALAR_FEATURES if name != "empty_bars")
    assert mm.piece_features(Score(TPQ))["note_count"] == 0  # no track at all
    assert mm.piece_features(score_of([], drums=[(36, 0, 1)]))["note_count"] == 0  # drums only


# ---- set-level comparisons -------------------------------------------------------------------------------------
def random_pieces(count: int, seed: int, low: int, spread: int, notes: int = 16) -> list[Score]:
    rng = np.random.default_rng(seed)
    pieces = []
    for _ in range(count):
        pitches = low + rng.integers(0, spread + 1, size=notes)
        starts = np.cumsum(rng.choice([0.5, 1.0, 2.0], size=notes)) - 0.5
        pieces.append(score_of([(int(p), float(s), 1.0) for p, s in zip(pitches, starts)]))
    return pieces


def test_pitch_class_distance():
    c, fs = score_of([(60, 0, 1)]), score_of([(66, 0, 1)])
    assert mm.pitch_class_distance([c], [c]) == 0.0
    assert mm.pitch_class_distance([c], [fs]) == pytest.approx(1.0)  # nothing in common: 1 bit
    both = score_of([(60, 0, 1), (66, 0, 1)])
    assert mm.pitch_class_distance([c], [both]) == pytest.approx(mm.pitch_class_distance([both], [c]))
    # half the mass shared: JS = 1 - H(1/4, 3/4)/2... computed directly from the definition
    p, q = np.array([1.0, 0.0]), np.array([0.5, 0.5])
    m = (p + q) / 2
    expected = 0.5 * np.log2(1 / m[0]) + 0.5 * (0.5 * np.log2(0.5 / m[0]) + 0.5 * np.log2(0.5 / m[1]))
    assert mm.pitch_class_distance([c], [both]) == pytest.approx(expected)
    assert mm.pitch_class_distance([c], [score_of([])]) == 1.0  # a silent model
    assert mm.pitch_class_distance([score_of([])], [score_of([])]) == 0.0


def test_overlapped_area_of_like_and_unlike_sets():
    real = mm.set_features(random_pieces(20, seed=0, low=48, spread=24))
    same = mm.compare_features(real, real)
    assert same["oa_mean"] > 0.85 and same["pitch_class_distance"] == 0.0
    alike = mm.music_scores(random_pieces(20, seed=0, low=48, spread=24), random_pieces(20, seed=1, low=48, spread=24))
    assert alike["oa/pitch_range"] > 0.6
    # generated pieces in a narrow low band: ranges near 2 against real ranges near 20
    narrow = mm.compare_features(real, mm.set_features(random_pieces(20, seed=2, low=30, spread=2)))
    assert narrow["oa/pitch_range"] < 0.05 and narrow["kl/pitch_range"] > 1.0
    assert narrow["oa_mean"] < alike["oa_mean"]
    assert narrow["pitch_range"] <= 2.0 and narrow["pitch_class_distance"] > alike["pitch_class_distance"]
    names = {f"{kind}/{name}" for kind in ("oa", "kl") for name in mm.SCALAR_FEATURES + mm.HISTOGRAM_FEATURES}
    assert names <= narrow.keys()
    assert all(math.isfinite(v) for v in narrow.values())


def test_overlap_of_point_masses_and_the_kde():
    assert mm.overlap(np.zeros(5), np.zeros(7)) == pytest.approx((1.0, 0.0), abs=1e-9)
    assert mm.overlap(np.full(3, 2.5), np.full(1, 2.5)) == pytest.approx((1.0, 0.0), abs=1e-9)
    area, kl = mm.overlap(np.zeros(5), np.ones(5))
    assert area < 1e-6 and math.isfinite(kl) and kl > 10
    # Scott's rule as scipy.stats.gaussian_kde has it: std (ddof 1) * n^(-1/5); 4^(-1/5) = 0.757858
    samples = np.array([0.0, 1.0, 2.0, 3.0])
    assert mm.bandwidth(samples, 0.0) == pytest.approx(np.sqrt(5 / 3) * 0.757858, rel=1e-6)
    assert mm.bandwidth(samples, 5.0) == 5.0 and mm.bandwidth(np.zeros(1), 0.1) == 0.1
    grid = np.linspace(-8, 8, 4001)  # one sample: the normal density
    np.testing.assert_allclose(mm.kde(np.zeros(1), 1.0, grid), np.exp(-grid**2 / 2) / np.sqrt(2 * np.pi), atol=1e-6)


def test_degenerate_sets_do_not_raise():
    scale, silent = score_of(melody(C_MAJOR)), score_of([])
    cases = [([], []), ([scale], []), ([], [scale]), ([scale], [scale]), ([silent], [silent]),
             ([scale, scale, scale], [scale, scale]), ([scale, silent], [silent]), ([silent, silent], [scale])]
    for real, fake in cases:
        scores = mm.music_scores(real, fake)
        assert all(math.isfinite(v) for v in scores.values()), (real, fake, scores)
        assert all(0.0 <= scores[f"oa/{n}"] <= 1.0 for n in mm.SCALAR_FEATURES + mm.HISTOGRAM_FEATURES)
    identical = mm.music_scores([scale] * 3, [scale] * 4)
    assert identical["oa_mean"] == pytest.approx(1.0) and identical["kl_mean"] == pytest.approx(0.0, abs=1e-9)
    assert mm.music_scores([scale], [])["empty_pieces"] == 1.0


def test_many_pieces_are_subsampled(monkeypatch):
    monkeypatch.setattr(mm, "MAX_DISTANCES", 100)
    pieces = [mm.note_array(p) for p in random_pieces(20, seed=3, low=48, spread=24, notes=4)]
    features = mm.set_features(pieces)
    assert len(mm.intra_distances(features["pitch_range"])) == 100  # 20 * 19 / 2 pairs > the cap
    assert len(mm.inter_distances(features["pitch_range"], features["pitch_range"])) == 100
    i, j = mm._pairs(20, None, np.random.default_rng(0))
    assert not np.any(i == j)  # a sampled intra-set pair never pairs a piece with itself
    first = mm.compare_features(features, features)
    assert first == mm.compare_features(features, features)  # seeded: the same scores every time


# ---- the scorer ------------------------------------------------------------------------------------------------
EOT, BAR = 0, 1


class FakeTokenizer:
    """Id 0 ends a piece, 1 is a bar line, and every other id k is a quarter note of pitch 50 + k."""

    eot_id = EOT

    def encode(self, text: str) -> list[int]:
        assert text == "Bar_None"
        return [BAR]

    def decode_score(self, ids) -> Score:
        assert EOT not in ids
        return score_of(melody([50 + i for i in ids if i != BAR]))


def fake_stream(pieces: int, length: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    parts = []
    for _ in range(pieces):
        body = rng.integers(2, 30, size=length)
        body[::8] = BAR
        parts += [EOT, *body]
    return np.asarray(parts, dtype=np.uint16)


def test_window_starts_split_pieces_and_prefer_openings():
    from genforge.evaluate.scorers.music import window_starts

    tokens = fake_stream(pieces=6, length=40)
    first, second = window_starts(tokens, EOT, BAR, n=5, seed=0, length=16)
    assert len(first) == len(second) == 5
    piece = lambda starts: set(np.searchsorted(np.flatnonzero(tokens == EOT), starts, side="right"))  # noqa: E731
    assert not piece(first) & piece(second)  # disjoint pieces
    assert all(tokens[s] == BAR for s in np.concatenate([first, second]))
    opened = len(piece(first))
    assert opened in (2, 3, 4) and np.all(tokens[first[:opened] - 1] == EOT)  # each piece's opening comes first
    assert len(piece(first)) + len(piece(second)) == 6
    ends = np.append(np.flatnonzero(tokens == EOT), len(tokens))
    assert all(ends[np.searchsorted(ends, s)] - s >= 16 for s in first)  # the rest fit inside their piece
    again = window_starts(tokens, EOT, BAR, n=5, seed=0, length=16)
    assert np.array_equal(again[0], first) and np.array_equal(again[1], second)
    one_piece = window_starts(fake_stream(1, 40), EOT, BAR, n=5, seed=0, length=16)
    assert min(len(one_piece[0]), len(one_piece[1])) == 0


def test_scorer_with_a_fake_evaluator(monkeypatch):
    from genforge.data.datasets import TextDataset
    from genforge.evaluate.scorers import music

    monkeypatch.setattr(music, "SAMPLE_TOKENS", 24)
    tokenizer = FakeTokenizer()
    val = TextDataset(fake_stream(pieces=12, length=60), block_size=16)

    class Family:
        device = torch.device("cpu")
        capabilities = ("sample", "likelihood")

        def log_likelihood(self, batch):
            return torch.full(batch["y"].shape, 2.0)

    def draw(family, amp_dtype, batch, prompt, max_new_tokens):
        assert prompt == [EOT] and max_new_tokens == 24
        rows = torch.from_numpy(fake_stream(pieces=4, length=max_new_tokens, seed=5).astype(np.int64))
        rows = rows.reshape(4, 1 + max_new_tokens)
        rows[0, 10:] = EOT  # a piece the model ended early
        return rows, 0.5

    from genforge.data.spec import DataSpec

    spec = DataSpec("music", (16,), vocab_size=30)  # event tokens
    evaluator = SimpleNamespace(prepared=SimpleNamespace(val=val, tokenizer=tokenizer, path=Path("entry-1"), spec=spec),
                                n=4, seed=0, data="fake", features_name="auto", draw=draw)
    scorer = music.MusicScorer(evaluator)
    metrics, sampling, examples = scorer.score(Family(), None)
    assert metrics["val_loss"] == pytest.approx(2.0)
    assert metrics["bits_per_event"] == pytest.approx(2.0 / math.log(2))
    assert {"pitch_class_distance", "oa_mean", "oa/pitch_range", "kl/ioi", "scale_consistency"} <= metrics.keys()
    assert all(math.isfinite(v) for v in metrics.values())
    assert sampling["unit"] == "tok" and examples == []
    first, second = scorer.real_pieces()
    assert len(first) == len(second) == 4
    assert all(len(mm.note_array(p)) > 10 for p in first)  # windows of 24 tokens, a bar token every 8
    reference = scorer.reference_metrics()
    assert reference is not None and reference.keys() == metrics.keys() - {"val_loss", "bits_per_event"}
    info = scorer.reference_info()
    assert info["split"] == "val" and info["pieces"] == 4 and info["entry"] == "entry-1"
    assert music.MusicScorer.extractor_name("auto", None) == "music"
    # 12 validation pieces of 8 bars cannot give two sets of 60 windows: no real-data row at that n
    assert music.MusicScorer(SimpleNamespace(**{**vars(evaluator), "n": 60})).reference_metrics() is None
