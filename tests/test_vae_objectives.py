"""The VAE's objectives and likelihood: analytic KL, decoder log-densities, the importance-weighted bound,
beta / KL warm-up / free bits, each variant overfitting a tiny batch, and the latent contract."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from torch.distributions import Bernoulli, Normal

import genforge.families.vae as vae_module
from genforge.data.spec import DataSpec
from genforge.errors import ConfigError
from genforge.families.vae import (
    VAE,
    VAEConfig,
    free_bits_kl,
    kl_divergence,
    kl_divergence_per_dim,
)

pytestmark = pytest.mark.usefixtures("one_thread")


def make_vae(shape=(1, 16, 16), num_classes=None, **config) -> VAE:
    torch.manual_seed(0)
    config = {"latent_dim": 4, "width": 8, **config}
    spec = DataSpec("image", shape, num_classes=num_classes, class_names=[f"c{i}" for i in range(num_classes or 0)])
    return VAE(VAEConfig(**config), spec)


def fixed_batch(n: int = 8, size: int = 16) -> torch.Tensor:
    """Distinct bright rectangles on a dark ground, with a little grey so binarising matters."""
    x = -torch.ones(n, 1, size, size)
    for i in range(n):
        x[i, 0, i : i + size // 2, 2 * (i % 4) : 2 * (i % 4) + size // 3] = 0.8
    x[:, :, -1, :] = -0.3  # a grey bottom row: dark once binarised
    return x


def train(vae: VAE, batch: dict, steps: int, lr: float = 1e-2) -> list[float]:
    group = vae.optimizer_groups()["main"]
    opt = torch.optim.Adam(group.params + group.no_decay, lr=lr)
    vae.train()
    losses = []
    for _ in range(steps):
        (_, loss, _), = list(vae.training_step(batch))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.fixture(scope="module")
def trained():
    """A small binarising Bernoulli VAE fitted for 100 steps to 8 images (about 2 s)."""
    vae = make_vae(binarize=True)
    train(vae, {"x": fixed_batch()}, steps=100)
    return vae.eval()


# ---- configuration ------------------------------------------------------------------------------------------

def test_old_configs_keep_their_meaning_and_new_runs_binarise():
    from genforge.api import make_config

    old = VAEConfig()  # a config.yaml without the new keys
    assert (old.binarize, old.gaussian_variance, old.gaussian_sigma) == (False, "learned", 0.1)
    assert (old.kl_beta, old.kl_warmup_steps, old.free_bits) == (1.0, 0, 0.0)
    # no new tensors for such runs: their model.safetensors loads as it did
    assert set(make_vae().state_dict()) == set(make_vae(binarize=True, free_bits=0.5, iwae_samples=5).state_dict())
    assert "kl_step" not in make_vae().state_dict() and "kl_step" in make_vae(kl_warmup_steps=3).state_dict()
    assert "log_sigma" in make_vae(likelihood="gaussian").state_dict()
    assert "log_sigma" not in make_vae(likelihood="gaussian", gaussian_variance="fixed").state_dict()
    model = make_config("vae", "mnist").model
    assert model["binarize"] is True and model["iwae_samples"] == 1000 and model["likelihood"] == "bernoulli"
    with pytest.raises(ConfigError, match="gaussian_variance"):  # checked when the model is built
        make_vae(**{**make_config("vae", "mnist", overrides=["model.gaussian_variance=pixel"]).model,
                    "latent_dim": 4, "width": 8})


# ---- the pieces of the ELBO ---------------------------------------------------------------------------------

def test_analytic_kl_equals_a_monte_carlo_estimate():
    g = gen(0)
    mu, logvar = torch.randn(4, 3, generator=g, dtype=torch.float64), torch.randn(4, 3, generator=g, dtype=torch.float64)
    prior = torch.randn(4, 3, generator=g, dtype=torch.float64)
    q, p = Normal(mu, (0.5 * logvar).exp()), Normal(prior, torch.ones_like(prior))
    z = q.sample((50_000,))
    log_ratio = (q.log_prob(z) - p.log_prob(z)).sum(-1)  # (N, 4): KL = E_q[log q - log p]
    estimate, stderr = log_ratio.mean(0), log_ratio.std(0) / math.sqrt(len(z))
    analytic = kl_divergence(mu, logvar, prior)
    assert ((estimate - analytic).abs() < 5 * stderr).all(), (estimate, analytic, stderr)  # 5 standard errors
    assert (stderr < 0.05 * analytic + 0.02).all()  # and the estimate is tight enough to mean something
    torch.testing.assert_close(analytic, torch.distributions.kl_divergence(q, p).sum(-1))
    assert (kl_divergence_per_dim(mu, logvar, prior) >= 0).all()


def test_log_densities_match_torch_distributions():
    out = torch.randn(3, 1, 16, 16, generator=gen(1)) * 3
    binary = torch.where(torch.rand(3, 1, 16, 16, generator=gen(2)) > 0.5, 1.0, -1.0)
    grey = torch.rand(3, 1, 16, 16, generator=gen(3)) * 2 - 1

    vae = make_vae(binarize=True)
    torch.testing.assert_close(vae.log_density(out, binary), Bernoulli(logits=out).log_prob((binary + 1) / 2))
    torch.testing.assert_close(vae.neg_log_likelihood(out, binary),
                               -Bernoulli(logits=out).log_prob((binary + 1) / 2).sum((1, 2, 3)))

    fixed = make_vae(likelihood="gaussian", gaussian_variance="fixed", gaussian_sigma=0.2)
    torch.testing.assert_close(fixed.log_density(out, grey), Normal(torch.tanh(out), 0.2).log_prob(grey))

    learned = make_vae(likelihood="gaussian")
    with torch.no_grad():
        learned.log_sigma.fill_(math.log(0.3))
    torch.testing.assert_close(learned.log_density(out, grey), Normal(torch.tanh(out), 0.3).log_prob(grey))
    # the mean images: sigmoid mapped to [-1, 1] for Bernoulli, tanh for Gaussian
    torch.testing.assert_close(vae.mean_image(out), 2 * torch.sigmoid(out) - 1)
    torch.testing.assert_close(learned.mean_image(out), torch.tanh(out))


def test_binarize_thresholds_each_image_at_zero():
    x = fixed_batch()
    binary = torch.where(x > 0, 1.0, -1.0)
    vae = make_vae(binarize=True)
    torch.testing.assert_close(vae.log_likelihood({"x": x}, generator=gen(0), samples=3),
                               vae.log_likelihood({"x": binary}, generator=gen(0), samples=3))
    torch.manual_seed(5)
    (_, a, _), = list(vae.training_step({"x": x}))
    torch.manual_seed(5)
    (_, b, _), = list(vae.training_step({"x": binary}))
    assert a.item() == b.item()
    torch.testing.assert_close(vae.encode(x)[0], vae.encode(binary)[0])
    grey = make_vae(binarize=False)  # older runs: grey levels as soft targets
    assert not torch.equal(grey.log_likelihood({"x": x}, generator=gen(0), samples=1),
                           grey.log_likelihood({"x": binary}, generator=gen(0), samples=1))
    gaussian = make_vae(likelihood="gaussian", binarize=True)  # binarize is a Bernoulli option only
    assert not torch.equal(gaussian.encode(x)[0], gaussian.encode(binary)[0])


# ---- the importance-weighted bound --------------------------------------------------------------------------

def iwae_by_hand(vae: VAE, x: torch.Tensor, y: torch.Tensor | None, k: int, generator, chunk: int) -> torch.Tensor:
    """-log mean_i p(x|z_i) p(z_i) / q(z_i|x) with torch.distributions, noise drawn ``chunk`` samples at a time."""
    with torch.no_grad():
        vae.eval()
        x = torch.where(x > 0, 1.0, -1.0)
        mu, logvar = vae.encoder(x).chunk(2, dim=1)
        logvar = logvar.clamp(-20, 10)
        q = Normal(mu, (0.5 * logvar).exp())
        prior = Normal(vae.prior_means.weight[y] if y is not None else torch.zeros_like(mu), 1.0)
        log_w = []
        for lo in range(0, k, chunk):
            eps = torch.randn((min(chunk, k - lo), *mu.shape), generator=generator)
            for e in eps:
                z = mu + e * q.scale
                log_px = Bernoulli(logits=vae.decoder(z)).log_prob((x + 1) / 2).sum((1, 2, 3))
                log_w.append(log_px + prior.log_prob(z).sum(1) - q.log_prob(z).sum(1))
        log_w = torch.stack(log_w).double()
    return -(torch.logsumexp(log_w, 0) - math.log(k))


@pytest.mark.parametrize("budget_images", [1, 2, 1000])  # decoder calls of 1 or 2 samples, or all 7 at once
def test_log_likelihood_is_the_iwae_bound_computed_in_chunks(monkeypatch, budget_images):
    vae = make_vae(num_classes=3, binarize=True)
    x, y = fixed_batch(6), torch.tensor([0, 1, 2, 0, 1, 2])
    train(vae, {"x": x, "y": y}, steps=10)
    monkeypatch.setattr(vae_module, "LIKELIHOOD_CHUNK_VALUES", budget_images * 6 * 256)
    got = vae.log_likelihood({"x": x, "y": y}, generator=gen(4), samples=7)
    expected = iwae_by_hand(vae, x, y, 7, gen(4), chunk=budget_images)
    torch.testing.assert_close(got.double(), expected, rtol=1e-5, atol=1e-3)
    assert got.shape == (6,) and got.dtype == torch.float32
    torch.testing.assert_close(got, vae.log_likelihood({"x": x, "y": y}, generator=gen(4), samples=7))  # seeded
    # the default k is the config's
    small = make_vae(binarize=True, iwae_samples=3)
    torch.testing.assert_close(small.log_likelihood({"x": x}, generator=gen(0)),
                               small.log_likelihood({"x": x}, generator=gen(0), samples=3))
    for bad in (0, 2.5, True):
        with pytest.raises(ConfigError, match="importance samples"):
            vae.log_likelihood({"x": x, "y": y}, samples=bad)


def test_k1_is_the_training_objectives_one_sample_negative_elbo(trained):
    x = fixed_batch()
    with torch.no_grad():
        torch.manual_seed(11)  # training draws its noise from the global generator
        _, _, logs = next(trained.training_step({"x": x}))
    one = trained.log_likelihood({"x": x}, generator=gen(11), samples=1)
    assert float(one.mean()) == pytest.approx(float(logs["nelbo"]), rel=1e-5)


def test_iwae_bound_tightens_with_k_and_stays_below_the_elbo(trained):
    x = fixed_batch()
    # each image repeated: independent estimates of the same 8 expectations, about 30,000 decodes in all
    repeats = {1: 200, 10: 50, 100: 10, 1000: 3}
    nll, stderr, spread = {}, {}, {}
    for k, r in repeats.items():
        est = trained.log_likelihood({"x": x.repeat(r, 1, 1, 1)}, generator=gen(k), samples=k).double().view(r, 8)
        assert (est >= 0).all()  # a discrete likelihood: p(x) <= 1
        nll[k] = float(est.mean())
        spread[k] = float(est.std(0).mean())  # over draws of one image, not over images
        stderr[k] = spread[k] / math.sqrt(r * 8)
    # E[NLL_k] is non-increasing in k: each step down holds within 3 standard errors of the difference
    ks = list(repeats)
    for small, large in itertools.pairwise(ks):
        assert nll[large] <= nll[small] + 3 * math.hypot(stderr[small], stderr[large]), (nll, stderr)
    # and k = 1000 is clearly tighter than the negative ELBO (the k = 1 average)
    assert nll[1000] < nll[1] - 3 * math.hypot(stderr[1], stderr[1000]), (nll, stderr)
    assert spread[1000] < 0.5 * spread[1], spread  # and steadier: a number worth reporting


# ---- beta, KL warm-up and free bits -------------------------------------------------------------------------

def test_kl_weight_follows_the_warmup_and_survives_a_state_dict_round_trip():
    vae = make_vae(kl_beta=0.5, kl_warmup_steps=10)
    batch = {"x": fixed_batch()}
    weights = []
    for _ in range(12):
        weights.append(float(vae.kl_weight()))
        train(vae, batch, steps=1)
    assert weights[0] == 0.0 and weights[5] == pytest.approx(0.25) and weights[10] == weights[11] == 0.5
    assert weights == sorted(weights)
    torch.manual_seed(3)
    (_, loss, logs), = list(vae.training_step(batch))  # step 12: the full beta
    assert loss.item() == pytest.approx((logs["recon"] + 0.5 * logs["kl"]).item(), rel=1e-5)
    assert float(logs["kl_weight"]) == 0.5
    # evaluation passes do not advance the schedule
    step = int(vae.kl_step)
    with torch.no_grad():
        list(vae.training_step(batch))
    vae.eval()
    list(vae.training_step(batch))
    assert int(vae.kl_step) == step
    # resume: the step count travels in the state dict
    fresh = make_vae(kl_beta=0.5, kl_warmup_steps=100)
    assert float(fresh.kl_weight()) == 0.0
    fresh.load_state_dict(vae.state_dict())
    assert int(fresh.kl_step) == step == 13 and float(fresh.kl_weight()) == pytest.approx(0.5 * 13 / 100)
    # at step 0 the loss is the reconstruction alone
    (_, loss, logs), = list(make_vae(kl_warmup_steps=5).training_step(batch))
    assert loss.item() == pytest.approx(logs["recon"].item(), rel=1e-6) and logs["kl"] > 0


def test_free_bits_floor_each_dimension_and_stop_its_gradient():
    kl_dims = torch.tensor([[0.1, 2.0, 0.4, 5.0], [0.3, 1.0, 0.4, 3.0]], requires_grad=True)  # batch means 0.2, 1.5, 0.4, 4
    penalty = free_bits_kl(kl_dims, 0.5)
    assert penalty.item() == pytest.approx(0.5 + 1.5 + 0.5 + 4.0)
    penalty.backward()
    assert torch.equal(kl_dims.grad, torch.tensor([[0.0, 0.5, 0.0, 0.5]] * 2))  # 1/B above the floor, 0 below


def test_free_bits_in_the_loss():
    x = fixed_batch()
    vae = make_vae()
    torch.manual_seed(0)
    mu, logvar = vae.posterior(x)  # train mode: batch statistics, as the step uses them
    means = kl_divergence_per_dim(mu, logvar, torch.zeros_like(mu)).mean(0).detach()
    floor = float(means.median())
    vae = make_vae(free_bits=floor)
    torch.manual_seed(7)
    (_, loss, logs), = list(vae.training_step({"x": x}))
    assert loss.item() == pytest.approx((logs["recon"] + means.clamp(min=floor).sum()).item(), rel=1e-5)
    assert logs["nelbo"].item() == pytest.approx((logs["recon"] + logs["kl"]).item(), rel=1e-6)  # the true bound
    assert loss.item() > logs["nelbo"].item()
    # a floor above every dimension's KL: the KL term is a constant, so with the same weights and noise
    # the encoder's gradient is the reconstruction's alone (as with no KL term at all)
    a, b = make_vae(free_bits=1e3), make_vae(kl_beta=0.0)
    torch.manual_seed(9)
    (_, la, logs), = list(a.training_step({"x": x}))
    assert la.item() == pytest.approx(logs["recon"].item() + 4 * 1e3, rel=1e-6)
    torch.manual_seed(9)
    (_, lb, _), = list(b.training_step({"x": x}))
    la.backward()
    lb.backward()
    torch.testing.assert_close(a.encoder.head.weight.grad, b.encoder.head.weight.grad)


VARIANTS = {
    "bernoulli": {"binarize": True},
    "bernoulli grey": {},
    "gaussian fixed": {"likelihood": "gaussian", "gaussian_variance": "fixed", "gaussian_sigma": 0.1},
    "gaussian learned": {"likelihood": "gaussian"},
    "beta warm-up free bits": {"binarize": True, "kl_beta": 4.0, "kl_warmup_steps": 20, "free_bits": 0.25},
}


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_each_variant_overfits_a_tiny_batch(variant):
    vae = make_vae(**VARIANTS[variant])
    x = fixed_batch()
    losses = train(vae, {"x": x}, steps=80)
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    assert last < first - 0.4 * abs(first), (first, last)
    target = torch.where(x > 0, 1.0, -1.0) if vae.binarize else x
    error = (vae.reconstruct(x) - target).abs().mean().item()
    assert error < 0.2, error


# ---- the latent contract ------------------------------------------------------------------------------------

@pytest.mark.parametrize("num_classes", [None, 3])
def test_sample_is_decode_of_sample_latents(num_classes):
    vae = make_vae(num_classes=num_classes)
    y = None if num_classes is None else torch.arange(8) % 3
    train(vae, {"x": fixed_batch(), **({} if y is None else {"y": y})}, steps=3)
    z = vae.sample_latents(5, gen(7))
    assert z.shape == (5, 4)
    torch.testing.assert_close(vae.sample(5, generator=gen(7)), vae.decode(z), rtol=0, atol=0)
    if num_classes:
        z2 = vae.sample_latents(5, gen(7), label="c2")
        torch.testing.assert_close(vae.sample(5, generator=gen(7), label="c2"), vae.decode(z2), rtol=0, atol=0)
        eps = torch.randn(5, 4, generator=gen(7))  # noise first, then the prior mean of the class
        torch.testing.assert_close(z2, eps + vae.prior_means.weight[2].detach())
        labels = vae.labels_for(6, None, gen(1))
        assert labels.shape == (6,) and labels.dtype == torch.long and 0 <= labels.min() and labels.max() < 3
        assert torch.equal(vae.labels_for(4, "c1", None), torch.ones(4, dtype=torch.long))
        with pytest.raises(ConfigError):
            vae.labels_for(2, 3, None)
    else:
        assert vae.labels_for(4, None, gen(1)) is None
        with pytest.raises(ConfigError):
            vae.labels_for(4, 1, None)
        with pytest.raises(ConfigError):
            vae.sample_latents(4, None, label=1)


def test_encode_gives_the_posterior_mean_and_no_labels():
    vae = make_vae(num_classes=3)
    x = fixed_batch()
    train(vae, {"x": x, "y": torch.arange(8) % 3}, steps=3)
    z, labels = vae.encode(x, label=1, generator=gen(0), steps=300, restarts=4)  # GAN inversion's options: unused
    assert labels is None and vae.training
    vae.eval()
    torch.testing.assert_close(z, vae.posterior(x)[0])
    torch.testing.assert_close(vae.decode(z, torch.zeros(8, dtype=torch.long)), vae.decode(z))  # labels not needed
    torch.testing.assert_close(vae.reconstruct(x), vae.decode(z))


def test_attribute_vector_is_the_difference_of_mean_latents(monkeypatch):
    vae = make_vae(num_classes=3)
    images = torch.arange(6 * 256, dtype=torch.float32).view(6, 1, 16, 16) / 1000 - 0.5
    # a toy encoder whose latent is the image's first 4 pixels
    monkeypatch.setattr(vae, "encode", lambda x, *a, **kw: (x.flatten(1)[:, :4], None))
    labels = torch.tensor([0, 0, 1, 1, 1, 2])
    vector = vae.attribute_vector(images, labels, source_label=0, target_label=1)
    first = images.flatten(1)[:, :4]
    torch.testing.assert_close(vector, first[2:5].mean(0) - first[:2].mean(0))
    assert vector.shape == (4,)
    # 256 pixels apart per image: the target's mean image index is 3, the source's 0.5
    torch.testing.assert_close(vector, torch.full((4,), 2.5 * 256 / 1000))
    torch.testing.assert_close(vae.attribute_vector(images, [0, 0, 1, 1, 1, 2], "c0", "c1"), vector)
    torch.testing.assert_close(vae.attribute_vector(images, labels, 1, 0), -vector)
    with pytest.raises(ConfigError, match="no image"):
        vae.attribute_vector(images, labels, 0, 7)
    with pytest.raises(ConfigError, match="one label per image"):
        vae.attribute_vector(images, labels[:3], 0, 1)


def test_attribute_vector_with_the_real_encoder():
    vae = make_vae()
    x = fixed_batch()
    labels = torch.tensor([0, 1] * 4)
    mu, _ = vae.encode(x)
    torch.testing.assert_close(vae.attribute_vector(x, labels, 0, 1), mu[1::2].mean(0) - mu[::2].mean(0))
