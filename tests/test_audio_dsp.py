"""The spectrogram maths of the audio modality (genforge.data.audio_dsp): STFT, mel filterbank, clip -> image,
image -> spectrum -> clip (Griffin-Lim), and the format's checks and saving."""

import json
import math

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from genforge.data.audio_dsp import MelFormat, mel_centres, mel_filterbank
from genforge.errors import ConfigError, DataError

SR = 16000
FMT = MelFormat(SR, SR)  # one second at 16 kHz: hop 250, n_fft 1024, 64 frames x 64 bands
pytestmark = pytest.mark.usefixtures("one_thread")  # clips of a second: a second thread only waits on a busy machine
DEVICES = ["cpu"] + ([pytest.param("cuda", marks=pytest.mark.gpu)] if torch.cuda.is_available() else []) + (
    ["mps"] if torch.backends.mps.is_available() else [])


def seconds(n=SR, sr=SR):
    return torch.arange(n, dtype=torch.float32) / sr


def chirp(sr=SR, n=SR):
    """A logarithmic sweep 100 Hz -> 6 kHz under a Hann envelope, peak 0.8."""
    t = seconds(n, sr)
    f0, f1, length = 100.0, 6000.0, n / sr
    k = math.log(f1 / f0) / length
    return 0.8 * torch.sin(2 * math.pi * f0 * (torch.exp(k * t) - 1) / k) * torch.hann_window(n, periodic=False)


def harmonics(sr=SR, n=SR):
    """Eight harmonics of 220 Hz, 1/k loud, with a 5 ms attack and an exponential decay."""
    t = seconds(n, sr)
    tone = sum(0.3 / k * torch.sin(2 * math.pi * 220 * k * t) for k in range(1, 9))
    return tone * torch.exp(-3 * t) * (1 - torch.exp(-200 * t))


def spectral_convergence(fmt, y, target):
    return ((fmt.spectrogram(y) - target).norm(dim=(1, 2)) / target.norm(dim=(1, 2))).tolist()


def mel_error(fmt, x, y):
    """Mean |dB| between the (image-clipped) mels of x and y, in the bands of x at least 20 dB above min_db."""
    a = fmt.mel_db(x).clamp(fmt.min_db, fmt.max_db)
    b = fmt.mel_db(y).clamp(fmt.min_db, fmt.max_db)
    loud = a > fmt.min_db + 20
    return (a - b)[loud].abs().mean().item()


# ---- grid and STFT ------------------------------------------------------------------------------
def test_derived_sizes():
    assert (FMT.hop, FMT.n_fft, FMT.win_length, FMT.frames, FMT.shape) == (250, 1024, 1024, 64, (1, 64, 64))
    assert MelFormat(22050, 22050).n_fft == 2048 and MelFormat(22050, 22050).hop == 344
    assert MelFormat(8000, 8000).n_fft == 512


@pytest.mark.parametrize("sr", [8000, 16000, 22050, 44100])
def test_stft_round_trip_is_exact(sr):
    fmt = MelFormat(sr, sr)
    x = torch.rand(3, sr, generator=torch.Generator().manual_seed(sr)) * 2 - 1
    window = torch.hann_window(fmt.win_length, periodic=True)
    spec = torch.stft(x, fmt.n_fft, fmt.hop, window=window, center=True, return_complex=True)
    assert spec.shape[-1] == sr // fmt.hop + 1  # center=True: one frame more than the image keeps
    back = torch.istft(spec, fmt.n_fft, fmt.hop, window=window, center=True, length=sr)
    assert (back - x).abs().max() < 1e-5
    # the format's spectrogram is that STFT's first `frames` frames, scaled so that 1 is full scale
    assert torch.allclose(fmt.spectrogram(x), spec[..., :fmt.frames].abs() / window.sum(), rtol=1e-5, atol=1e-7)


def test_level_calibration():
    """A full-scale sine reads |X| = 1/2 at its bin (-6 dB); max_db = -10 leaves a 0.9-peak 1 kHz sine unclipped."""
    f = 40 * SR / FMT.n_fft  # exactly on bin 40
    spec = FMT.spectrogram(torch.sin(2 * math.pi * f * seconds()))
    assert abs(spec[40, 4:-4].mean().item() - 0.5) < 1e-3
    assert FMT.mel_db(0.9 * torch.sin(2 * math.pi * 1000 * seconds())).max() < FMT.max_db


# ---- filterbank -----------------------------------------------------------------------------------
@pytest.mark.parametrize("sr, n_fft, n_mels", [(16000, 1024, 64), (8000, 512, 32), (22050, 2048, 80),
                                               (44100, 4096, 128), (1000, 64, 16)])
def test_filterbank_shape_and_triangles(sr, n_fft, n_mels):
    fb = mel_filterbank(sr, n_fft, n_mels)
    assert fb.shape == (n_mels, n_fft // 2 + 1) and fb.dtype == torch.float32
    assert (fb >= 0).all()
    assert torch.allclose(fb.sum(dim=1), torch.ones(n_mels), atol=1e-5)  # unit area, measured on the bins
    for row in fb:
        support = torch.nonzero(row).flatten()
        assert (support.diff() == 1).all()  # one contiguous run of bins...
        steps = row[support[0]:support[-1] + 1].diff().sign()
        steps = steps[steps != 0]
        assert (steps.diff() <= 0).all()  # ...rising, then falling: one peak
    peaks = fb.argmax(dim=1)
    assert (peaks.diff() > 0).all()
    # the bands cover 0..sr/2: every bin between DC and Nyquist feeds some band, the outer edges are 0 and sr/2
    coverage = fb.sum(dim=0)
    assert (coverage[1:-1] > 0).all() and fb[0, 1] > 0 and fb[-1, -2] > 0
    centres = mel_centres(sr, n_mels)
    assert centres.shape == (n_mels,) and (np.diff(centres) > 0).all() and 0 < centres[0] < centres[-1] < sr / 2


@pytest.mark.parametrize("sr, n_mels", [(16000, 64), (22050, 80), (8000, 32)])
def test_sine_lights_the_band_nearest_its_frequency(sr, n_mels):
    """Sines at every band's centre, and a quarter of the way to each neighbour: the loudest band is that one."""
    fmt = MelFormat(sr, sr, n_mels=n_mels)
    centres = mel_centres(sr, n_mels)
    edges = np.concatenate([[0.0], centres, [sr / 2]])
    freqs = np.concatenate([centres, centres - 0.25 * (centres - edges[:-2]), centres + 0.25 * (edges[2:] - centres)])
    nearest = np.abs(centres[None, :] - freqs[:, None]).argmin(axis=1)
    assert (nearest == np.tile(np.arange(n_mels), 3)).all()
    t = seconds(sr, sr)
    sines = 0.5 * torch.sin(2 * math.pi * torch.tensor(freqs, dtype=torch.float32)[:, None] * t)
    loudest = fmt.to_image(sines)[:, 0].mean(dim=1).argmax(dim=-1).numpy()
    assert (loudest == nearest).all()


# ---- clip -> image --------------------------------------------------------------------------------
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(sr=st.integers(1000, 192000), n_mels=st.integers(8, 40), extra=st.integers(0, 3000),
       batch=st.integers(1, 3), amplitude=st.floats(0.0, 1.0), kind=st.sampled_from(["noise", "sine", "clicks"]),
       channel=st.booleans(), seed=st.integers(0, 2**16))
def test_to_image_range_and_shape(sr, n_mels, extra, batch, amplitude, kind, channel, seed):
    grid = MelFormat(sr, 10**6, n_mels=n_mels)  # for its hop and n_fft: the shortest clip allowed is the larger
    fmt = MelFormat(sr, max(grid.n_fft, 8 * grid.hop) + extra, n_mels=n_mels)
    g = torch.Generator().manual_seed(seed)
    n = fmt.clip_samples
    if kind == "noise":
        x = torch.rand(batch, n, generator=g) * 2 - 1
    elif kind == "sine":
        f = torch.rand(batch, 1, generator=g) * sr / 2
        x = torch.sin(2 * math.pi * f * seconds(n, sr))
    else:
        x = (torch.rand(batch, n, generator=g) < 0.001).float()
    x = amplitude * x
    image = fmt.to_image(x.unsqueeze(1) if channel else x)
    assert image.shape == (batch, *fmt.shape) and image.dtype == torch.float32
    assert image.min() >= -1 and image.max() <= 1
    assert fmt.mel_db(x).shape == (batch, fmt.frames, n_mels)


def test_silence_is_black_and_uint8_matches_the_image():
    assert (FMT.to_image(torch.zeros(2, SR)) == -1).all()
    assert (FMT.to_uint8(torch.zeros(1, SR)) == 0).all()
    x = torch.stack([chirp(), harmonics(), 0.05 * torch.randn(SR, generator=torch.Generator().manual_seed(0))])
    image = FMT.to_image(x)
    stored = FMT.to_uint8(x)
    assert stored.dtype == np.uint8 and stored.shape == (3, *FMT.shape)
    back = torch.from_numpy(stored).float() / 127.5 - 1
    assert (back - image).abs().max() <= 1 / 127.5 + 1e-6  # within one quantisation step
    from genforge.data.codecs import to_uint8  # the mapping every other image is stored with

    assert (to_uint8(image) == stored).all()
    # and the image range uses most of the grey levels on real-ish signals
    assert stored.max() > 200


def test_mel_db_follows_leading_dims_and_cleans_nonfinite():
    x = chirp()
    assert torch.allclose(FMT.mel_db(x), FMT.mel_db(x.expand(2, 3, SR))[1, 2], atol=1e-4)
    dirty = x.clone()
    dirty[100] = float("nan")
    dirty[200] = float("inf")
    assert FMT.to_image(dirty[None]).isfinite().all()
    # an empty batch is an empty answer, not a torch.stft error
    assert FMT.to_image(torch.zeros(0, SR)).shape == (0, *FMT.shape)
    assert FMT.griffin_lim(torch.zeros(0, *FMT.shape)).shape == (0, SR)


# ---- image -> spectrum -> clip --------------------------------------------------------------------
def test_magnitude_matches_the_image_bands():
    x = torch.stack([chirp(), harmonics(), 0.1 * torch.randn(SR, generator=torch.Generator().manual_seed(1))])
    image = FMT.to_image(x)
    mag = FMT.magnitude(image)
    assert mag.shape == (3, FMT.n_fft // 2 + 1, FMT.frames) and (mag >= 0).all()
    fb = mel_filterbank(SR, FMT.n_fft, FMT.n_mels)
    again = (10 * torch.log10((fb @ mag.square()).clamp_min(1e-10))).transpose(1, 2).clamp(FMT.min_db, FMT.max_db)
    want = FMT.mel_db(x).clamp(FMT.min_db, FMT.max_db)
    loud = want > FMT.min_db + 20
    err = (again - want)[loud].abs()
    assert err.mean() < 0.1 and err.quantile(0.99) < 1.0  # measured: 0.01 dB mean, 0.27 dB 99th percentile
    # uint8 images are read as u / 127.5 - 1
    assert torch.allclose(FMT.magnitude(torch.from_numpy(FMT.to_uint8(x))), FMT.magnitude(
        torch.from_numpy(FMT.to_uint8(x)).float() / 127.5 - 1))


def test_griffin_lim_converges_on_the_true_magnitude():
    x = torch.stack([chirp(), harmonics()])
    target = FMT.spectrogram(x)
    few, some, many = (spectral_convergence(FMT, FMT.magnitude_to_wave(target, iters=n), target) for n in (8, 32, 64))
    # measured: chirp 0.19 / 0.072 / 0.033, harmonics 0.23 / 0.14 / 0.12 (random phase alone: 0.62, 0.65)
    assert some[0] < 0.1 and some[1] < 0.2
    assert all(a > b > c for a, b, c in zip(few, some, many))


def test_griffin_lim_from_an_image():
    x = torch.stack([chirp(), harmonics()])
    image = FMT.to_image(x)
    y = FMT.griffin_lim(image)
    assert y.shape == (2, SR) and y.dtype == torch.float32 and y.abs().max() <= 1
    assert (y.square().mean(dim=1) > 0.1 * x.square().mean(dim=1)).all()  # not silent
    assert mel_error(FMT, x, y) < 2.0  # measured: 0.9 dB
    # deterministic for a seed, on its own or in any batch; another seed gives another phase
    assert torch.equal(y, FMT.griffin_lim(image))
    alone = FMT.griffin_lim(image[1:])
    assert torch.allclose(alone[0], y[1], atol=1e-4)
    assert not torch.allclose(FMT.griffin_lim(image, seed=1), y, atol=1e-3)
    assert (FMT.griffin_lim(torch.full((1, *FMT.shape), -1.0)) == 0).all()  # black is silence, not a hiss


@pytest.mark.parametrize("device", DEVICES)
def test_runs_on_the_inputs_device(device):
    x = torch.stack([chirp(), harmonics()])
    image = FMT.to_image(x.to(device))
    assert image.device.type == device
    assert torch.allclose(image.cpu(), FMT.to_image(x), atol=1e-3)
    y = FMT.griffin_lim(image, iters=4)
    assert y.device.type == device and y.dtype == torch.float32


def test_float32_under_autocast():
    """Inside a mixed-precision training step the maths stays float32 (-80 dB underflows in half precision)."""
    x = torch.stack([chirp(), harmonics()])
    image, magnitude = FMT.to_image(x), FMT.magnitude(FMT.to_image(x))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert torch.equal(FMT.to_image(x), image)
        assert torch.equal(FMT.magnitude(image), magnitude)


# ---- checks and saving ---------------------------------------------------------------------------
@pytest.mark.parametrize("kwargs, words", [
    (dict(sample_rate=0, clip_samples=16000), "sample_rate"),
    (dict(sample_rate=999, clip_samples=16000), "sample_rate"),
    (dict(sample_rate=192001, clip_samples=400000), "sample_rate"),
    (dict(sample_rate=16000.0, clip_samples=16000), "sample_rate"),
    (dict(sample_rate=True, clip_samples=16000), "sample_rate"),
    (dict(sample_rate=16000, clip_samples=1023), "clip_samples"),  # shorter than n_fft = 1024
    (dict(sample_rate=16000, clip_samples=1999), "frames"),  # 7 frames
    (dict(sample_rate=16000, clip_samples=16000, n_mels=1), "n_mels"),
    (dict(sample_rate=16000, clip_samples=16000, n_mels=300), "n_mels"),
    (dict(sample_rate=16000, clip_samples=16000, n_mels=256), "n_mels <= 227"),  # empty low bands
    (dict(sample_rate=1000, clip_samples=1000), "n_mels <= 47"),
    (dict(sample_rate=16000, clip_samples=16000, min_db=-10.0, max_db=-10.0), "min_db < max_db"),
    (dict(sample_rate=16000, clip_samples=16000, min_db=-120.0), "min_db"),
    (dict(sample_rate=16000, clip_samples=16000, max_db=float("nan")), "max_db"),
])
def test_bad_settings_raise_config_error(kwargs, words):
    with pytest.raises(ConfigError, match=words) as info:
        MelFormat(**kwargs)
    assert "\n" not in str(info.value) and "expected" in str(info.value)


def test_bad_inputs_raise_data_error():
    with pytest.raises(DataError, match="16000 samples"):
        FMT.to_image(torch.zeros(2, 15999))
    with pytest.raises(DataError, match="float"):
        FMT.to_image(torch.zeros(2, SR, dtype=torch.int16))
    with pytest.raises(DataError, match="batch"):
        FMT.to_image(torch.zeros(2, 2, SR))
    with pytest.raises(DataError, match="64, 64"):
        FMT.griffin_lim(torch.zeros(1, 1, 64, 32))
    with pytest.raises(DataError, match="513"):
        FMT.magnitude_to_wave(torch.zeros(1, 512, 64))
    with pytest.raises(ConfigError, match="iters"):
        FMT.griffin_lim(torch.zeros(1, *FMT.shape), iters=-1)
    with pytest.raises(ConfigError, match="fmin"):
        mel_filterbank(16000, 1024, 64, fmin=9000.0)


def test_dict_round_trip():
    fmt = MelFormat(22050, 44100, n_mels=80, min_db=-70.0, max_db=-5.0)
    d = json.loads(json.dumps(fmt.to_dict()))
    assert d["type"] == "melformat"
    assert MelFormat.from_dict(d) == fmt
    assert MelFormat.from_dict(FMT.to_dict()) == FMT
    assert json.dumps(MelFormat(np.int64(16000), np.int32(16000), min_db=np.float32(-80)).to_dict())  # plain numbers
    with pytest.raises(ConfigError, match="mel format"):
        MelFormat.from_dict({**d, "type": "pianoroll"})
    with pytest.raises(ConfigError, match="hop"):
        MelFormat.from_dict({**d, "hop": 100})
