"""The VQ-VAE family and its vector quantizer: shapes, straight-through gradients, the EMA codebook rule,
dead-code restarts, codebook usage on real digits, overfitting, the code-grid round trip, the CLI."""

from __future__ import annotations

import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from genforge.cli import app
from genforge.modalities import prepare
from genforge.data.spec import DataSpec
from genforge.errors import ConfigError
from genforge.families import get_family
from genforge.families.vqvae import VQVAE, VQVAEConfig
from genforge.nets.quantize import VectorQuantizer, nearest_codes

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = {"width": 16, "num_codes": 16, "code_dim": 4, "res_blocks": 1}


def build(shape=(1, 8, 8), seed=0, **overrides) -> VQVAE:
    torch.manual_seed(seed)
    return VQVAE(VQVAEConfig(**{**TINY, **overrides}), DataSpec("image", shape, num_classes=10))


def train(model: VQVAE, batches, lr: float = 3e-3) -> list[dict[str, float]]:
    """Adam on the family's single phase; the logs of each step."""
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    history = []
    model.train()
    for batch in batches:
        (name, loss, logs), = list(model.training_step(batch))
        assert name == "main"
        opt.zero_grad()
        loss.backward()
        opt.step()
        history.append({k: float(v) for k, v in logs.items()})
    return history


# ---- the quantizer -------------------------------------------------------------------------------------------


def test_nearest_codes_matches_brute_force_also_when_chunked(monkeypatch):
    torch.manual_seed(0)
    flat, codebook = torch.randn(300, 5), torch.randn(40, 5)
    expected = torch.cdist(flat, codebook).argmin(dim=1)
    assert torch.equal(nearest_codes(flat, codebook), expected)
    monkeypatch.setattr("genforge.nets.quantize.DISTANCE_CHUNK", 100)  # 2 rows at a time
    assert torch.equal(nearest_codes(flat, codebook), expected)


def test_ema_update_follows_the_decay_rule_exactly():
    decay, eps = 0.9, 1e-5
    vq = VectorQuantizer(3, 2, decay=decay, eps=eps, restart_threshold=0.0)
    codebook = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    vq.codebook.copy_(codebook)
    vq.embed_sum.copy_(codebook * 2.0)
    vq.cluster_size.fill_(2.0)
    # three vectors near code 0, one near code 1, none near code 2; laid out as (B=1, D=2, 4 positions)
    vectors = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [9.0, 1.0]])
    z = vectors.T.reshape(1, 2, 4)
    vq.train()
    _, indices, _, stats = vq(z)
    assert indices.tolist() == [[0, 0, 0, 1]]

    counts = torch.tensor([3.0, 1.0, 0.0])
    sums = torch.stack([vectors[:3].sum(0), vectors[3], torch.zeros(2)])
    n_ema = decay * 2.0 + (1 - decay) * counts
    m_ema = decay * codebook * 2.0 + (1 - decay) * sums
    total = n_ema.sum()
    smoothed = (n_ema + eps) / (total + 3 * eps) * total
    assert torch.allclose(vq.cluster_size, n_ema)
    assert torch.allclose(vq.embed_sum, m_ema)
    assert torch.allclose(vq.codebook, m_ema / smoothed[:, None], atol=1e-6)
    # a used code moves toward the mean of its vectors
    mean0 = vectors[:3].mean(0)
    assert (vq.codebook[0] - mean0).norm() < (codebook[0] - mean0).norm()
    assert stats["usage"] == pytest.approx(2 / 3)
    p = torch.tensor([0.75, 0.25])
    assert stats["perplexity"] == pytest.approx(float(torch.exp(-(p * p.log()).sum())), rel=1e-5)
    assert stats["dead_restarts"] == 0

    # eval mode leaves the codebook alone
    before = vq.codebook.clone()
    vq.eval()
    vq(z)
    assert torch.equal(vq.codebook, before)


def restart_once() -> tuple[VectorQuantizer, torch.Tensor, torch.Tensor, dict]:
    """One training-mode call where every vector is nearest to code 0 and codes 1-7 go unused."""
    torch.manual_seed(0)
    vq = VectorQuantizer(8, 3, restart_threshold=1.0)
    vq.codebook.zero_()
    vq.codebook[0] = 5.0
    vq.embed_sum.copy_(vq.codebook)
    z = torch.randn(2, 3, 4, 4) + 5.0
    vq.train()
    _, indices, _, stats = vq(z)
    return vq, z, indices, stats


def test_unused_codes_are_restarted_to_encoder_outputs():
    vq, z, indices, stats = restart_once()
    assert (indices == 0).all()
    assert stats["dead_restarts"] == 7
    vectors = z.movedim(1, -1).reshape(-1, 3)
    for code in vq.codebook[1:]:  # each restarted code is one of this batch's vectors
        assert (vectors - code).abs().sum(dim=1).min() < 1e-6
    assert torch.equal(vq.cluster_size[1:], torch.ones(7))
    assert vq.cluster_size[0] >= 1  # code 0 was used: not restarted
    # restarts draw from the global RNG only: the same seed gives the same codebook
    assert torch.equal(restart_once()[0].codebook, vq.codebook)


def test_straight_through_gradient_and_bf16_autocast():
    torch.manual_seed(0)
    vq = VectorQuantizer(16, 4)
    z = torch.randn(2, 4, 3, 3, requires_grad=True)
    quantized, indices, loss, _ = vq(z)
    assert torch.allclose(quantized.detach(), vq.lookup(indices), atol=1e-6)  # z + (q - z), rounded
    quantized.sum().backward()
    assert torch.equal(z.grad, torch.ones_like(z))  # identity backward

    vq.eval()
    z16 = torch.randn(2, 4, 3, 3).bfloat16()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        quantized, indices, loss, _ = vq(z16)
    assert quantized.dtype == torch.float32 and loss.dtype == torch.float32
    assert torch.equal(indices, vq.quantize(z16.float()))


def test_quantizer_rejects_bad_settings():
    for kwargs in ({"decay": 1.0}, {"decay": 0.0}, {"commitment": -1.0}, {"eps": 0.0}, {"restart_threshold": -1.0}):
        with pytest.raises(ConfigError):
            VectorQuantizer(8, 4, **kwargs)


# ---- the family ----------------------------------------------------------------------------------------------


def test_registered():
    assert get_family("vqvae") is VQVAE


@pytest.mark.parametrize("shape, downsample, grid", [
    ((1, 8, 8), 2, (2, 2)),
    ((1, 28, 28), 2, (7, 7)),
    ((3, 32, 32), 2, (8, 8)),
    ((3, 20, 12), 3, (3, 2)),  # padded to 24 x 16, cropped back
])
def test_shapes(shape, downsample, grid):
    model = build(shape, downsample=downsample)
    assert model.code_grid == grid and model.num_codes == 16
    x = torch.rand(3, *shape) * 2 - 1
    (_, loss, logs), = list(model.training_step({"x": x}))
    assert loss.dim() == 0 and set(logs) >= {"recon", "perplexity", "usage", "dead_restarts"}
    codes = model.encode_codes(x)
    assert codes.shape == (3, *grid) and codes.dtype == torch.int64
    assert 0 <= int(codes.min()) and int(codes.max()) < 16
    images = model.decode_codes(codes)
    assert images.shape == (3, *shape) and images.abs().max() <= 1
    z, label = model.encode(x)
    assert z.shape == (3, 4, *grid) and label is None
    assert torch.equal(model.decode(z), images)
    assert torch.equal(model.reconstruct(x), images)
    assert model.sample(2, generator=torch.Generator().manual_seed(0)).shape == (2, *shape)


def test_parameter_count_at_mnist_size():
    model = VQVAE(VQVAEConfig(), DataSpec("image", (1, 28, 28)))
    assert model.code_grid == (7, 7)
    assert 200_000 < sum(p.numel() for p in model.parameters()) < 400_000  # 273,121 with the defaults


def test_straight_through_gradients_reach_the_encoder():
    model = build()
    x = torch.rand(4, 1, 8, 8) * 2 - 1
    z_q, _, _, _ = model.quantizer(model.encode_vectors(x))
    model.reconstruction_loss(model.decoder_output(z_q), x).backward()  # recon only, no commitment term
    first_conv = model.encoder.net[0]
    assert first_conv.weight.grad is not None and first_conv.weight.grad.abs().sum() > 0


def test_training_step_under_bf16_autocast():
    model = build()
    x = torch.rand(4, 1, 8, 8) * 2 - 1
    with torch.autocast("cpu", dtype=torch.bfloat16):
        (_, loss, _), = list(model.training_step({"x": x}))
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    loss.backward()
    assert model.encoder.net[0].weight.grad.abs().sum() > 0


def test_overfits_a_tiny_batch():
    """8 digits on a 4x4 grid of 16 codes: measured recon 0.60 -> 0.07 in 60 steps."""
    model = build(downsample=1)
    x = prepare("digits", progress=False).train.batch(8, torch.Generator().manual_seed(0))["x"]
    history = train(model, [{"x": x}] * 60, lr=1e-2)
    first, last = history[0]["recon"], history[-1]["recon"]
    assert last < 0.25 * first, (first, last)


@pytest.mark.parametrize("restart_threshold", [1.0, pytest.param(0.0, marks=pytest.mark.slow)])
def test_codebook_usage_after_a_short_run(restart_threshold):
    """150 steps on scikit-learn's digits, 32 codes on a 4x4 grid (1,024 vectors a batch). Measured on
    this setup: with restarts usage 0.97 and perplexity 24 of 32; without them usage 0.66, perplexity 17."""
    data = prepare("digits", progress=False)
    model = build(data.spec.shape, width=32, num_codes=32, code_dim=8, downsample=1,
                  restart_threshold=restart_threshold)
    batches = [data.train.batch(64, torch.Generator().manual_seed(step)) for step in range(150)]
    history = train(model, batches, lr=1e-3)
    last = history[-1]
    assert last["recon"] < 0.25 * history[0]["recon"]
    if restart_threshold:
        assert sum(h["dead_restarts"] for h in history) > 0
        assert last["usage"] >= 0.8 and last["perplexity"] >= 16, last
    else:
        assert last["usage"] < 0.8, last  # what restarts fix


def test_seeded_sampling_is_deterministic_and_rejects_conditions():
    model = build()
    a = model.sample(4, generator=torch.Generator().manual_seed(3))
    b = model.sample(4, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b)
    with pytest.raises(ConfigError):
        model.sample(2, label=3)


def test_bad_inputs_are_config_errors():
    model = build()
    with pytest.raises(ConfigError):
        model.decode_codes(torch.zeros(1, 3, 3, dtype=torch.long))
    with pytest.raises(ConfigError):
        model.decode_codes(torch.full((1, 2, 2), 16))
    with pytest.raises(ConfigError):
        model.encode_codes(torch.zeros(1, 1, 9, 9))
    with pytest.raises(ConfigError):
        build(downsample=4)  # 8 px halved four times
    with pytest.raises(ConfigError):
        build(recon_loss="l2")
    with pytest.raises(ConfigError, match="decoder_temperature"):
        build(decoder_temperature=-1.0)


def test_bernoulli_reconstruction_loss_trains():
    model = build(recon_loss="bernoulli", restart_threshold=0.0)
    x = (torch.rand(4, 1, 8, 8) > 0.5).float() * 2 - 1
    history = train(model, [{"x": x}] * 40)
    assert history[-1]["recon"] < history[0]["recon"]
    assert model.reconstruct(x).abs().max() < 1


def test_decoder_temperature_tempers_the_bernoulli_mean_only_when_shown():
    from genforge.api import make_config
    from genforge.families.vqvae import DECODER_TEMPERATURE_DEFAULT

    out = torch.randn(2, 1, 8, 8) * 3
    shown = {t: build(recon_loss="bernoulli", decoder_temperature=t).output_image(out) for t in (1.0, 0.7, 0.0)}
    torch.testing.assert_close(shown[1.0], 2 * torch.sigmoid(out) - 1)  # runs made before the option
    torch.testing.assert_close(shown[0.7], 2 * torch.sigmoid(out / 0.7) - 1)
    assert torch.equal(shown[0.0], torch.where(out > 0, 1.0, -1.0))
    mse = build(decoder_temperature=0.5)  # the Gaussian decoder's image is its output, whatever T says
    assert torch.equal(mse.output_image(out), out.clamp(-1, 1))
    x = (torch.rand(4, 1, 8, 8) > 0.5).float() * 2 - 1
    losses = [build(recon_loss="bernoulli", decoder_temperature=t).reconstruction_loss(out[:1].expand(4, -1, -1, -1), x)
              for t in (1.0, 0.7)]
    assert torch.equal(losses[0], losses[1])  # training never sees T
    assert VQVAEConfig().decoder_temperature == 1.0  # a config.yaml without the key
    assert make_config("vqvae", "digits").model["decoder_temperature"] == DECODER_TEMPERATURE_DEFAULT == 0.6


def test_cli_train_then_sample(tmp_path):
    runner = CliRunner()
    run = tmp_path / "run"
    result = runner.invoke(app, ["train", "--family", "vqvae", "--data", "digits", "--steps", "20", "--out", str(run),
                                 "--quiet", "--set", "train.log_every=10", "--set", "train.batch_size=16",
                                 "--set", "model.width=16"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    out = tmp_path / "out"
    result = runner.invoke(app, ["sample", str(run), "-n", "4", "--out", str(out)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    pngs = sorted(p.name for p in out.glob("*.png"))
    assert pngs == ["000000.png", "000001.png", "000002.png", "000003.png", "grid.png"]
    assert Image.open(out / "000000.png").size == (8, 8)
    metrics = (run / "metrics.jsonl").read_text()
    assert "main/usage" in metrics and "main/perplexity" in metrics

    from genforge.api import load

    model = load(run, device="cpu")
    x = prepare("digits", progress=False).train.batch(5, torch.Generator().manual_seed(0))["x"]
    assert torch.equal(model.family.decode_codes(model.family.encode_codes(x)), model.family.reconstruct(x))


def test_resume_repeats_the_codebook_exactly(tmp_path):
    """Restarts draw from the global RNG, which the trainer seeds per step: 3 + 3 resumed steps == 6 steps."""
    from safetensors.torch import load_file

    from genforge.api import train as train_run

    settings = {"overrides": ["model.width=16", "train.batch_size=16", "train.ckpt_every=3", "train.sample_every=0"],
                "progress": False}
    train_run("vqvae", "digits", tmp_path / "a", steps=6, **settings)
    train_run("vqvae", "digits", tmp_path / "b", steps=3, **settings)
    train_run(out=tmp_path / "b", steps=6, resume=True, progress=False)
    a, b = load_file(tmp_path / "a" / "model.safetensors"), load_file(tmp_path / "b" / "model.safetensors")
    assert a.keys() == b.keys() and "quantizer.codebook" in a
    assert all(torch.equal(a[k], b[k]) for k in a)
