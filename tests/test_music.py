"""Music as a modality, end to end: `music:PATH` and `bach` prepared into REMI event streams (split by piece,
training pieces transposed), the transformer trained on them unchanged, and samples written as .mid files
with a piano-roll .png (and a .wav with --audio)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from clitools import invoke, one_error_line, run_main
from symusic import Note, Score, Track

import genforge
from genforge.config import DataConfig
from genforge.errors import ConfigError
from genforge.modalities import prepare

pytestmark = pytest.mark.usefixtures("one_thread")

TPQ = 8


def melody(seed: int, bars: int = 4) -> Score:
    """A one-track piece of quarter notes in C major, different per seed."""
    rng = np.random.default_rng(seed)
    score, track = Score(TPQ), Track(name="melody", program=0)
    for beat in range(4 * bars):
        track.notes.append(Note(beat * TPQ, TPQ, int(rng.choice([60, 62, 64, 65, 67, 69, 71, 72])), 80))
    score.tracks.append(track)
    return score


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("music")
    for i in range(6):
        melody(i).dump_midi(str(folder / f"piece{i}.mid"))
    return folder


@pytest.fixture(scope="module")
def run(corpus, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("run") / "music"
    invoke("train", "--family", "transformer", "--data", f"music:{corpus}", "--out", path, "--steps", "4", "--quiet",
           "--set", "data.block_size=32", "--set", "model.n_layer=1", "--set", "model.n_embd=32",
           "--set", "model.n_head=2", "--set", "train.sample_every=0")
    return path


def stream_pieces(tokens: np.ndarray, eot: int) -> list[list[int]]:
    starts = np.flatnonzero(tokens == eot)
    return [tokens[a + 1:b].tolist() for a, b in zip(starts, [*starts[1:], len(tokens)])]


def test_pieces_are_split_whole_and_training_pieces_are_transposed(corpus):
    source = f"music:{corpus}"
    prepared = prepare(source, DataConfig(source=source, block_size=32, transpose=2), progress=False)
    tokenizer = prepared.tokenizer
    train = stream_pieces(np.asarray(prepared.train.tokens), tokenizer.eot_id)
    val = stream_pieces(np.asarray(prepared.val.tokens), tokenizer.eot_id)
    assert prepared.manifest["pieces"]["train"] + prepared.manifest["pieces"]["val"] == 6
    assert len(train) == 5 * prepared.manifest["pieces"]["train"] and len(val) == prepared.manifest["pieces"]["val"]
    originals = {i: tokenizer.encode_score(melody(i)) for i in range(6)}
    held_out = [i for i in range(6) if originals[i] in val]
    assert len(held_out) == len(val) >= 1  # held-out pieces are written once, untransposed
    for shift_group in (train[k:k + 5] for k in range(0, len(train), 5)):
        pitches = [sorted(n.pitch for n in tokenizer.decode_score(ids).tracks[0].notes) for ids in shift_group]
        for k, shifted in enumerate(pitches):  # -2 .. +2 semitones, in order
            assert shifted == [p + (k - 2) for p in pitches[2]]
        assert tokenizer.decode_score(shift_group[2]).tracks[0].notes[0].pitch in range(60, 73)
    assert all(originals[i] not in train for i in held_out)


def test_a_folder_skips_what_it_cannot_learn_from_and_names_it(tmp_path):
    folder = tmp_path / "mixed"
    folder.mkdir()
    melody(0).dump_midi(str(folder / "good.mid"))
    melody(1).dump_midi(str(folder / "good2.mid"))
    (folder / "corrupt.mid").write_bytes(b"MThd\x00\x00")
    drums = Score(TPQ)
    drums.tracks.append(Track(name="kit", program=0, is_drum=True))
    drums.tracks[0].notes.append(Note(0, TPQ, 36, 100))
    drums.dump_midi(str(folder / "drums.mid"))
    Score(TPQ).dump_midi(str(folder / "empty.mid"))
    source = f"music:{folder}"
    with pytest.warns(UserWarning, match="skipped 3 piece") as caught:
        prepared = prepare(source, DataConfig(source=source, block_size=16), progress=False)
    message = str(caught[0].message)
    assert "corrupt.mid" in message and "drums.mid (holds only drums)" in message and "empty.mid (has no notes)" in message
    assert sum(prepared.manifest["pieces"].values()) == 2


def test_new_runs_transpose_by_default_and_other_data_refuses_it():
    assert genforge.make_config("transformer", "bach").data.transpose == 3
    assert genforge.make_config("transformer", "pycode").data.transpose == 0
    with pytest.raises(ConfigError, match="applies to music sources"):
        prepare("digits", DataConfig(source="digits", transpose=2), progress=False)


def test_the_transformer_samples_midi_with_piano_rolls_and_audio(run, tmp_path):
    from symusic import Score as Loaded

    model = genforge.load(run, device="cpu")
    assert model.spec.modality == "music" and model.codec.suffix == ".mid"
    out = tmp_path / "out"
    invoke("sample", run, "-n", "2", "--seed", "3", "--audio", "--out", out)
    names = sorted(p.name for p in out.iterdir())
    assert names == ["000000.mid", "000000.png", "000000.wav", "000001.mid", "000001.png", "000001.wav", "grid.png",
                     "settings.json"]
    Loaded(str(out / "000000.mid"))  # a standard MIDI file
    again = tmp_path / "again"
    invoke("sample", run, "-n", "2", "--seed", "3", "--out", again)
    assert (again / "000001.mid").read_bytes() == (out / "000001.mid").read_bytes()  # seeded
    assert not list(again.glob("*.wav"))
    result = genforge.evaluate(run, n=3, progress=False, save=False, reference=True)
    assert result["modality"] == "music" and result["scorer"] == "music"
    assert {"bits_per_event", "pitch_class_distance", "oa_mean", "scale_consistency", "empty_pieces"} <= set(result["metrics"])


def test_continuation_keeps_the_given_melody_as_its_prefix(run, tmp_path):
    from symusic import Score as Loaded

    prompt = melody(7, bars=2)
    prompt.dump_midi(str(tmp_path / "melody.mid"))
    out = tmp_path / "cont"
    invoke("sample", run, "-n", "2", "--prompt-file", tmp_path / "melody.mid", "--max-new-tokens", "24", "--out", out)
    given = [(n.time, n.duration, n.pitch) for n in prompt.tracks[0].notes]
    for path in sorted(out.glob("*.mid")):
        notes = sorted((n.time, n.duration, n.pitch) for t in Loaded(str(path)).tracks for n in t.notes)
        assert notes[:len(given)] == given  # the tokenizer's grid is the prompt's (8 a beat)
    refined = tmp_path / "refined"
    invoke("refine", run, "--input", tmp_path / "melody.mid", "-n", "2", "--out", refined)
    assert sorted(p.name for p in refined.glob("*.mid")) == ["000000.mid", "000001.mid"]
    first = sorted((n.time, n.duration, n.pitch) for t in Loaded(str(refined / "000000.mid")).tracks for n in t.notes)
    assert first[:len(given)] == given
    model = genforge.load(run, device="cpu")
    assert model.offers("continue")
    from_memory = model.sample(2, seed=0, prompt=prompt, max_new_tokens=24)
    from_file = model.sample(2, seed=0, prompt=tmp_path / "melody.mid", max_new_tokens=24)
    assert [s.dumps_midi() for s in from_memory] == [s.dumps_midi() for s in from_file]


def test_the_transformer_overfits_one_piece_and_plays_it_back(tmp_path):
    import json

    scale = Score(TPQ)  # two octaves of C major up, in quarter notes: each pitch follows from the one before
    scale.tracks.append(Track(name="scale", program=0))
    for i, pitch in enumerate([60, 62, 64, 65, 67, 69, 71, 72, 74, 76, 77, 79, 81, 83, 84, 86]):
        scale.tracks[0].notes.append(Note(i * TPQ, TPQ, pitch, 80))
    folder = tmp_path / "one"
    folder.mkdir()
    for name in ("a.mid", "b.mid"):  # the same piece twice: one in each split
        scale.dump_midi(str(folder / name))
    run = tmp_path / "overfit"
    genforge.train("transformer", f"music:{folder}", run, steps=80, progress=False, device="cpu",
                   overrides=["data.block_size=64", "data.transpose=0", "model.n_layer=1", "model.n_embd=64",
                              "model.n_head=2", "train.lr=0.01", "train.warmup_steps=5", "train.batch_size=8", "train.sample_every=0",
                              "train.log_every=10"])
    losses = [json.loads(line)["main/loss"] for line in (run / "metrics.jsonl").read_text().splitlines()
              if "main/loss" in line]
    assert losses[0] > 1 and losses[-1] < losses[0] / 5, losses
    model = genforge.load(run, device="cpu")
    (piece,) = model.sample(1, seed=0, temperature=0, max_new_tokens=len(model.tokenizer.encode_score(scale)) + 1)
    assert [(n.time, n.duration, n.pitch) for n in piece.tracks[0].notes] == [(n.time, n.duration, n.pitch)
                                                                             for n in scale.tracks[0].notes]


@pytest.mark.parametrize("family, sets", [("vae", ["model.width=8", "model.latent_dim=4"]),
                                          ("gan", ["model.width=8"]),
                                          ("diffusion", ["model.base_channels=8", "model.sample_steps=2"])])
def test_image_families_learn_piano_rolls_of_the_same_source(corpus, tmp_path, family, sets):
    from genforge.data.music_rolls import RollFormat

    assert genforge.make_config(family, f"music:{corpus}").data.representation == "pianoroll"
    run = tmp_path / family
    invoke("train", "--family", family, "--data", f"music:{corpus}", "--out", run, "--steps", "2", "--quiet",
           "--set", "train.sample_every=0", "--set", "train.batch_size=8", *[x for kv in sets for x in ("--set", kv)])
    model = genforge.load(run, device="cpu")
    assert model.spec.modality == "music" and model.spec.shape == (2, 64, 64)
    invoke("sample", run, "-n", "2", "--out", tmp_path / "out")
    assert sorted(p.name for p in (tmp_path / "out").glob("*.mid")) == ["000000.mid", "000001.mid"]
    result = genforge.evaluate(run, n=2, progress=False, save=False)
    assert {"pitch_class_distance", "oa_mean", "empty_pieces"} <= set(result["metrics"])
    refine_a_phrase(family, run, corpus, tmp_path)
    rolls = RollFormat()  # a piece on the grid comes back from its roll note for note
    piece = melody(3)
    (segment,) = rolls.segments(piece)
    back = rolls.decode(segment.astype(np.float32) / 127.5 - 1)
    def beats(score):
        q = score.ticks_per_quarter
        return [(n.time / q, n.duration / q, n.pitch) for t in score.tracks for n in t.notes]

    assert beats(back) == beats(piece)


def onsets(score, bars: range, steps_per_bar: int = 16) -> list[tuple[float, float, int]]:
    """(beat, length in beats, pitch) of the notes that start in ``bars`` (counted from 1)."""
    q = score.ticks_per_quarter
    return sorted((n.time / q, n.duration / q, n.pitch) for t in score.tracks for n in t.notes
                  if int(n.time / q // 4) + 1 in bars)


def refine_a_phrase(family: str, run: Path, corpus: Path, tmp_path: Path) -> None:
    """`genforge refine` on a piano-roll run: a piece is its first four bars; VAE and GAN draw variations of it
    and walk to another (the walk also written as one piece); diffusion regenerates chosen bars, keeping the
    others note for note, or redraws it (img2img)."""
    from symusic import Score as Loaded

    given = Loaded(str(corpus / "piece0.mid"))
    out = tmp_path / f"{family}-refined"
    if family == "diffusion":
        invoke("refine", run, "--input", corpus / "piece0.mid", "--mask", "2-3", "-n", "2", "--steps", "2", "--out", out)
        for path in sorted(out.glob("0*.mid")):  # bars 1 and 4 kept (a note of bar 1 may go on into bar 2)
            assert [(b, p) for b, _, p in onsets(Loaded(str(path)), range(1, 2))] == [(b, p) for b, _, p in
                                                                                   onsets(given, range(1, 2))]
            assert onsets(Loaded(str(path)), range(4, 5)) == onsets(given, range(4, 5))
        invoke("refine", run, "--input", corpus / "piece0.mid", "--strength", "0.5", "-n", "2", "--steps", "2",
               "--out", tmp_path / "img2img")
        assert len(list((tmp_path / "img2img").glob("0*.mid"))) == 2
        assert "--mask on a music run names the bars" in one_error_line(
            run_main("refine", run, "--input", corpus / "piece0.mid", "--mask", "5", "--out", tmp_path / "x"))
        return
    steps = ["--steps", "3"] if family == "gan" else []  # a GAN inverts by optimisation: 3 steps, not 300
    invoke("refine", run, "--input", corpus / "piece0.mid", "-n", "2", *steps, "--out", out)
    assert sorted(p.name for p in out.glob("*.mid")) == ["000000.mid", "000001.mid"]
    assert (out / "reconstruction" / "000000.mid").is_file() and (out / "comparison.png").is_file()
    walk = tmp_path / f"{family}-walk"
    invoke("refine", run, "--input", corpus / "piece0.mid", "--towards", corpus / "piece1.mid", "-n", "3", *steps,
           "--out", walk)
    pieces = [Loaded(str(walk / f"{i:06d}.mid")) for i in range(3)]
    joined = Loaded(str(walk / "comparison.mid"))  # the input's phrase, then the walk, played through
    beats = [onsets(p, range(1, 5)) for p in [given, *pieces]]
    for k, notes in enumerate(beats):
        assert onsets(joined, range(4 * k + 1, 4 * k + 5)) == [(b + 16 * k, d, p) for b, d, p in notes]


def test_music_errors_are_one_line(corpus, run, tmp_path):
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "bad.mid").write_bytes(b"MThd not really a midi file")
    images = tmp_path / "img"
    invoke("train", "--family", "gan", "--data", "digits", "--out", images, "--steps", "1", "--quiet",
           "--set", "model.width=8", "--set", "train.sample_every=0")
    cases = [
        (["data", "prepare", f"music:{broken}"], "bad.mid"),
        (["data", "prepare", f"music:{tmp_path / 'nothing'}"], "does not exist"),
        (["sample", images, "--audio", "-n", "1", "--out", tmp_path / "x"], "--audio does not apply"),
        (["train", "--family", "transformer", "--data", f"music:{corpus}", "--out", tmp_path / "t",
          "--set", "data.transpose=40"], "data.transpose"),
        (["sample", run, "--prompt-file", broken / "bad.mid", "--out", tmp_path / "y"], "bad.mid"),
        (["sample", images, "--prompt-file", broken / "bad.mid", "--out", tmp_path / "z"], "--prompt-file applies to music"),
    ]
    for args, expected in cases:
        assert expected in one_error_line(run_main(*args)), args
    with pytest.raises(ConfigError, match="learns event tokens"):  # no piano roll to refine in an event run
        genforge.load(run, device="cpu").inpaint(corpus / "piece0.mid", "2")


def test_bach_is_built_in(monkeypatch, tmp_path):
    """The chorales from music21's corpus (two of them here: reading all of them takes minutes)."""
    from genforge.data import music

    pieces = list(music.bach_pieces(limit=2))
    monkeypatch.setattr(music, "bach_pieces", lambda limit=None: iter(pieces))
    monkeypatch.setenv("GENFORGE_CACHE", str(tmp_path))  # a two-piece "bach" must not stand in the shared cache
    prepared = prepare("bach", DataConfig(source="bach", block_size=64, transpose=1), progress=False)
    assert prepared.spec.modality == "music"
    counts = prepared.manifest["pieces"]
    assert counts == {"train": 1, "val": 1}


def test_key_labels_follow_every_transposition_and_choose_the_key_of_samples(corpus, tmp_path):
    """data.labels=key: each piece's key (data/music_keys.py) after its end-of-piece token, or beside each of its
    piano-roll segments; a transposed copy carries its own key; `--label "D minor"` starts samples in it."""
    from genforge.data.music_keys import estimate_key, key_id, transpose_key

    source = f"music:{corpus}"
    events = prepare(source, DataConfig(source=source, block_size=32, transpose=1, labels="key"), progress=False)
    tokenizer = events.tokenizer
    assert tokenizer.keys and tokenizer.vocab_size == 280 + 24 == events.spec.vocab_size
    train = stream_pieces(np.asarray(events.train.tokens), tokenizer.eot_id)
    for group in (train[k:k + 3] for k in range(0, len(train), 3)):  # -1, 0, +1 semitones of one piece
        keys = [ids[0] - tokenizer.key_token(0) for ids in group]
        assert keys == [transpose_key(keys[1], shift) for shift in (-1, 0, 1)]
        assert keys[1] == estimate_key(tokenizer.decode_score(group[1][1:]))
    rolls = prepare(source, DataConfig(source=source, representation="pianoroll", transpose=1, labels="key"),
                    progress=False)
    assert rolls.spec.num_classes == 24 and rolls.spec.class_names[key_id("D minor")] == "D minor"
    labels = np.asarray(rolls.train.labels).tolist()  # one four-bar segment per piece and shift
    assert len(labels) == len(train) and labels == [transpose_key(labels[k + 1], shift)
                                                    for k in range(0, len(labels), 3) for shift in (-1, 0, 1)]
    assert labels[1::3] == [ids[0] - tokenizer.key_token(0) for ids in train[1::3]]

    run = tmp_path / "keyed"
    invoke("train", "--family", "transformer", "--data", source, "--out", run, "--steps", "2", "--quiet",
           "--set", "data.labels=key", "--set", "data.block_size=32", "--set", "model.n_layer=1",
           "--set", "model.n_embd=32", "--set", "model.n_head=2", "--set", "train.sample_every=0")
    model = genforge.load(run, device="cpu")
    tokens, prompt_len = model.sample_tensors(2, seed=0, label="d minor", max_new_tokens=4)
    assert prompt_len == 2 and tokens[:, :2].tolist() == [[tokenizer.eot_id, tokenizer.key_token(14)]] * 2
    prompted, _ = model.sample_tensors(1, seed=0, prompt=melody(2), max_new_tokens=4)  # a prompt's own key
    assert prompted[0, 1] == tokenizer.key_token(estimate_key(melody(2)))
    invoke("sample", run, "-n", "1", "--label", "Eb major", "--max-new-tokens", "8", "--out", tmp_path / "eb")
    assert '"label": "Eb major"' in (tmp_path / "eb" / "settings.json").read_text()
    assert "key name 'H major' is not a key" in one_error_line(
        run_main("sample", run, "--label", "H major", "--out", tmp_path / "h"))


def test_a_run_can_learn_from_the_first_pieces_and_its_report_plays_a_sample(corpus, run, tmp_path):
    source = f"music:{corpus}"
    some = prepare(source, DataConfig(source=source, block_size=32, pieces=3), progress=False)
    assert sum(some.manifest["pieces"].values()) == 3
    with pytest.raises(ConfigError, match="data.pieces"):
        prepare(source, DataConfig(source=source, pieces=-1), progress=False)
    assert "takes no --label" in one_error_line(run_main("sample", run, "--label", "C major", "--out", tmp_path / "x"))
    report = genforge.compare([run], tmp_path / "report.html", n_text=2, progress=False)
    html = report.read_text()
    assert html.count('<audio controls') == 1 and "data:audio/wav;base64," in html and "media-src data:" in html
    assert (run / "samples").glob("step_*.mid")
