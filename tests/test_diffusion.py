"""Diffusion family: UNet shapes, schedule and DDIM maths, seeded sampling, and that training learns."""

from __future__ import annotations

import math

import pytest
import torch

from genforge.data.spec import DataSpec
from genforge.errors import ConfigError
from genforge.families.diffusion import Diffusion, DiffusionConfig
from genforge.nets.embeddings import TimestepEmbedding, sinusoidal_embedding
from genforge.nets.unet import SelfAttention, UNet
from genforge.sampling.schedules import (
    alphas_cumprod_from_sigmas,
    make_alphas_cumprod,
    sigmas_from_alphas_cumprod,
)


pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_config(**overrides) -> DiffusionConfig:
    values = {"base_channels": 8, "channel_mults": [1, 2], "attention_resolutions": [4], "timesteps": 100}
    values["sample_steps"] = 10
    values.update(overrides)
    return DiffusionConfig(**values)


def tiny_model(seed: int = 0, **overrides) -> Diffusion:
    torch.manual_seed(seed)
    model = Diffusion(tiny_config(**overrides), DataSpec("image", (1, 8, 8)))
    randomize_zero_init(model)
    return model


def randomize_zero_init(net: torch.nn.Module) -> None:
    # residual branches and the output conv start at zero, so an untrained net ignores x, t and cond;
    # give them weights so that outputs depend on every input
    for p in net.parameters():
        if p.ndim > 1 and not p.detach().any():
            torch.nn.init.normal_(p, std=0.1)


# --- network -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "shape, mults, attention",
    [((1, 28, 28), (1, 2, 2), (7,)), ((1, 8, 8), (1, 2, 2), (4,)), ((3, 32, 32), (1, 2, 2, 2), (8, 16))],
)
def test_unet_output_matches_input_shape(shape, mults, attention):
    c, h, w = shape
    net = UNet(c, (h, w), base_channels=8, channel_mults=mults, attention_resolutions=attention, dropout=0.1)
    x = torch.randn(2, c, h, w)
    out = net(x, torch.tensor([0, 999]))
    assert out.shape == x.shape
    assert torch.isfinite(out).all()


def test_unet_attention_blocks_are_placed_at_the_requested_resolution():
    net = UNet(1, (28, 28), base_channels=8, channel_mults=(1, 2, 2), attention_resolutions=(7,))
    seen = []
    hooks = [
        m.register_forward_hook(lambda mod, inp, out: seen.append(tuple(out.shape[-2:])))
        for m in net.modules()
        if isinstance(m, SelfAttention)
    ]
    net(torch.randn(1, 1, 28, 28), torch.tensor([5]))
    for h in hooks:
        h.remove()
    # one in the down level, one in the middle, two in the up level (blocks_per_level + 1)
    assert seen == [(7, 7)] * 4


def test_unet_conditioning_embedding_changes_output():
    torch.manual_seed(0)
    net = UNet(1, (8, 8), base_channels=8, channel_mults=(1, 2))
    randomize_zero_init(net)
    x, t = torch.randn(2, 1, 8, 8), torch.tensor([10, 10])
    cond = torch.randn(2, net.emb_dim)
    assert not torch.allclose(net(x, t), net(x, t, cond))


def test_unet_rejects_sizes_it_cannot_halve():
    with pytest.raises(ConfigError, match=r"28x28 cannot be halved 3 times.*at most 3 entries"):
        UNet(1, (28, 28), channel_mults=(1, 2, 2, 2))
    with pytest.raises(ConfigError, match="channel_mults"):
        UNet(1, (28, 28), channel_mults=())
    with pytest.raises(ConfigError, match="dropout"):
        UNet(1, (28, 28), dropout=1.5)


def test_family_rejects_bad_config_values():
    spec = DataSpec("image", (1, 28, 28))
    with pytest.raises(ConfigError, match="halved"):
        Diffusion(DiffusionConfig(channel_mults=[1, 2, 2, 2]), spec)
    with pytest.raises(ConfigError, match="noise schedule 'quadratic'"):
        Diffusion(DiffusionConfig(schedule="quadratic"), spec)
    with pytest.raises(ConfigError, match="sampling steps"):
        Diffusion(DiffusionConfig(timesteps=100, sample_steps=500), spec)
    with pytest.raises(ConfigError, match="eta"):
        Diffusion(DiffusionConfig(eta=2.0), spec)
    with pytest.raises(ConfigError, match="does not handle text"):
        Diffusion(DiffusionConfig(), DataSpec("text", (16,), vocab_size=10))


def test_sinusoidal_embedding_shapes_and_range():
    t = torch.tensor([0, 1, 500, 999])
    for dim in (8, 9):
        emb = sinusoidal_embedding(t, dim)
        assert emb.shape == (4, dim) and emb.dtype == torch.float32
        assert emb.abs().max() <= 1.0
    # continuous inputs (e.g. log-sigma) work too, and distinct inputs give distinct features
    emb = sinusoidal_embedding(torch.tensor([0.25, 0.5]), 16)
    assert not torch.allclose(emb[0], emb[1])
    assert TimestepEmbedding(16, 32)(t).shape == (4, 32)


# --- schedules ---------------------------------------------------------------------------------


def test_linear_schedule_matches_ddpm():
    abar = make_alphas_cumprod("linear", 1000)
    assert abar.dtype == torch.float64 and abar.shape == (1000,)
    assert abar[0] == pytest.approx(1 - 1e-4)
    # product of (1 - beta) with betas linear from 1e-4 to 0.02: about 4e-5 at the end
    assert abar[-1] == pytest.approx(4.04e-5, rel=0.02)
    assert (abar[1:] < abar[:-1]).all()


def test_cosine_schedule_and_sigma_view_round_trip():
    abar = make_alphas_cumprod("cosine", 1000)
    assert (abar[1:] < abar[:-1]).all() and 0 < abar[-1] < 1e-3 and abar[0] > 0.999
    sigmas = sigmas_from_alphas_cumprod(abar)
    assert (sigmas[1:] > sigmas[:-1]).all()
    assert torch.allclose(alphas_cumprod_from_sigmas(sigmas), abar)


# --- family ------------------------------------------------------------------------------------


def test_training_step_yields_one_float32_phase():
    model = tiny_model()
    phases = list(model.training_step({"x": torch.rand(4, 1, 8, 8) * 2 - 1}))
    assert len(phases) == 1
    name, loss, logs = phases[0]
    assert name == "main" and loss.dtype == torch.float32 and loss.ndim == 0 and loss.requires_grad
    assert isinstance(logs, dict)
    assert all(not (isinstance(v, torch.Tensor) and v.requires_grad) for v in logs.values())
    assert "main" in model.optimizer_groups()
    # the schedule is rebuilt from the config, not stored with the weights
    assert "alphas_cumprod" not in model.state_dict()


def test_family_overfits_a_tiny_fixed_batch():
    torch.manual_seed(0)
    model = Diffusion(tiny_config(), DataSpec("image", (1, 8, 8)))
    x = (torch.rand(8, 1, 8, 8) > 0.5).float() * 2 - 1
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(150):
        for _, loss, _ in model.training_step({"x": x}):
            loss.backward()
            opt.step()
            opt.zero_grad()
            losses.append(loss.item())
    first, last = sum(losses[:20]) / 20, sum(losses[-20:]) / 20
    assert math.isfinite(last)
    assert last < 0.5 * first, (first, last)


def test_sampling_is_seeded_and_in_range():
    model = tiny_model()

    def draw(seed, **kw):
        return model.sample(4, generator=torch.Generator().manual_seed(seed), **kw)

    a = draw(0)
    assert a.shape == (4, 1, 8, 8) and a.dtype == torch.float32
    assert a.min() >= -1 and a.max() <= 1
    assert torch.equal(a, draw(0))
    assert not torch.equal(a, draw(1))
    assert torch.equal(draw(3, eta=0.0, steps=5), draw(3, eta=0.0, steps=5))
    assert not torch.equal(draw(3, eta=0.0, steps=5), draw(3, eta=1.0, steps=5))
    assert not torch.equal(draw(3, steps=5), draw(3, steps=7))


def test_sampling_does_not_touch_the_global_rng_and_restores_train_mode():
    model = tiny_model(dropout=0.3)
    model.train()
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    a = model.sample(2, generator=torch.Generator().manual_seed(0), eta=1.0)
    assert torch.equal(torch.rand(1), before)
    assert model.training
    assert torch.equal(a, model.sample(2, generator=torch.Generator().manual_seed(0), eta=1.0))


def test_sampling_rejects_label_and_unknown_conditions_and_bad_values():
    model = tiny_model()
    with pytest.raises(ConfigError, match="needs a class-conditional diffusion run.*no labels"):
        model.sample(2, label=3)
    with pytest.raises(ConfigError, match="does not accept temperature"):
        model.sample(2, temperature=2.0)
    with pytest.raises(ConfigError, match="unknown sampler 'plms'.*ddpm, ddim, euler, heun, dpmpp_2m"):
        model.sample(2, sampler="plms")
    with pytest.raises(ConfigError, match="spacing .log.; expected one of: trailing, uniform, karras"):
        model.sample(2, spacing="log")
    with pytest.raises(ConfigError, match="guidance"):
        model.sample(2, guidance=-1.0)
    with pytest.raises(ConfigError, match="sampling steps"):
        model.sample(2, steps=1000)
    with pytest.raises(ConfigError, match="eta"):
        model.sample(2, eta=-0.5)
    model.sample(1, label=None, steps=2)  # None means "not given"
