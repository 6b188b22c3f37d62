"""Every family overfits one clip of audio: trained on a single synthetic vowel as the whole training set,
its samples come back as that vowel. The image families learn it as a log-mel image, and their samples are
compared with it band by band in dB (``MelFormat``'s image: 32 frames x 64 mel bands at 8 kHz, 35 dB per
unit of [-1, 1], so one grey level is 0.27 dB); diffusion on waveforms (DiffWave) learns the samples
themselves, and its clips are heard through the same analysis; a transformer prior over a VQ-VAE's codes
redraws the clip's code grid, code for code.

What the dB figures mean, for the 0.5 s vowel (a pitch glide from 140 to 190 Hz): mean absolute error of the
clip's own log-mel image against its time-averaged spectrum (every frame the mean frame) 7.5 dB, against its
3 x 3 blur 4.8 dB, against the same vowel at a steady 165 Hz 9.2 dB, with the glide reversed 9.7 dB, another
vowel (/i/) 11.8 dB; Griffin-Lim (how a mel sample becomes sound) puts the clip's own image back at 1.1 dB.
Each mel family's samples must be closer than the blur; their clips, through Griffin-Lim, within 2.5 dB more.
Untrained (one step), every family draws 14.7-16 dB off. The thresholds sit 0.65-1 dB above the worst
sample measured over train.seed 0..3 (VAE, diffusion) or 0..2 (GAN), on one CPU thread.

Tiny counts: the training folder holds the clip four times with data.val_fraction 0.5, two copies in each
split, because a prior over codes needs more than one grid per split (the code set's windows are
data.block_size + 1 tokens, and data.block_size is at least one grid plus its end-of-text token).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch

import genforge
from genforge.config import DataConfig
from genforge.modalities import prepare

pytestmark = pytest.mark.usefixtures("one_thread")

RATE = 8000
SECONDS = 0.5  # 32 mel frames x 64 bands
MEL = [f"data.sample_rate={RATE}", f"data.clip_seconds={SECONDS}", "data.val_fraction=0.5", "train.sample_every=0",
       "train.grid_size=4", "train.ema_decay=0"]


def vowel(seconds: float, f0: tuple[float, float], attack: float = 0.0, release: float = 0.0) -> np.ndarray:
    """A sung /a/: the harmonics of f0 (Hz, gliding linearly from f0[0] to f0[1]) below Nyquist, weighted by
    three formants (700, 1220 and 2600 Hz), each at a fixed random phase; faded in over ``attack`` and out over
    ``release`` seconds; peak 0.9."""
    t = np.arange(round(seconds * RATE)) / RATE
    hz = np.linspace(*f0, len(t))
    phase = 2 * np.pi * np.cumsum(hz) / RATE
    harmonics = int(RATE / 2 / max(f0))
    offsets = np.random.default_rng(0).uniform(0, 2 * np.pi, harmonics)
    wave = np.zeros_like(t)
    for k in range(1, harmonics):
        gain = sum(1 / (1 + ((k * hz - centre) / width) ** 2) for centre, width in ((700, 130), (1220, 70), (2600, 160)))
        wave += gain * np.sin(k * phase + offsets[k])
    envelope = np.ones_like(t)
    if attack:
        envelope = np.minimum(envelope, t / attack)
    if release:
        envelope = np.minimum(envelope, ((seconds - t) / release).clip(0))
    wave *= envelope
    return (0.9 * wave / np.abs(wave).max()).astype(np.float32)


def write(path: Path, wave: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    soundfile.write(str(path), wave, RATE, subtype="PCM_16")
    return path


@pytest.fixture(scope="module")
def one_vowel(tmp_path_factory):
    """(source, the clip's log-mel image (1, 1, 32, 64) in [-1, 1], its MelFormat): a folder holding one vowel
    four times, so both splits are that vowel twice."""
    folder = tmp_path_factory.mktemp("one-vowel")
    wave = vowel(SECONDS, (140, 190), attack=0.03, release=0.15)
    for name in "abcd":
        write(folder / f"{name}.wav", wave)
    source = f"wav:{folder}"
    prepared = prepare(source, DataConfig(source=source, sample_rate=RATE, clip_seconds=SECONDS, val_fraction=0.5),
                       progress=False)
    assert prepared.manifest["sizes"] == {"train": 2, "val": 2} and prepared.spec.shape == (1, 32, 64)
    mel = prepared.tokenizer
    pcm = torch.from_numpy(soundfile.read(str(folder / "a.wav"), dtype="float32")[0])[None]
    image = mel.to_uint8(pcm)
    assert all(np.array_equal(stored, image[0]) for stored in prepared.train.images.numpy())  # the training set
    return source, torch.from_numpy(image).float() / 127.5 - 1, mel


def mel_error(images: torch.Tensor, clip: torch.Tensor, mel) -> torch.Tensor:
    """Each image's mean absolute difference from the clip's, in dB (the images' range is min_db..max_db)."""
    return (images.float() - clip).abs().mean(dim=(1, 2, 3)) * (mel.max_db - mel.min_db) / 2


def train(family: str, source: str, out: Path, steps: int, sets: list[str]) -> Path:
    genforge.train(family, source, out, steps=steps, progress=False, device="cpu", overrides=[*MEL, *sets])
    return out


def check_mel_samples(run: Path, clip: torch.Tensor, mel, image_db: float, **options) -> None:
    """Every sample's log-mel image within ``image_db`` of the clip's; the clips users hear (Griffin-Lim), read
    back as log-mels, within 2.5 dB more."""
    model = genforge.load(run, device="cpu")
    images, _ = model.sample_tensors(8, seed=0, **options)
    errors = mel_error(images, clip, mel)
    assert float(errors.max()) <= image_db, [round(float(e), 2) for e in errors]
    clips = model.sample(4, seed=0, **options)
    assert clips.shape == (4, int(RATE * SECONDS))
    heard = mel_error(mel.to_image(clips), clip, mel)
    assert float(heard.max()) <= image_db + 2.5, [round(float(e), 2) for e in heard]


def test_the_vae_overfits_one_vowel_and_every_sample_is_that_vowel(one_vowel, tmp_path):
    # A high learning rate with clipping, and the KL term weighted 8x: the posterior collapses onto the prior
    # and the decoder draws the clip from any latent. Worst of 8 samples, train.seed 0..3: 1.47 1.85 1.66 1.37 dB
    # (through Griffin-Lim 2.33 2.23 2.74 1.88); at kl_beta 4 one sample of seed 2 stayed 6.8 dB off at 200 steps.
    source, clip, mel = one_vowel
    run = train("vae", source, tmp_path / "vae", 150,
                ["model.width=8", "model.latent_dim=4", "model.kl_beta=8", "train.batch_size=2", "train.lr=0.03",
                 "train.warmup_steps=20", "train.grad_clip=1"])
    check_mel_samples(run, clip, mel, image_db=2.5)


def test_the_gan_overfits_one_vowel_and_every_sample_is_that_vowel(one_vowel, tmp_path):
    # As for the piano roll in test_music_overfit.py, a slower discriminator. Worst of 8 samples at 350 steps,
    # train.seed 0..2: 3.06 3.00 2.65 dB (through Griffin-Lim 4.93 4.90 4.04); at 250 steps 3.3-3.8 dB.
    source, clip, mel = one_vowel
    run = train("gan", source, tmp_path / "gan", 350,
                ["model.width=8", "model.latent_dim=16", "train.batch_size=8", "train.lr=0.01", "model.lr_disc=0.002"])
    check_mel_samples(run, clip, mel, image_db=4.0)


@pytest.mark.slow
def test_diffusion_overfits_one_vowel_and_every_sample_is_that_vowel(one_vowel, tmp_path):
    # x0 prediction at uniformly drawn timesteps (the clip is the net's answer at every noise level) and a
    # constant learning rate: worst of 8 samples (10 DDIM steps), train.seed 0..3: 2.05 2.43 2.24 2.47 dB (through
    # Griffin-Lim 2.81 2.75 3.46 2.77); 3.84 dB at 100 steps. At 150 steps the default recipe (EDM, log-normal
    # noise levels) drew 6.17 dB off, and the learning rate decayed to a tenth 2.96 dB.
    source, clip, mel = one_vowel
    run = train("diffusion", source, tmp_path / "diffusion", 150,
                ["model.base_channels=8", "model.channel_mults=[1,2,2]", "model.attention_resolutions=[]",
                 "model.prediction=x0", "model.noise_sampling=uniform", "train.batch_size=4", "train.lr=0.005",
                 "train.min_lr_ratio=1", "train.warmup_steps=10"])
    check_mel_samples(run, clip, mel, image_db=3.5, steps=10)


def test_waveform_diffusion_learns_one_vowel_and_its_samples_sound_like_it(tmp_path):
    """DiffWave on the samples themselves. The net sees no position but the clip's ends (zero padding), so it
    learns the vowel as a sound, not as a sequence of samples: the clip is a steady 160 Hz /a/ of 0.125 s (1,000
    samples), and its samples must put their power where the vowel's harmonics are (pitch), as loud as the
    vowel, with its formants (the spectral envelope across the harmonics).

    In the log-mel analysis (8 frames x 64 bands), the vowel's harmonic bands are those whose time-averaged power
    is within 20 dB of its loudest band's (26 of 64). Per sample: share, its mel power's share in those bands;
    level, its mean power there against the vowel's (dB); envelope, the mean absolute difference of its
    time-averaged band levels there from the vowel's once the level difference is taken out (dB). Measured
    (share, envelope): the vowel with white noise at 0.03 RMS 0.97, 0.1; the vowel at 150 or 170 Hz 0.66 / 0.65,
    5.4 / 5.5; other vowels at 160 Hz, /o/ 0.95, 7.3, /u/ 0.86, 9.4, /e/ 0.71, 8.7, /i/ 0.75, 13.4; white noise
    0.37, 4.2. Trained, worst of 8 samples for train.seed 0..3: share 0.92-0.94, envelope 3.2-3.9 dB, level -5.2
    to -0.2 dB (the x0-trained net's samples come out a little quiet); with the default uniform loss weighting
    the envelope was 4.7-6.7 dB at 150 steps, the weak harmonics under a noise floor (min-SNR weighting trains
    the low noise levels, where they are drawn). Untrained, it draws silence: level -50 dB, share 0.33."""
    clip = vowel(0.125, (160, 160))
    path = write(tmp_path / "vowel.wav", clip)
    source = f"wav:{path}"
    prepared = prepare(source, DataConfig(source=source, sample_rate=RATE, clip_seconds=0.125,
                                          representation="waveform"), progress=False)
    assert prepared.manifest["sizes"] == {"train": 1, "val": 0}
    pcm = torch.from_numpy(soundfile.read(str(path), dtype="float32")[0])[None]
    assert torch.equal(prepared.train.get(slice(0, 1))["x"][:, 0], pcm)  # the training set is that one clip
    run = tmp_path / "wave"
    genforge.train("diffusion", source, run, steps=200, progress=False, device="cpu",
                   overrides=[f"data.sample_rate={RATE}", "data.clip_seconds=0.125", "data.representation=waveform",
                              "train.sample_every=0", "train.grid_size=4", "train.ema_decay=0",
                              "model.residual_channels=8", "model.residual_layers=8", "model.dilation_cycle=8",
                              "model.prediction=x0", "model.noise_sampling=uniform", "model.loss_weighting=min_snr",
                              "train.batch_size=4", "train.lr=0.01", "train.min_lr_ratio=1", "train.warmup_steps=10"])
    model = genforge.load(run, device="cpu")
    samples = model.sample(8, seed=0, steps=20)
    assert samples.shape == (8, 1000)

    def power(waves: torch.Tensor) -> torch.Tensor:  # mel power, (n, frames, bands)
        return 10 ** (model.tokenizer.mel_db(waves).clamp_min(model.tokenizer.min_db) / 10)

    reference, drawn = power(pcm), power(samples)
    band_db = 10 * torch.log10(reference.mean(dim=1))  # (1, bands)
    harmonic = band_db[0] > band_db.max() - 20
    assert int(harmonic.sum()) == 26
    share = drawn[..., harmonic].sum(dim=(1, 2)) / drawn.sum(dim=(1, 2))
    offsets = (10 * torch.log10(drawn.mean(dim=1)) - band_db)[:, harmonic]  # (n, harmonic bands)
    level = 10 * torch.log10(drawn[..., harmonic].mean(dim=(1, 2)) / reference[..., harmonic].mean())
    envelope = (offsets - offsets.mean(dim=1, keepdim=True)).abs().mean(dim=1)
    numbers = {"share": share.tolist(), "level": level.tolist(), "envelope": envelope.tolist()}
    assert float(share.min()) >= 0.85 and float(level.abs().max()) <= 8, numbers
    assert float(envelope.max()) <= 5, numbers


def test_a_prior_over_vq_codes_redraws_the_vowel_code_for_code(one_vowel, tmp_path):
    """The VQ-VAE learns the vowel's log-mel image as an 8 x 16 grid of codes (12 or more of its 16 in use),
    reconstructed within 6 dB (train.seed 0..3: 3.92 3.89 2.97 4.94 dB; untrained 16.9); the transformer, trained
    on the grids, draws that grid exactly at temperature 0 (seeds 0..3 after 60 steps; one step, 12% of the
    codes), and mostly at temperature 1 (mean share of the grid's codes drawn right, 8 samples: 0.81 0.85 0.89
    0.86; one step 0.05). Its training windows start at the grids' end-of-text tokens (data.doc_starts=1), as
    its samples do, with learned positions: from windows at random offsets, where copies of the one grid follow
    each other, a 2-layer prior learnt to continue the copy before it (loss 0.08 at 150 steps) but not to start
    one (8% of the codes right at temperature 0)."""
    source, clip, mel = one_vowel
    vq = train("vqvae", source, tmp_path / "vqvae", 150,
               ["model.width=16", "model.num_codes=16", "model.res_blocks=1", "train.batch_size=4", "train.lr=0.01",
                "train.warmup_steps=10"])
    prior = tmp_path / "prior"
    genforge.train("transformer", f"codes:{vq}", prior, steps=60, progress=False, device="cpu",
                   overrides=["data.block_size=129", "data.doc_starts=1", "model.pos=learned", "model.n_layer=1",
                              "model.n_embd=32", "model.n_head=2", "train.batch_size=4", "train.warmup_steps=10",
                              "train.sample_every=0", "train.grid_size=4"])
    coder = genforge.load(vq, device="cpu")
    codes = coder.family.encode_codes(clip).reshape(-1)
    assert codes.shape == (128,) and len(set(codes.tolist())) >= 8
    recon = coder.family.reconstruct(clip)
    assert float(mel_error(recon, clip, mel)[0]) <= 6.0

    model = genforge.load(prior, device="cpu")
    tokens, _ = model.sample_tensors(4, seed=0, temperature=0.0)
    assert tokens.shape == (4, 129) and (tokens[:, 0] == 0).all()  # end-of-text, then the grid row by row
    assert torch.equal(tokens[:, 1:] - 1, codes.expand(4, -1)), (tokens[:, 1:] - 1 == codes).float().mean(1).tolist()
    tokens, _ = model.sample_tensors(8, seed=0, temperature=1.0)
    matching = (tokens[:, 1:] - 1 == codes).float().mean(1)
    assert float(matching.mean()) >= 0.7, matching.tolist()
    # what users hear from the prior is the VQ-VAE's rendering of the vowel
    clips = model.sample(2, seed=0, temperature=0.0)
    torch.testing.assert_close(clips, coder.codec.decode(recon.expand(2, -1, -1, -1)), atol=1e-3, rtol=0)
