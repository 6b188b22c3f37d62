"""Diffusion family options: prediction targets, min-SNR weights, class conditioning and guidance,
img2img, inpainting and the likelihood bound, each checked against what the maths says."""

from __future__ import annotations

import math

import pytest
import torch

from genforge.data.spec import DataSpec
from genforge.errors import ConfigError
from genforge.families.diffusion import (
    PREDICTIONS,
    Diffusion,
    DiffusionConfig,
    discretised_gaussian_nll,
    loss_weights,
    prediction_target,
    to_eps,
    to_x0,
)
from genforge.sampling.schedules import sigma_to_timestep

pytestmark = pytest.mark.usefixtures("one_thread")

SPEC = DataSpec("image", (1, 8, 8), num_classes=3, class_names=["a", "b", "c"])


def tiny(seed: int = 0, spec: DataSpec = SPEC, **overrides) -> Diffusion:
    values = {"base_channels": 8, "channel_mults": [1, 2], "attention_resolutions": [4], "timesteps": 100,
              "sample_steps": 5, "class_conditional": True}
    values.update(overrides)
    torch.manual_seed(seed)
    model = Diffusion(DiffusionConfig(**values), spec)
    for p in model.parameters():  # zero-initialised branches would make the net ignore its inputs
        if p.ndim > 1 and not p.detach().any():
            torch.nn.init.normal_(p, std=0.1)
    return model


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# --- parametrisation ---------------------------------------------------------------------------


@pytest.mark.parametrize("kind", PREDICTIONS)
def test_prediction_targets_convert_back_to_the_clean_image_and_the_noise(kind):
    g = gen(1)
    x0, eps = torch.randn(6, 1, 4, 4, generator=g, dtype=torch.float64), torch.randn(6, 1, 4, 4, generator=g, dtype=torch.float64)
    abar = torch.rand(6, 1, 1, 1, generator=g, dtype=torch.float64) * 0.98 + 0.01
    x_t = abar.sqrt() * x0 + (1 - abar).sqrt() * eps
    target = prediction_target(kind, x0, eps, abar)
    assert torch.allclose(to_x0(kind, target, x_t, abar), x0, atol=1e-10)
    assert torch.allclose(to_eps(kind, target, x_t, abar), eps, atol=1e-10)


@pytest.mark.parametrize("kind", PREDICTIONS)
def test_min_snr_weights_make_every_prediction_an_x0_regression_capped_at_gamma(kind):
    # weight * |out - target|^2 == min(snr, gamma) * |x0_hat - x0|^2 for any network output
    g = gen(2)
    config = DiffusionConfig(prediction=kind, loss_weighting="min_snr", min_snr_gamma=5.0)
    x0, eps, out = (torch.randn(8, 1, 3, 3, generator=g, dtype=torch.float64) for _ in range(3))
    abar = torch.linspace(0.02, 0.999, 8, dtype=torch.float64).view(-1, 1, 1, 1)
    x_t = abar.sqrt() * x0 + (1 - abar).sqrt() * eps
    snr = (abar / (1 - abar)).flatten()
    weighted = loss_weights(config, snr) * (out - prediction_target(kind, x0, eps, abar)).pow(2).flatten(1).sum(1)
    x0_error = (to_x0(kind, out, x_t, abar) - x0).pow(2).flatten(1).sum(1)
    assert torch.allclose(weighted, snr.clamp(max=5.0) * x0_error, rtol=1e-9)
    assert torch.equal(loss_weights(DiffusionConfig(prediction=kind), snr), torch.ones_like(snr))


def fixed_loss(model: Diffusion, batch: dict) -> float:
    """The training loss averaged over the same 16 draws of timesteps and noise each time it is called."""
    with torch.random.fork_rng(), torch.no_grad():
        torch.manual_seed(1234)
        return sum(next(model.training_step(batch))[1].item() for _ in range(16)) / 16


# eps: test_diffusion.py's overfit test; its weights: exact above. x0 needs fewer steps (150: 0.12 of the loss)
@pytest.mark.parametrize("kind, steps", [("v", 300), ("x0", 150)])
def test_each_prediction_target_with_min_snr_overfits_a_tiny_batch(kind, steps):
    torch.manual_seed(0)
    model = Diffusion(DiffusionConfig(base_channels=8, channel_mults=[1, 2], attention_resolutions=[4], timesteps=100,
                                      sample_steps=5, prediction=kind, loss_weighting="min_snr"), SPEC)
    batch = {"x": (torch.rand(8, 1, 8, 8, generator=gen(3)) > 0.5).float() * 2 - 1}
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    before = fixed_loss(model, batch)
    for _ in range(steps):  # v is the slowest of the three for this tiny net: 0.18 -> 0.10
        (_, loss, _), = model.training_step(batch)
        loss.backward()
        opt.step()
        opt.zero_grad()
    after = fixed_loss(model, batch)
    assert math.isfinite(after) and after < 0.6 * before, (before, after)


def test_config_values_are_checked():
    for bad, match in [({"prediction": "score"}, "prediction 'score'"), ({"loss_weighting": "p2"}, "loss_weighting"),
                       ({"sampler": "lms"}, "sampler 'lms'"), ({"spacing": "log"}, "spacing 'log'"),
                       ({"label_dropout": 1.0}, "label_dropout"), ({"guidance": -1.0}, "guidance"),
                       ({"resample": 0}, "resample"), ({"min_snr_gamma": 0.0}, "min_snr_gamma")]:
        with pytest.raises(ConfigError, match=match):
            tiny(**bad)


# --- conditioning and guidance -----------------------------------------------------------------


def test_label_dropout_replaces_that_share_of_labels_by_the_null_class():
    model = tiny(label_dropout=0.3)
    seen = []
    net = model.net
    model.net = lambda x_t, t, labels: (seen.append(labels), net(x_t, t, labels))[1]
    y = torch.randint(0, 3, (2000,))
    torch.manual_seed(0)
    next(model.training_step({"x": torch.zeros(2000, 1, 8, 8), "y": y}))
    labels = seen[0]
    dropped = labels == 3
    assert abs(dropped.float().mean().item() - 0.3) < 0.04
    assert torch.equal(labels[~dropped], y[~dropped])


def test_guidance_mixes_conditional_and_unconditional_estimates_in_one_batch():
    model = tiny(prediction="x0").eval()
    x = torch.randn(4, 1, 8, 8, generator=gen(4)) * 0.3
    sigma = torch.full((4,), 0.5)
    labels = torch.tensor([0, 1, 2, 1])
    abar = 1 / (1 + sigma**2)
    x_t = x * abar.sqrt().view(-1, 1, 1, 1)
    t = sigma_to_timestep(sigma, model.alphas_cumprod)
    with torch.no_grad():
        cond = model.net(x_t, t, labels)
        uncond = model.net(x_t, t, torch.full_like(labels, 3))
        for w in (0.0, 1.0, 2.5):
            expected = (uncond + w * (cond - uncond)).clamp(-1, 1)
            assert torch.allclose(model.denoiser(labels, w)(x, sigma), expected, atol=1e-5), w


def test_guidance_zero_is_the_unconditional_model_and_one_the_conditional():
    model = tiny()

    def draw(**kw):
        return model.sample(3, generator=gen(5), **kw)

    # guidance 0 ignores the label: the unconditional model
    assert torch.equal(draw(label=0, guidance=0.0), draw(label=2, guidance=0.0))
    assert not torch.equal(draw(label=0, guidance=1.0), draw(label=2, guidance=1.0))
    assert not torch.equal(draw(label=1, guidance=1.0), draw(label=1, guidance=3.0))
    assert torch.equal(draw(label="b"), draw(label=1))  # class names work, guidance defaults to 1
    with pytest.raises(ConfigError, match="unknown label"):
        draw(label="z")


def test_unconditional_runs_and_old_configs_have_no_label_embedding():
    model = tiny(class_conditional=False)
    assert not hasattr(model, "label_embedding")
    assert not any(k.startswith("label_embedding") for k in model.state_dict())
    assert DiffusionConfig().class_conditional is False  # runs made before conditioning load unchanged


# --- img2img and inpainting --------------------------------------------------------------------


def test_img2img_strength_zero_returns_the_input_and_one_equals_sampling():
    model = tiny()
    image = torch.rand(2, 1, 8, 8, generator=gen(6)) * 2 - 1
    assert torch.equal(model.img2img(image, 0.0, generator=gen(7)), image)
    full = model.img2img(image, 1.0, generator=gen(7), label=1)
    assert torch.equal(full, model.sample(2, generator=gen(7), label=1))
    assert torch.equal(full, model.img2img(-image, 1.0, generator=gen(7), label=1))  # the input is ignored
    # in between, the output stays closer to the input the lower the strength (averaged over seeds)
    errors = [sum((model.img2img(image, s, generator=gen(k), steps=10) - image).pow(2).mean().item() for k in range(4))
              for s in (0.2, 0.6, 1.0)]
    assert errors[0] < errors[1] < errors[2], errors
    with pytest.raises(ConfigError, match="strength"):
        model.img2img(image, 1.5)
    with pytest.raises(ConfigError, match=r"expected images shaped \(B, 1, 8, 8\)"):
        model.img2img(torch.zeros(1, 3, 8, 8), 0.5)


@pytest.mark.parametrize("sampler", ["ddpm", "ddim", "euler", "heun", "dpmpp_2m"])
def test_inpainting_keeps_the_known_pixels_exactly(sampler):
    model = tiny()
    image = torch.rand(2, 1, 8, 8, generator=gen(8)) * 2 - 1
    mask = torch.zeros(1, 1, 8, 8)
    mask[..., 2:6, 2:6] = 1
    out = model.inpaint(image, mask, generator=gen(9), sampler=sampler, steps=4, label=0)
    keep = mask.expand_as(image) == 0
    assert torch.equal(out[keep], image[keep])
    assert not torch.allclose(out[~keep], image[~keep])
    assert out.min() >= -1 and out.max() <= 1
    assert torch.equal(out, model.inpaint(image, mask, generator=gen(9), sampler=sampler, steps=4, label=0))


def test_inpainting_resampling_and_bad_masks():
    model = tiny()
    image = torch.zeros(1, 1, 8, 8)
    mask = torch.ones(1, 1, 8, 8)
    once = model.inpaint(image, mask, generator=gen(1), resample=1)
    assert not torch.equal(once, model.inpaint(image, mask, generator=gen(1), resample=3))
    with pytest.raises(ConfigError, match="mask must be shaped"):
        model.inpaint(image, torch.ones(1, 1, 4, 4))
    with pytest.raises(ConfigError, match="resample"):
        model.inpaint(image, mask, resample=0)


# --- likelihood --------------------------------------------------------------------------------


def test_discretised_gaussian_gives_a_distribution_over_the_256_levels():
    levels = torch.arange(256, dtype=torch.float64) / 127.5 - 1
    for mean, log_std in [(0.0, -3.0), (0.7, -1.0), (-1.2, 0.5), (0.3, -6.0)]:
        nll = discretised_gaussian_nll(levels, torch.full_like(levels, mean), torch.tensor(log_std, dtype=torch.float64))
        assert torch.exp(-nll).sum().item() == pytest.approx(1.0, abs=1e-9)


def test_kl_terms_match_torch_distributions():
    # the bound's middle term for one timestep equals KL(q(x_{t-1} | x_t, x) || p(x_{t-1} | x_t))
    model = tiny(class_conditional=False).eval()
    x = torch.rand(3, 1, 8, 8, generator=gen(2)) * 2 - 1
    t = torch.tensor([5, 40, 99])
    abar = model.alphas_cumprod.double()
    noise = torch.randn(x.shape, generator=gen(11))
    a_t, a_prev = abar[t].view(-1, 1, 1, 1), abar[t - 1].view(-1, 1, 1, 1)
    x_t = (a_t.sqrt() * x + (1 - a_t).sqrt() * noise).float()
    with torch.no_grad():
        x0_hat = to_x0("eps", model.net(x_t, t, None).float(), x_t, a_t.float()).clamp(-1, 1).double()
    beta = 1 - a_t / a_prev
    var = (1 - a_prev) / (1 - a_t) * beta

    def mean(clean):
        return a_prev.sqrt() * beta / (1 - a_t) * clean + (1 - beta).sqrt() * (1 - a_prev) / (1 - a_t) * x_t.double()

    q = torch.distributions.Normal(mean(x.double()), var.sqrt())
    p = torch.distributions.Normal(mean(x0_hat), var.sqrt())
    expected = torch.distributions.kl_divergence(q, p).flatten(1).sum(1)
    got = model._kl_term(x, t, None, gen(11))  # the same noise draw
    assert torch.allclose(got, expected, rtol=1e-4)


def test_likelihood_estimate_is_unbiased_across_stratifications():
    model = tiny(class_conditional=False, timesteps=20)
    x = torch.rand(64, 1, 8, 8, generator=gen(3)).mul(255).round().div(127.5).sub(1)
    full = torch.stack([model.log_likelihood({"x": x}, generator=gen(s), samples=19) for s in range(6)])
    coarse = torch.stack([model.log_likelihood({"x": x}, generator=gen(100 + s), samples=2) for s in range(6)])
    f, c = full.mean(), coarse.mean()
    se = math.sqrt(full.var().item() / full.numel() + coarse.var().item() / coarse.numel())
    assert abs(f - c) < 4 * se + 1e-6, (f.item(), c.item(), se)
    assert (full > 0).all()


def test_after_training_the_bound_prefers_the_training_images_and_labels_condition_it():
    model = tiny(timesteps=50)
    x = (torch.rand(16, 1, 8, 8, generator=gen(4)) > 0.5).float() * 2 - 1
    other = (torch.rand(16, 1, 8, 8, generator=gen(40)) > 0.5).float() * 2 - 1  # same kind of image, not seen
    y = torch.randint(0, 3, (16,), generator=gen(5))

    def nats(images, **batch):
        return model.log_likelihood({"x": images, **batch}, generator=gen(0), samples=49).mean().item()

    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for _ in range(150):
        (_, loss, _), = model.training_step({"x": x, "y": y})
        loss.backward()
        opt.step()
        opt.zero_grad()
    seen, unseen = nats(x, y=y), nats(other, y=y)
    assert seen < 0.92 * unseen, (seen, unseen)  # measured: 365 vs 417 nats
    unconditional = nats(x)  # no labels: the null label's model
    assert math.isfinite(unconditional) and unconditional != seen
