"""Audio as a modality, end to end: `spoken-digits` and `wav:PATH` prepared as log-mel images or waveforms,
every family trained on them unchanged (diffusion on both, through DiffWave's 1-D denoiser on waveforms; the
transformer as a prior over a VQ-VAE's codes of mels), samples written as WAV files with spectrograms, clips
refined (inpainting, img2img, continuation), and scored by ear (the report plays them) and by number."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch
from clitools import invoke, one_error_line, run_main

import genforge
from genforge.config import DataConfig
from genforge.errors import ConfigError
from genforge.modalities import prepare

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module", autouse=True)
def quick_extractor():
    """The scorer's digit classifier trained for 40 steps, not 600: these tests check what is scored and how,
    not how well (the benchmark trains it fully). Its cache entry is keyed by its step count."""
    from genforge.evaluate import extractors

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(extractors, "TRAIN_STEPS", 40)
        yield

RATE, SECONDS, CLIPS = 8000, 0.75, 60  # small clips: 48 mel frames, 6,000 samples
DATA = [f"data.sample_rate={RATE}", f"data.clip_seconds={SECONDS}", f"data.clips={CLIPS}", "train.sample_every=0"]
WAVE = ["data.representation=waveform", "model.residual_channels=8", "model.residual_layers=4",
        "model.dilation_cycle=4"]
TINY = {"diffusion": ["model.base_channels=8", "model.channel_mults=[1,2]", "model.attention_resolutions=[]"],
        "gan": ["model.latent_dim=16", "model.width=8"],
        "vae": ["model.latent_dim=8", "model.width=8"],
        "vqvae": ["model.width=8", "model.num_codes=16", "model.res_blocks=1"]}


def digits(representation: str = "mel", clips: int = CLIPS):
    cfg = DataConfig(source="spoken-digits", representation=representation, sample_rate=RATE, clip_seconds=SECONDS,
                     clips=clips)
    return prepare("spoken-digits", cfg, progress=False)


def tone(path: Path, hz: float, seconds: float = SECONDS, rate: int = RATE, channels: int = 1) -> Path:
    t = np.arange(int(seconds * rate)) / rate
    wave = 0.5 * np.sin(2 * np.pi * hz * t) * np.minimum(1, 10 * t)
    path.parent.mkdir(parents=True, exist_ok=True)
    soundfile.write(str(path), np.repeat(wave[:, None], channels, axis=1), rate, subtype="PCM_16")
    return path


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Path:
    """Tiny runs of every family on spoken digits: mel diffusion, GAN, VAE, VQ-VAE and a prior over its codes,
    and waveform diffusion, each a few steps."""
    root = tmp_path_factory.mktemp("audio-runs")
    for family in ("diffusion", "gan", "vae", "vqvae"):
        genforge.train(family, "spoken-digits", root / family, steps=3, batch_size=8, progress=False,
                       overrides=DATA + TINY[family])
    genforge.train("diffusion", "spoken-digits", root / "wave", steps=3, batch_size=4, progress=False,
                   overrides=DATA + WAVE)
    genforge.train("transformer", f"codes:{root / 'vqvae'}", root / "prior", steps=3, batch_size=4, progress=False,
                   overrides=["data.block_size=256", "model.n_layer=1", "model.n_embd=32", "model.n_head=2",
                              "train.sample_every=0"])
    return root


# ---- data ----------------------------------------------------------------------------------------
def test_spoken_digits_prepare_as_mels_and_waveforms_with_labels():
    mel, wave = digits("mel"), digits("waveform")
    assert mel.spec.kind == "image" and mel.spec.shape == (1, 48, 64)
    assert wave.spec.kind == "waveform" and wave.spec.shape == (1, 6000)
    assert mel.spec.class_names == ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
    assert len(mel.train) + len(mel.val) == CLIPS == len(wave.train) + len(wave.val)
    labels = np.concatenate([mel.train.labels.numpy(), mel.val.labels.numpy()])
    assert np.bincount(labels).tolist() == [CLIPS // 10] * 10  # the first N clips are balanced
    x = wave.train.get(slice(0, 4))["x"]
    assert x.dtype == torch.float32 and x.shape == (4, 1, 6000) and x.abs().max() > 0.1
    # the same clips, two ways: the mel of a stored waveform is the stored mel (to one quantisation step)
    again = ((mel.tokenizer.to_image(x[:, 0]) + 1) * 127.5).round()
    stored = mel.train.images[:4].float()
    assert (again - stored).abs().max() <= 1
    assert digits("mel").path == mel.path  # cached


def test_wav_folder_labels_from_subfolders_and_a_single_file(tmp_path):
    for i in range(3):
        tone(tmp_path / "low" / f"{i}.wav", 200 + 10 * i, rate=16000, channels=2)
        tone(tmp_path / "high" / f"{i}.flac", 1500 + 10 * i, seconds=2.0, rate=44100)
    source = f"wav:{tmp_path}"
    prepared = prepare(source, DataConfig(source=source, sample_rate=RATE, clip_seconds=SECONDS, val_fraction=0.2),
                       progress=False)
    assert prepared.spec.class_names == ["high", "low"] and prepared.spec.shape == (1, 48, 64)
    assert {"resampled", "cut"} <= {word for note in prepared.manifest["notes"] for word in note.split()}
    one = f"wav:{tmp_path / 'low' / '0.wav'}"
    single = prepare(one, DataConfig(source=one, sample_rate=RATE, clip_seconds=SECONDS), progress=False)
    assert (len(single.train), len(single.val), single.spec.num_classes) == (1, 0, None)


def test_a_folder_of_bad_files_keeps_the_good_ones_and_names_the_rest(tmp_path):
    folder = tmp_path / "clips"
    tone(folder / "good.wav", 440)
    tone(folder / "eight-channels.wav", 330, channels=8)
    tone(folder / "hi-res.wav", 550, rate=192_000)
    (folder / "corrupt.wav").write_bytes(b"RIFF\x24\x00\x00\x00WAVEfmt garbage")
    (folder / "empty.wav").write_bytes(b"")
    soundfile.write(str(folder / "no-frames.wav"), np.zeros((0, 1)), RATE)
    soundfile.write(str(folder / "silent.wav"), np.zeros(RATE), RATE)
    source = f"wav:{folder}"
    with pytest.warns(UserWarning) as caught:
        prepared = prepare(source, DataConfig(source=source, sample_rate=RATE, clip_seconds=SECONDS), progress=False)
    assert len(prepared.train) + len(prepared.val) == 3
    said = " ".join(str(w.message) for w in caught)
    for name in ("corrupt.wav", "empty.wav", "no-frames.wav", "silent.wav"):
        assert name in said
    assert "from 8 channels" in said and "from 192000 Hz" in said


def test_bad_sources_and_settings_are_one_line_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "notes.txt").write_text("not audio")
    for argv in (["data", "prepare", f"wav:{tmp_path / 'empty'}"],
                 ["data", "prepare", "spoken-digits", "--sample-rate", "100"],
                 ["data", "prepare", "spoken-digits", "--clip-seconds", "0"],
                 ["data", "prepare", "spoken-digits", "--set", "data.representation=events2"],
                 ["data", "prepare", "spoken-digits", "--set", "data.clips=-1"],
                 ["data", "prepare", "mnist", "--sample-rate", "8000"]):
        one_error_line(run_main(*argv))
    with pytest.raises(ConfigError, match="does not handle audio data"):
        genforge.train("gan", "spoken-digits", tmp_path / "gan", steps=1, progress=False, overrides=DATA + WAVE[:1])


# ---- families and samples ------------------------------------------------------------------------
@pytest.mark.parametrize("family", ["diffusion", "gan", "vae", "wave", "prior"])
def test_every_family_writes_wav_clips_with_spectrograms(runs, family, tmp_path):
    model = genforge.load(runs / family)
    options = {"steps": 4} if family in ("diffusion", "wave") else {}
    paths = model.save_samples(3, tmp_path, seed=0, progress=False, **options)
    assert [p.name for p in paths] == ["000000.wav", "000001.wav", "000002.wav"]
    for path in paths:
        info = soundfile.info(str(path))
        assert (info.samplerate, info.frames, info.channels, info.subtype) == (RATE, int(RATE * SECONDS), 1, "PCM_16")
        audio, _ = soundfile.read(str(path))
        assert np.abs(audio).max() > 1e-3  # not silent
        assert path.with_suffix(".png").is_file()
    assert (tmp_path / "grid.png").is_file() and json.loads((tmp_path / "settings.json").read_text())["seed"] == 0
    # the same seed draws the same clips
    again = model.save_samples(3, tmp_path / "again", seed=0, progress=False, **options)
    assert [p.read_bytes() for p in again] == [p.read_bytes() for p in paths]


def test_training_grids_are_spectrograms_and_sound_and_the_report_plays_them(runs, tmp_path):
    run = runs / "vae"
    genforge.train(out=run, resume=True, steps=4, progress=False, overrides=["train.sample_every=4"])
    assert sorted(p.suffix for p in (run / "samples").glob("step_0000004.*")) == [".png", ".wav"]
    report = genforge.compare([run, runs / "wave"], out=tmp_path / "report.html", n=8, progress=False)
    page = Path(report).read_text()
    assert page.count("<audio") == 2 and page.count('src="data:audio/wav;base64,') == 2  # each run's latest grid
    assert "Audio: " in page and "classifier_score" in page


def test_waveform_inpainting_keeps_every_sample_outside_the_span(runs, tmp_path):
    source = tone(tmp_path / "in.wav", 440)
    out = tmp_path / "inpainted"
    done = run_main("refine", str(runs / "wave"), "--input", str(source), "--mask", "0.25-0.5", "-n", "2",
                    "--steps", "3", "--out", str(out))
    assert done.returncode == 0, done.stderr
    original, _ = soundfile.read(str(source), dtype="int16")
    lo, hi = int(0.25 * RATE), int(0.5 * RATE)
    for path in sorted(out.glob("0*.wav")):
        result, rate = soundfile.read(str(path), dtype="int16")
        assert rate == RATE and len(result) == len(original)
        assert np.array_equal(result[:lo], original[:lo]) and np.array_equal(result[hi:], original[hi:])
        assert not np.array_equal(result[lo:hi], original[lo:hi])
    assert (out / "comparison.png").is_file() and (out / "comparison.wav").is_file()


def test_mel_inpainting_keeps_the_frames_outside_the_span_and_img2img_runs(runs, tmp_path):
    model = genforge.load(runs / "diffusion")
    source = tone(tmp_path / "in.wav", 440)
    image = model.load_image(source)
    mask = model.load_mask("0.25-0.5")
    assert mask.shape == (1, 1, 48, 64) and mask[0, 0, :, 0].nonzero().flatten().tolist() == list(range(16, 32))
    out = model.inpaint(image, mask, n=2, seed=0, steps=3)
    keep = mask.expand_as(out) == 0
    assert torch.equal(out[keep], image.expand_as(out)[keep])
    done = run_main("refine", str(runs / "diffusion"), "--input", str(source), "--strength", "0.5", "-n", "2",
                    "--steps", "4", "--out", str(tmp_path / "img2img"))
    assert done.returncode == 0, done.stderr
    assert len(list((tmp_path / "img2img").glob("0*.wav"))) == 2


def test_bad_refine_inputs_are_one_line_errors(runs, tmp_path):
    corrupt = tmp_path / "bad.wav"
    corrupt.write_bytes(b"RIFF\x00\x00\x00\x00WAVEnot really")
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    good = tone(tmp_path / "in.wav", 440)
    for argv in (["--input", str(corrupt), "--strength", "0.5"],
                 ["--input", str(empty), "--strength", "0.5"],
                 ["--input", str(good), "--mask", "0.5-0.2"],
                 ["--input", str(good), "--mask", "1-2"],
                 ["--input", str(good), "--mask", "soon"]):
        one_error_line(run_main("refine", str(runs / "wave"), *argv, "--steps", "2"))


def test_a_prior_continues_a_clip_from_where_the_mask_begins(runs, tmp_path):
    model = genforge.load(runs / "prior")
    source = tone(tmp_path / "in.wav", 300)
    vq = model.data_model
    codes = vq.family.encode_codes(vq.load_image(source)).reshape(-1)
    tokens, prompt_len = model.sample_tensors(2, seed=0, prompt=str(source), mask="0.375-")
    rows, width = model.tokenizer.grid
    kept = (rows // 2) * width  # the first half of the grid's rows: the clip's first 0.375 s
    start = prompt_len + model.tokenizer.class_tokens
    assert tokens.shape == (2, start + rows * width)
    assert torch.equal(tokens[:, start:start + kept] - 1, codes[:kept].expand(2, -1))
    out = tmp_path / "continued"
    done = run_main("refine", str(runs / "prior"), "--input", str(source), "--mask", "0.375-", "-n", "2",
                    "--out", str(out))
    assert done.returncode == 0, done.stderr
    assert len(list(out.glob("0*.wav"))) == 2
    assert "run from where it takes over to the end" in one_error_line(
        run_main("refine", str(runs / "prior"), "--input", str(source), "--mask", "0.1-0.2"))


# ---- scores --------------------------------------------------------------------------------------
def test_audio_runs_are_scored_by_a_digit_classifier_random_features_and_mel_statistics(runs):
    result = genforge.evaluate(runs / "wave", n=10, progress=False)
    metrics = result["metrics"]
    assert {"fd", "classifier_score", "fd_random", "kid", "mel_distance", "mel_std_ratio", "silent"} <= set(metrics)
    assert 1 <= metrics["classifier_score"] <= 10
    assert result["modality"] == "audio" and result["extractor"]["name"] == "classifier"
    # a mel run and a waveform run of the same clips are scored with the same network, so they compare
    mel = genforge.evaluate(runs / "diffusion", n=10, progress=False)
    assert mel["extractor"]["fingerprint"] == result["extractor"]["fingerprint"]
    prior = genforge.evaluate(runs / "prior", n=10, progress=False)
    assert prior["modality"] == "audio" and "val_loss" in prior["metrics"] and "fd" in prior["metrics"]


def test_cli_end_to_end_on_a_wav_folder(tmp_path):
    for i in range(4):
        tone(tmp_path / "data" / "a" / f"{i}.wav", 220 + 20 * i)
        tone(tmp_path / "data" / "b" / f"{i}.wav", 880 + 20 * i)
    run = tmp_path / "run"
    invoke("train", "--family", "vae", "--data", f"wav:{tmp_path / 'data'}", "--out", run, "--steps", "2",
           "--sample-rate", str(RATE), "--clip-seconds", str(SECONDS), "--quiet", *sum((["--set", s] for s in
                                                                                      TINY["vae"] + ["train.sample_every=0"]), []))
    out = invoke("sample", run, "-n", "2", "--label", "b", "--out", tmp_path / "gen")
    assert "wrote 2 samples" in out
    info = json.loads(invoke("info", run, "--json"))
    assert info["data"]["modality"] == "audio" and info["data"]["writes"] == ".wav"
