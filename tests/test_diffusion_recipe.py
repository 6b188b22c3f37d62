"""The small-budget diffusion recipe: EDM's preconditioning and log-normal noise levels, and the power-function
EMA, each checked against what the maths says."""

from __future__ import annotations

import math

import pytest
import torch

from genforge.data.spec import DataSpec
from genforge.families.diffusion import Diffusion, DiffusionConfig, edm_scales, prediction_target, to_x0
from genforge.sampling.schedules import sigma_to_timestep, sigmas_from_alphas_cumprod
from genforge.train.ema import EMA

pytestmark = pytest.mark.usefixtures("one_thread")

SPEC = DataSpec("image", (1, 8, 8))


def tiny(**overrides) -> Diffusion:
    values = {"base_channels": 8, "channel_mults": [1, 2], "attention_resolutions": [4], "timesteps": 100,
              "sample_steps": 5}
    torch.manual_seed(0)
    return Diffusion(DiffusionConfig(**{**values, **overrides}), SPEC)


@pytest.mark.parametrize("sigma_data", [0.25, 0.5, 1.0])
def test_edm_target_has_unit_variance_at_every_noise_level(sigma_data):
    # F's target is linear in (x0, eps): a x0 + b eps, so for x0 ~ N(0, sigma_data^2) its variance is exactly
    # a^2 sigma_data^2 + b^2, which EDM's c_skip and c_out make 1 at every level
    abar = torch.logspace(-5, -0.0001, 50, dtype=torch.float64).view(-1, 1)
    one, zero = torch.ones_like(abar), torch.zeros_like(abar)
    a = prediction_target("edm", one, zero, abar, sigma_data)
    b = prediction_target("edm", zero, one, abar, sigma_data)
    torch.testing.assert_close(a**2 * sigma_data**2 + b**2, one, rtol=1e-9, atol=0)


def test_edm_output_zero_is_the_wiener_filter_of_the_input():
    # with F = 0 the estimate is c_skip x: the best linear guess of x0 ~ N(0, s^2) from x = x0 + sigma eps
    abar = torch.tensor([[0.9], [0.5], [0.01]], dtype=torch.float64)
    x_t = torch.randn(3, 4, dtype=torch.float64)
    sigma2 = (1 - abar) / abar
    wiener = 0.25 / (sigma2 + 0.25) * x_t / abar.sqrt()
    torch.testing.assert_close(to_x0("edm", torch.zeros_like(x_t), x_t, abar, 0.5), wiener)
    c_skip, c_out = edm_scales(abar, 0.5)
    torch.testing.assert_close(c_skip**2 * sigma2 + (1 - c_skip) ** 2 * 0.25, c_out**2)  # its error is c_out^2


def test_lognormal_levels_follow_their_law_and_map_to_float_timesteps():
    model = tiny(timesteps=1000, noise_sampling="lognormal", noise_mean=-1.2, noise_std=1.2)
    torch.manual_seed(1)
    t, abar = model.training_levels(20_000, torch.device("cpu"))
    log_sigma = 0.5 * torch.log((1 - abar) / abar)
    # clamped only beyond the schedule's range (sigma 0.01 .. 157): about 0.1% of draws at the low end
    assert abs(log_sigma.mean().item() + 1.2) < 0.03 and abs(log_sigma.std().item() - 1.2) < 0.03
    assert t.dtype == torch.float32 and not torch.equal(t, t.round())
    # the float timestep is the one the samplers give the same sigma (up to float32 rounding of abar)
    torch.testing.assert_close(t, sigma_to_timestep(log_sigma.exp(), model.alphas_cumprod), atol=2e-3, rtol=0)
    grid = sigmas_from_alphas_cumprod(model.alphas_cumprod.double())
    assert log_sigma.min() >= grid.min().log() - 1e-4 and log_sigma.max() <= grid.max().log() + 1e-4
    uniform = tiny(timesteps=1000)
    t, abar = uniform.training_levels(64, torch.device("cpu"))
    assert t.dtype == torch.long and torch.equal(abar, uniform.alphas_cumprod[t])


def test_edm_with_lognormal_levels_overfits_a_tiny_batch():
    model = tiny(prediction="edm", noise_sampling="lognormal")
    batch = {"x": (torch.rand(8, 1, 8, 8, generator=torch.Generator().manual_seed(3)) > 0.5).float() * 2 - 1}
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)

    def loss() -> float:
        with torch.random.fork_rng(), torch.no_grad():
            torch.manual_seed(1234)
            return sum(next(model.training_step(batch))[1].item() for _ in range(16)) / 16

    before = loss()
    for _ in range(150):
        (_, value, _), = model.training_step(batch)
        value.backward()
        opt.step()
        opt.zero_grad()
    after = loss()
    assert math.isfinite(after) and after < 0.6 * before, (before, after)


def test_power_ema_follows_its_recursion_and_averages_a_share_of_the_run():
    model = torch.nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        model.weight.fill_(0.0)
    ema = EMA(model, decay=0.999, gamma=1.0)
    assert ema.decay_at(1) == 0.0  # the first update takes the live weights: nothing of the initialisation
    values = torch.arange(1, 201, dtype=torch.float64)
    for v in values:
        with torch.no_grad():
            model.weight.fill_(float(v))
        ema.update(model)
    # gamma = 1: decay (1 - 1/n)^2 gives update i the weight (1 - (i-1)^2 / i^2) i^2 / n^2 = (2i - 1) / n^2 (the
    # product telescopes), a weight growing with i as i^gamma does; the average of the values 1..n is then
    # sum(i (2i - 1)) / n^2 = (n + 1)(4n - 1) / (6n)
    n = 200
    assert ema.shadow.weight.item() == pytest.approx((n + 1) * (4 * n - 1) / (6 * n), rel=1e-6)
    decays = [ema.decay_at(n) for n in range(1, 10_000)]
    assert all(a <= b for a, b in zip(decays, decays[1:])) and max(decays) == 0.999


def test_new_runs_train_the_edm_way_and_old_configs_load_unchanged():
    from genforge.api import make_config

    config = make_config("diffusion", "mnist")
    assert (config.model["prediction"], config.model["noise_sampling"]) == ("edm", "lognormal")
    assert make_config("diffusion", "mnist", overrides=["model.prediction=eps"]).model["prediction"] == "eps"
    old = DiffusionConfig()  # a saved config without the keys: what it trained with then
    assert (old.prediction, old.noise_sampling) == ("eps", "uniform")
