"""The VAE family: shapes, the ELBO and its logs, overfitting a batch, reconstruction and seeded sampling."""

from __future__ import annotations

import pytest
import torch

from genforge.data.spec import DataSpec
from genforge.errors import ConfigError
from genforge.families.vae import VAE, VAEConfig

SHAPES = [(1, 28, 28), (1, 8, 8), (3, 32, 32), (3, 64, 64)]


pytestmark = pytest.mark.usefixtures("one_thread")


def make_vae(shape=(1, 28, 28), num_classes=None, **config) -> VAE:
    torch.manual_seed(0)
    config = {"latent_dim": 8, "width": 8, **config}
    spec = DataSpec("image", shape, num_classes=num_classes, class_names=[f"c{i}" for i in range(num_classes or 0)])
    return VAE(VAEConfig(**config), spec)


def fixed_batch(n: int = 8, size: int = 16) -> torch.Tensor:
    """Distinct bright rectangles on a dark ground, near-binary like digits."""
    x = -torch.ones(n, 1, size, size)
    for i in range(n):
        x[i, 0, i : i + size // 2, 2 * (i % 4) : 2 * (i % 4) + size // 3] = 1.0
    return x


def train(vae: VAE, batch: dict, steps: int, lr: float = 3e-3) -> list[float]:
    group = vae.optimizer_groups()["main"]
    opt = torch.optim.Adam(group.params + group.no_decay, lr=lr)
    vae.train()
    losses = []
    for _ in range(steps):
        (name, loss, _), = list(vae.training_step(batch))
        assert name == "main"
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


@pytest.mark.parametrize("shape", SHAPES)
def test_shapes_and_ranges(shape):
    vae = make_vae(shape)
    x = torch.rand(3, *shape) * 2 - 1
    mu, labels = vae.encode(x)
    assert mu.shape == (3, 8) and labels is None
    posterior_mu, logvar = vae.posterior(x)
    assert posterior_mu.shape == logvar.shape == (3, 8)
    for images in (vae.sample(2, generator=torch.Generator().manual_seed(0)), vae.decode(mu[:2]),
                   vae.reconstruct(x)[:2]):
        assert images.shape == (2, *shape) and images.dtype == torch.float32
        assert images.min() >= -1 and images.max() <= 1
    assert vae.sample(1).shape == (1, *shape)  # BatchNorm in eval mode: n=1 works
    (_, loss, logs), = list(vae.training_step({"x": x}))
    assert loss.dim() == 0 and torch.isfinite(loss)


@pytest.mark.parametrize("shape", [(1, 2, 2), (1, 28, 3), (1, 4096, 64), (8, 8)])
def test_sizes_that_cannot_work_raise(shape):
    with pytest.raises(ConfigError):
        make_vae(shape)


@pytest.mark.parametrize("config", [
    {"likelihood": "poisson"}, {"kl_beta": -1.0}, {"latent_dim": 0}, {"kl_beta": float("nan")},
    {"gaussian_variance": "per_pixel"}, {"gaussian_sigma": 0.0}, {"gaussian_sigma": float("inf")},
    {"kl_warmup_steps": -1}, {"free_bits": -0.5}, {"iwae_samples": 0},
])
def test_bad_config_raises(config):
    with pytest.raises(ConfigError):
        make_vae(**config)


@pytest.mark.parametrize("likelihood", ["bernoulli", "gaussian"])
def test_loss_is_the_negative_elbo_per_image(likelihood):
    vae = make_vae(likelihood=likelihood)
    (_, loss, logs), = list(vae.training_step({"x": torch.rand(4, 1, 28, 28) * 2 - 1}))
    assert set(logs) >= {"recon", "kl", "nelbo"}
    assert logs["kl"] > 0
    assert loss.item() == pytest.approx((logs["recon"] + logs["kl"]).item(), rel=1e-5)
    assert logs["nelbo"].item() == pytest.approx(loss.item(), rel=1e-5)
    if likelihood == "bernoulli":  # summed over 784 pixels, not averaged: at least log 2 nats per ambiguous pixel
        assert logs["recon"] > 784 * 0.3


def test_kl_beta_weights_only_the_kl_term():
    x = torch.rand(4, 1, 28, 28) * 2 - 1
    torch.manual_seed(1)
    (_, loss, logs), = list(make_vae(kl_beta=0.25).training_step({"x": x}))
    assert loss.item() == pytest.approx((logs["recon"] + 0.25 * logs["kl"]).item(), rel=1e-5)


@pytest.mark.parametrize("likelihood", ["bernoulli", "gaussian"])
def test_overfits_a_fixed_batch_and_reconstructs_it(likelihood):
    vae = make_vae((1, 16, 16), likelihood=likelihood)
    x = fixed_batch()
    losses = train(vae, {"x": x}, steps=200, lr=1e-2)
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    if likelihood == "bernoulli":
        assert last < 0.5 * first
    else:  # a density: the nats can go negative once sigma shrinks below the error
        assert last < first - 100
    error = (vae.reconstruct(x) - x).abs().mean().item()
    assert error < 0.15, error
    # a different batch is not reconstructed as well: the fit is to these images, not the identity
    other = -fixed_batch().flip(-1).transpose(-1, -2)
    assert (vae.reconstruct(other) - other).abs().mean().item() > 2 * error


def test_sampling_is_seeded_and_independent_of_the_batch():
    vae = make_vae((1, 16, 16))
    train(vae, {"x": fixed_batch()}, steps=3)  # moves BatchNorm's running statistics
    a = vae.sample(5, generator=torch.Generator().manual_seed(7))
    b = vae.sample(5, generator=torch.Generator().manual_seed(7))
    c = vae.sample(5, generator=torch.Generator().manual_seed(8))
    assert torch.equal(a, b)
    assert (a - c).abs().max() > 1e-3
    assert vae.training  # sampling restores the mode it found
    z = torch.randn(5, 8, generator=torch.Generator().manual_seed(7))  # sample draws z from N(0, I)
    assert torch.allclose(vae.decode(z), a, atol=1e-6)
    assert torch.allclose(vae.decode(z[:1]), a[:1], atol=1e-6)


def test_reconstruct_uses_the_posterior_mean():
    vae = make_vae((1, 16, 16))
    train(vae, {"x": fixed_batch()}, steps=3)
    x = fixed_batch()
    mu, _ = vae.encode(x)
    assert torch.equal(vae.reconstruct(x, generator=torch.Generator().manual_seed(0)), vae.decode(mu))
    assert torch.equal(vae.reconstruct(x), vae.reconstruct(x))
    with pytest.raises(ConfigError):
        vae.encode(torch.zeros(2, 1, 28, 28))
    with pytest.raises(ConfigError):
        vae.decode(torch.zeros(2, 3))


def test_class_conditional_prior():
    vae = make_vae((1, 16, 16), num_classes=4)
    x = fixed_batch()
    y = torch.arange(8) % 4
    train(vae, {"x": x, "y": y}, steps=30)
    # sample(label=k) decodes N(m_k, I): the class's learned prior mean plus the seeded noise
    eps = torch.randn(3, 8, generator=torch.Generator().manual_seed(5))
    expected = vae.decode(eps + vae.prior_means.weight[2].detach())
    assert torch.allclose(vae.sample(3, generator=torch.Generator().manual_seed(5), label="c2"), expected, atol=1e-6)
    assert (vae.sample(3, generator=torch.Generator().manual_seed(5), label=0) - expected).abs().max() > 1e-4
    assert vae.sample(3).shape == (3, 1, 16, 16)  # label=None: a random class each
    with pytest.raises(ConfigError):
        vae.sample(3, label=4)
    with pytest.raises(ConfigError):
        make_vae((1, 16, 16)).sample(3, label=0)  # no classes, no labels
    with pytest.raises(ConfigError):
        vae.sample(3, strength=0.5)
