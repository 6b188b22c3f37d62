"""The VAE's sample-quality options: the decoder temperature (``model.decoder_temperature``) and the
learned mixture prior (``model.prior_components``). Exact where there is a formula (the
prior's density against torch.distributions, its normalisation, the closed-form KL), behavioural
elsewhere (old configs unchanged, the option reachable from `genforge train --set`)."""

from __future__ import annotations

import pytest
import torch
from torch.distributions import Categorical, Independent, MixtureSameFamily, Normal

from genforge.data.spec import DataSpec
from genforge.errors import ConfigError
from genforge.families.vae import DECODER_TEMPERATURE_DEFAULT, VAE, VAEConfig, LearnedPrior, gaussian_kl_per_dim

pytestmark = pytest.mark.usefixtures("one_thread")


def make_vae(num_classes=3, **config) -> VAE:
    torch.manual_seed(0)
    spec = DataSpec("image", (1, 16, 16), num_classes=num_classes,
                    class_names=[f"c{i}" for i in range(num_classes or 0)])
    return VAE(VAEConfig(**{"latent_dim": 4, "width": 8, "binarize": True, **config}), spec)


def spread(prior: LearnedPrior) -> LearnedPrior:
    """Scales and weights away from their all-equal start, so a test sees every parameter at work."""
    with torch.no_grad():
        prior.log_scales.weight.normal_(0.0, 0.4)
        prior.logits.weight.normal_(0.0, 1.0)
    return prior


def batch(n: int = 6) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return {"x": torch.rand(n, 1, 16, 16, generator=g) * 2 - 1, "y": torch.arange(n) % 3}


# ---- the decoder temperature: rendering only ----------------------------------------------------------------

def test_decoder_temperature_renders_the_tempered_mean_and_leaves_the_likelihood_alone():
    out = torch.randn(2, 1, 16, 16) * 3
    images = {t: make_vae(decoder_temperature=t).mean_image(out) for t in (1.0, 0.5, 0.0)}
    torch.testing.assert_close(images[1.0], 2 * torch.sigmoid(out) - 1)  # the plain mean, as before the option
    torch.testing.assert_close(images[0.5], 2 * torch.sigmoid(2 * out) - 1)
    assert torch.equal(images[0.0], torch.where(out > 0, 1.0, -1.0))  # the mode
    assert torch.equal(make_vae(likelihood="gaussian", decoder_temperature=0.5).mean_image(out), torch.tanh(out))
    b = batch()
    bounds = [make_vae(decoder_temperature=t).log_likelihood(b, generator=torch.Generator().manual_seed(0), samples=8)
              for t in (1.0, 0.5)]
    assert torch.equal(bounds[0], bounds[1])


# ---- the learned prior's density ----------------------------------------------------------------------------

@pytest.mark.parametrize("labels", [None, torch.tensor([2, 0, 1, 2])])
def test_mixture_log_density_matches_torch_distributions(labels):
    prior = spread(LearnedPrior(groups=3, components=5, dim=4))
    z = torch.randn(7, 4, 4)  # (samples, rows, dim): log_prob broadcasts over leading dimensions
    means, log_scales, log_weights = prior.components(labels, 4)
    reference = MixtureSameFamily(Categorical(logits=log_weights), Independent(Normal(means, log_scales.exp()), 1))
    torch.testing.assert_close(prior.log_prob(z, labels), reference.log_prob(z), rtol=1e-5, atol=1e-5)


def test_mixture_density_integrates_to_one():
    prior = spread(LearnedPrior(groups=2, components=3, dim=1))
    grid = torch.linspace(-40, 40, 200_001)
    for label in (0, 1):
        with torch.no_grad():
            density = prior.log_prob(grid[:, None], torch.full((len(grid),), label)).exp()
        assert float(torch.trapezoid(density, grid)) == pytest.approx(1.0, abs=1e-4)


def test_one_component_kl_is_the_closed_form():
    mu, logvar = torch.randn(5, 3), torch.randn(5, 3) * 0.5
    m, log_s = torch.randn(5, 3), torch.randn(5, 3) * 0.5
    expected = torch.distributions.kl_divergence(Normal(mu, (0.5 * logvar).exp()), Normal(m, log_s.exp()))
    torch.testing.assert_close(gaussian_kl_per_dim(mu, logvar, m, log_s), expected, rtol=1e-5, atol=1e-6)


def test_samples_follow_the_prior():
    """Class 1's draws have the mixture's mean and its variance (within-component plus between-component)."""
    vae = make_vae(prior_components=3)
    spread(vae.learned_prior)
    z = vae.sample_latents(40_000, torch.Generator().manual_seed(0), label=1)
    means, log_scales, log_weights = vae.learned_prior.components(torch.tensor([1]), 1)
    w = log_weights.exp()[0][:, None]
    mean = (w * means[0]).sum(0)
    var = (w * ((2 * log_scales[0]).exp() + means[0] ** 2)).sum(0) - mean**2
    torch.testing.assert_close(z.mean(0), mean, atol=0.05, rtol=0)
    torch.testing.assert_close(z.var(0), var, atol=0.1, rtol=0.05)


# ---- the ELBO and the bound with it -------------------------------------------------------------------------

def test_one_sample_bound_is_recon_plus_sampled_kl():
    vae = make_vae(prior_components=2)
    spread(vae.learned_prior)
    b = batch()
    nelbo = vae.log_likelihood(b, generator=torch.Generator().manual_seed(3), samples=1)
    with torch.no_grad():
        vae.eval()
        x = vae.data_view(b["x"])
        mu, logvar = vae.posterior(x)
        eps = torch.randn(mu.shape, generator=torch.Generator().manual_seed(3))
        z = mu + eps * (0.5 * logvar).exp()
        log_q = Independent(Normal(mu, (0.5 * logvar).exp()), 1).log_prob(z)
        expected = vae.neg_log_likelihood(vae.decoder(z), x) + log_q - vae.learned_prior.log_prob(z, b["y"])
    torch.testing.assert_close(nelbo, expected, rtol=1e-5, atol=1e-3)


@pytest.mark.parametrize("components", [1, 3])
def test_importance_bound_is_below_the_elbo_and_training_lowers_it(components):
    vae = make_vae(prior_components=components)
    b = batch()
    elbo = vae.log_likelihood(b, generator=torch.Generator().manual_seed(0), samples=1).mean()
    iwae = vae.log_likelihood(b, generator=torch.Generator().manual_seed(0), samples=64).mean()
    assert torch.isfinite(iwae) and iwae < elbo + 1.0
    opt = torch.optim.Adam(vae.parameters(), lr=1e-2)
    vae.train()
    for _ in range(15):
        (_, loss, logs), = vae.training_step(b)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert vae.learned_prior.means.weight.grad is not None  # the prior learns with the ELBO
    assert vae.log_likelihood(b, generator=torch.Generator().manual_seed(0), samples=64).mean() < iwae


# ---- configs: old runs unchanged, new runs get the option, bad values one line ------------------------------

def test_old_configs_build_the_model_they_trained():
    from genforge.api import make_config

    assert (VAEConfig().prior_components, VAEConfig().decoder_temperature) == (0, 1.0)  # a config.yaml without the keys
    old = make_vae()
    assert "prior_means.weight" in old.state_dict() and old.learned_prior is None
    assert not any(k.startswith("learned_prior") for k in old.state_dict())
    eps = torch.randn(5, 4, generator=torch.Generator().manual_seed(0))
    torch.manual_seed(0)  # the old draw order: noise, then classes
    expected = eps + old.prior_means.weight[2].detach()
    torch.testing.assert_close(old.sample_latents(5, torch.Generator().manual_seed(0), label=2), expected)
    new = make_config("vae", "digits").model  # new runs: the tempered mean, the unit-scale prior
    assert new["decoder_temperature"] == DECODER_TEMPERATURE_DEFAULT == 0.5 and new.get("prior_components", 0) == 0
    unconditional = make_vae(num_classes=None, prior_components=2)
    assert unconditional.learned_prior.means.weight.shape == (1, 2 * 4)


@pytest.mark.parametrize("config, match", [({"prior_components": -1}, "prior_components"),
                                           ({"decoder_temperature": -0.5}, "decoder_temperature"),
                                           ({"prior_components": 1.5}, "prior_components"),
                                           ({"prior_components": 2, "free_bits": 0.5}, "free_bits")])
def test_bad_prior_configs_raise_one_line(config, match):
    with pytest.raises(ConfigError, match=match) as info:
        make_vae(**config)
    assert "\n" not in str(info.value)


def test_free_bits_work_with_one_learned_component():
    vae = make_vae(prior_components=1, free_bits=0.5)
    (_, loss, _), = vae.training_step(batch())
    assert torch.isfinite(loss)


def test_options_from_the_command_line(tmp_path):
    from clitools import invoke

    import genforge

    run = tmp_path / "run"
    invoke("train", "--family", "vae", "--data", "digits", "--out", run, "--steps", "2", "--quiet",
           "--set", "model.prior_components=2", "--set", "model.decoder_temperature=0.25", "--set", "model.width=8",
           "--set", "model.iwae_samples=4")
    model = genforge.load(run, device="cpu")
    assert (model.family.config.prior_components, model.family.config.decoder_temperature) == (2, 0.25)
    prior = model.family.learned_prior
    assert prior.logits.weight.shape == (10, 2)
    images = model.sample(3, seed=0)
    assert images.shape[0] == 3 and torch.equal(images, model.sample(3, seed=0))
